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
    /// Ask the registry which image the reference names (one HEAD, with this client's credentials, so it also
    /// proves this client may pull it) and use the store's copy when it is that image and complete.
    case newer
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
        switch policy {
        case .missing, .never:
            if let stored = await storedImage(location) { return stored }
            guard policy != .never else { throw ImageNotInStore(location: location) }
        case .newer:
            if let stored = await storedImage(location), await registryNames(stored, location) { return stored }
        case .always:
            break
        }
        return try await pullAndCacheLayers(location).0
    }

    /// Whether the registry's answer for the reference is the stored image's digest. Any failure (no HEAD support,
    /// refused, unknown) says no, and the pull that follows reports it.
    private func registryNames(_ stored: ResolvedImage, _ location: ImageLocation) async -> Bool {
        guard case .registry(let reference) = location, let named = try? store.image(named: Self.storeName(for: location)),
            let remote = try? await session.client(for: reference.registry).resolve(repository: reference.repository, reference: reference.identifier)
        else { return false }
        return remote.digest == named.digest
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
