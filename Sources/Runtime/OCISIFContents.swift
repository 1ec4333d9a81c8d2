import Crypto
import Foundation
import OCI
import SIF

/// What `run --sif` needs from an OCI-SIF (SingularityCE's OCI image in a SIF): where each layer's squashfs lies
/// in the file, bottom first, and the image config. The root index, manifest and config are checked against the
/// digests that name them.
struct OCISIFContents {
    static let layerMediaType = "application/vnd.sylabs.image.layer.v1.squashfs"

    var layers: [(offset: Int64, size: Int64)]
    var config: ImageConfig

    /// nil when the file is a SIF without an OCI root index (a classic SIF).
    static func read(_ file: SIFFile) throws -> OCISIFContents? {
        guard let root = file.objects(ofType: .ociRootIndex).first else { return nil }
        let blobs = Dictionary(file.objects(ofType: .ociBlob).compactMap { object in object.ociDigest.map { ($0, object) } }, uniquingKeysWith: { first, _ in first })
        func document(_ object: SIFDescriptor, digest: String) throws -> Data {
            let bytes = try file.read(object)
            guard Digest(sha256: SHA256.hash(data: bytes)).description == digest else {
                throw RuntimeError.sifUnavailable("\(file.path): the OCI blob \(digest) does not match its digest")
            }
            return Data(bytes)
        }
        func blob(_ descriptor: Descriptor) throws -> SIFDescriptor {
            guard let object = blobs[descriptor.digest.description], object.size == descriptor.size else {
                throw RuntimeError.sifUnavailable("\(file.path): no OCI blob \(descriptor.digest) of \(descriptor.size) bytes")
            }
            return object
        }
        let index = try JSONDecoder().decode(Index.self, from: try document(root, digest: root.ociDigest ?? ""))
        guard let manifestDescriptor = index.manifests.first(where: { MediaType.isManifest($0.mediaType) }) else {
            throw RuntimeError.sifUnavailable("\(file.path): the OCI-SIF's index lists no image manifest")
        }
        let manifest = try JSONDecoder().decode(
            Manifest.self, from: try document(try blob(manifestDescriptor), digest: manifestDescriptor.digest.description))
        let config = try JSONDecoder().decode(
            ImageConfig.self, from: try document(try blob(manifest.config), digest: manifest.config.digest.description))
        let layers = try manifest.layers.map { layer -> (offset: Int64, size: Int64) in
            guard layer.mediaType == layerMediaType else {
                throw RuntimeError.sifUnavailable("\(file.path): layer \(layer.digest) is \(layer.mediaType), not a squashfs layer")
            }
            let object = try blob(layer)
            return (object.offset, object.size)
        }
        return OCISIFContents(layers: layers, config: config)
    }
}
