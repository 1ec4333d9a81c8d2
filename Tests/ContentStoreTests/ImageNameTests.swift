import ContentStore
import Foundation
import OCI
import Testing
import TestSupport

/// Named images live in index.json with `org.opencontainers.image.ref.name`, as skopeo's `oci:STORE:NAME` reads them.
@Suite(.tags(.unit)) struct ImageNameTests {
    @Test func namesPointAtManifestsAndAreReplaced() throws {
        let directory = try ScratchDirectory()
        let store = try ContentStore(root: directory.path)
        let first = try writeManifest(into: store, layerSizes: [10])
        let second = try writeManifest(into: store, layerSizes: [20])
        try store.setImage(named: "app:v1", to: first)
        try store.setImage(named: "app:v2", to: first)
        #expect(try store.image(named: "app:v1")?.digest == first.digest)
        #expect(try store.image(named: "missing") == nil)

        try store.setImage(named: "app:v1", to: second)
        let images = try store.images()
        #expect(images.map(\.name).sorted() == ["app:v1", "app:v2"])
        #expect(try store.image(named: "app:v1")?.digest == second.digest)
        #expect(try store.image(named: "app:v2")?.digest == first.digest)
        #expect(images.allSatisfy { $0.descriptor.annotations?[Annotation.refName] == $0.name })

        // What other tools read: one entry per name in the layout's index.json.
        let index = try JSONDecoder().decode(Index.self, from: Data(contentsOf: URL(fileURLWithPath: directory.sub("index.json"))))
        #expect(index.manifests.count == 2)
        #expect(Set(index.manifests.compactMap { $0.annotations?[Annotation.refName] }) == ["app:v1", "app:v2"])
    }

    @Test func removingANameKeepsTheOthers() throws {
        let directory = try ScratchDirectory()
        let store = try ContentStore(root: directory.path)
        let manifest = try writeManifest(into: store, layerSizes: [1])
        try store.setImage(named: "a", to: manifest)
        try store.setImage(named: "b", to: manifest)
        #expect(try store.removeImage(named: "a"))
        #expect(try !store.removeImage(named: "a"))
        #expect(try store.images().map(\.name) == ["b"])
    }

    @Test func reopenedStoreSeesTheNames() throws {
        let directory = try ScratchDirectory()
        let manifest = try writeManifest(into: try ContentStore(root: directory.path), layerSizes: [1])
        try ContentStore(root: directory.path).setImage(named: "kept", to: manifest)
        #expect(try ContentStore(existingLayoutAt: directory.path).image(named: "kept")?.digest == manifest.digest)
    }

    @Test func existingLayoutMustHaveAnIndex() throws {
        let directory = try ScratchDirectory()
        #expect(throws: StoreError.self) { try ContentStore(existingLayoutAt: directory.path) }
    }
}

/// `listImages()`, what `slipway images` prints.
@Suite(.tags(.unit)) struct ListImagesTests {
    @Test func listingIsSortedWithLayersAndSizeFromTheManifest() throws {
        let directory = try ScratchDirectory()
        let store = try ContentStore(root: directory.path)
        let small = try writeManifest(into: store, layerSizes: [100, 23])
        let large = try writeManifest(into: store, layerSizes: [1000, 2000, 3000])
        try store.setImage(named: "zeta", to: small)
        try store.setImage(named: "alpha", to: large)
        try store.setImage(named: "mid", to: small)
        let listed = try store.listImages()
        #expect(listed.map(\.name) == ["alpha", "mid", "zeta"])
        #expect(Summary(listed[0]) == Summary("alpha", large.digest.description, 6000, 3))
        #expect(Summary(listed[1]) == Summary("mid", small.digest.description, 123, 2))
        #expect(listed[2].size == 123)
    }

    @Test func indexEntryListsNoLayers() throws {
        let directory = try ScratchDirectory()
        let store = try ContentStore(root: directory.path)
        let manifest = try writeManifest(into: store, layerSizes: [5])
        let index = Index(manifests: [manifest])
        let indexDescriptor = try store.writeBlob(Array(try JSONEncoder.canonical.encode(index)), mediaType: MediaType.ociIndex)
        try store.setImage(named: "multi", to: indexDescriptor)
        #expect(try store.listImages().map(Summary.init) == [Summary("multi", indexDescriptor.digest.description, 0, 0)])
    }

    @Test func nameWhoseManifestIsAbsentListsNoLayers() throws {
        let directory = try ScratchDirectory()
        let store = try ContentStore(root: directory.path)
        let absent = descriptor(of: bytes("a manifest never stored"), mediaType: MediaType.ociManifest)
        try store.setImage(named: "dangling", to: absent)
        #expect(try store.listImages().map(Summary.init) == [Summary("dangling", absent.digest.description, 0, 0)])
    }

    @Test func sizesThatWouldOverflowSaturate() throws {
        let directory = try ScratchDirectory()
        let store = try ContentStore(root: directory.path)
        // A layout from elsewhere can claim any sizes; the sum must not trap.
        let manifest = try writeManifest(into: store, layerSizes: [Int64.max - 10, 6, 5, 7])
        try store.setImage(named: "huge", to: manifest)
        let listed = try #require(try store.listImages().first)
        #expect(listed.size == Int64.max)
        #expect(listed.layers == 4)
    }
}

/// A manifest (stored) whose layers are descriptors of the given sizes; the layers themselves are not stored.
func writeManifest(into store: ContentStore, layerSizes: [Int64]) throws -> Descriptor {
    let config = try store.writeBlob(bytes(#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#), mediaType: MediaType.ociConfig)
    let layers = layerSizes.enumerated().map { position, size in
        Descriptor(mediaType: MediaType.ociLayerGzip, digest: .sha256(of: bytes("layer \(position) of \(size)")), size: size)
    }
    let manifest = Manifest(config: config, layers: layers)
    return try store.writeBlob(Array(try JSONEncoder.canonical.encode(manifest)), mediaType: MediaType.ociManifest)
}

/// A listing's fields, compared as a whole.
struct Summary: Equatable {
    var name: String, digest: String, size: Int64, layers: Int
    init(_ name: String, _ digest: String, _ size: Int64, _ layers: Int) { (self.name, self.digest, self.size, self.layers) = (name, digest, size, layers) }
    init(_ listing: ContentStore.ImageListing) { self.init(listing.name, listing.digest, listing.size, listing.layers) }
}
