import OCI

extension ContentStore {
    /// A named image and what its manifest says of its layers (nothing for an index, or a manifest the store lacks).
    public struct ImageListing: Sendable, Codable, Equatable {
        public var name: String
        public var digest: String
        public var size: Int64
        public var layers: Int
    }

    /// The store's named images, by name, for `slipway images`. Sizes come from manifests, which may come from any
    /// layout: their sum saturates rather than trapping.
    public func listImages() throws -> [ImageListing] {
        try images().map { image in
            var listing = ImageListing(name: image.name, digest: image.descriptor.digest.description, size: 0, layers: 0)
            if let bytes = try? readBlob(image.descriptor.digest),
                case .manifest(let manifest) = try? ManifestDocument.decode(bytes, contentType: image.descriptor.mediaType)
            {
                listing.layers = manifest.layers.count
                listing.size = manifest.layers.reduce(Int64(0)) { total, layer in
                    let (sum, overflow) = total.addingReportingOverflow(layer.size)
                    return overflow ? .max : sum
                }
            }
            return listing
        }
        .sorted { $0.name < $1.name }
    }
}
