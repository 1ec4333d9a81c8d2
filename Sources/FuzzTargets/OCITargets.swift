import Foundation
import OCI

enum OCITargets {
    /// The content types a registry may send with a manifest; nil is a layout or store without one.
    private static let contentTypes: [String?] = [nil, "application/json", MediaType.ociManifest, MediaType.dockerManifestList]

    /// A manifest or index through `ManifestDocument.decode`, the path every fetched or stored document takes,
    /// and a bare descriptor. What decodes must decode to the same value after canonical re-encoding.
    static func manifest(_ input: [UInt8]) {
        for contentType in contentTypes {
            guard let document = try? ManifestDocument.decode(input, contentType: contentType) else { continue }
            switch document {
            case .manifest(let manifest):
                let again = try? ManifestDocument.decode(encoded(manifest), contentType: contentType)
                guard case .manifest(let reparsed) = again, reparsed == manifest else {
                    preconditionFailure("manifest: not the same manifest after re-encoding")
                }
            case .index(let index):
                let again = try? ManifestDocument.decode(encoded(index), contentType: contentType)
                guard case .index(let reparsed) = again, reparsed == index else {
                    preconditionFailure("manifest: not the same index after re-encoding")
                }
            }
        }
        if let descriptor = try? JSONDecoder().decode(Descriptor.self, from: Data(input)) {
            precondition((try? JSONDecoder().decode(Descriptor.self, from: Data(encoded(descriptor)))) == descriptor,
                "manifest: not the same descriptor after re-encoding")
        }
    }

    /// An image config as the puller and the runtime decode it.
    static func imageConfig(_ input: [UInt8]) {
        if let config = try? JSONDecoder().decode(ImageConfig.self, from: Data(input)) {
            precondition((try? JSONDecoder().decode(ImageConfig.self, from: Data(encoded(config)))) == config,
                "image-config: not the same config after re-encoding")
        }
        _ = try? JSONDecoder().decode(ImageConfig.ContainerConfig.self, from: Data(input))
    }

    /// An image reference as the CLI and the cache server parse it. A parsed reference prints as a reference that
    /// parses to itself.
    static func reference(_ input: [UInt8]) {
        let string = text(input)
        if let reference = try? Reference(parsing: string) {
            let reparsed = try? Reference(parsing: reference.description)
            precondition(reparsed == reference, "reference: '\(string)' printed as '\(reference)', which parses to \(reparsed.map(String.init(describing:)) ?? "an error")")
        }
        if let location = try? ImageLocation(parsing: string) {
            precondition((try? ImageLocation(parsing: location.description)) == location, "reference: location '\(location)' does not re-parse")
        }
    }

    private static func encoded(_ value: some Encodable) -> [UInt8] {
        (try? Array(JSONEncoder.canonical.encode(value))) ?? []
    }
}
