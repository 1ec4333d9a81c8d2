import Foundation
import Testing
import TestSupport
@testable import OCI

/// Sizes in descriptors come from registries and layouts: a negative one must stop at decoding, where every
/// manifest, index and layout passes, with an error that names the field.
@Suite(.tags(.unit)) struct DescriptorValidationTests {
    static let digest = "sha256:" + String(repeating: "a", count: 64)

    static func manifest(layerSize: String) -> [UInt8] {
        Array(
            """
            {"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
             "config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"\(digest)","size":2},
             "layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"\(digest)","size":\(layerSize)}]}
            """.utf8)
    }

    @Test func negativeLayerSizeIsAMalformedManifest() throws {
        #expect {
            try ManifestDocument.decode(Self.manifest(layerSize: "-1"), contentType: nil)
        } throws: { error in
            guard case OCIError.malformedDocument(_, let reason) = error else { return false }
            return reason.contains("layers") && reason.contains("size -1 is negative")
        }
    }

    @Test func negativeSizeInAnIndexEntryIsRejected() {
        let index = Array(
            """
            {"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",
             "manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"\(Self.digest)","size":-9223372036854775808}]}
            """.utf8)
        #expect(throws: OCIError.self) { try ManifestDocument.decode(index, contentType: nil) }
    }

    @Test func negativeSizeFailsDecodingADescriptorDirectly() {
        let json = #"{"mediaType":"application/octet-stream","digest":"\#(Self.digest)","size":-5}"#
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(Descriptor.self, from: Data(json.utf8)) }
    }

    @Test(arguments: ["0", "1", "9223372036854775807"])
    func nonNegativeSizesDecode(size: String) throws {
        guard case .manifest(let manifest) = try ManifestDocument.decode(Self.manifest(layerSize: size), contentType: nil) else {
            Issue.record("not a manifest")
            return
        }
        #expect(manifest.layers[0].size == Int64(size))
    }

    @Test func descriptorsRoundTripWithTheirOptionalFields() throws {
        let descriptor = Descriptor(
            mediaType: "application/octet-stream", digest: try Digest(Self.digest), size: 7, urls: ["https://example/x"],
            annotations: ["a": "b"], platform: Platform(os: "linux", architecture: "amd64"), artifactType: "t")
        let decoded = try JSONDecoder().decode(Descriptor.self, from: try JSONEncoder.canonical.encode(descriptor))
        #expect(decoded == descriptor)
    }
}
