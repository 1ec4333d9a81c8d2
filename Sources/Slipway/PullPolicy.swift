import ContentStore
import Images
import OCI

/// Whether an operation that needs an image in the store asks the registry for it, as podman's `--pull`.
public enum PullPolicy: String, Sendable, CaseIterable {
    /// Ask the registry first, every time.
    case always
    /// Use the store's copy when it has the whole image; pull otherwise.
    case missing
    /// Use the store's copy only; fail when it lacks the image or any layer.
    case never
}

public struct ImageNotInStore: Error, CustomStringConvertible {
    public var location: ImageLocation
    public var description: String {
        "\(location) is not in the store (or lacks layers) and --pull never forbids fetching it"
    }
}

extension Puller {
    /// The image by `policy`, with every layer in the store: the store's copy when allowed and complete (a node
    /// that ran the image before needs no registry), otherwise pulled with each layer extracted into the layer
    /// cache as it lands.
    public func image(_ location: ImageLocation, policy: PullPolicy) async throws -> ResolvedImage {
        if policy != .always, let stored = await storedImage(location) { return stored }
        guard policy != .never else { throw ImageNotInStore(location: location) }
        return try await pullAndCacheLayers(location).0
    }

    /// The image under its name in the store, when every layer is there (extracted, or as a blob).
    public func storedImage(_ location: ImageLocation) async -> ResolvedImage? {
        let name = Self.storeName(for: location)
        guard (try? store.image(named: name)) != nil,
            let image = try? await LayoutImageSource(store: store, imageName: name).resolve(platform: session.options.platform),
            image.layers.allSatisfy({ store.hasLayerDirectory($0.diffID) || store.hasBlob($0.descriptor) })
        else { return nil }
        return image
    }
}
