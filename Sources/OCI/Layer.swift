/// A blob's bytes wherever they are (a registry, an OCI layout or the store, a conversion's staged files): what a
/// feature that moves or serves blobs takes, whatever their origin.
public protocol Blob: Sendable {
    /// The blob, as the manifest that names it lists it.
    var descriptor: Descriptor { get }
    /// A file on this machine holding the verified blob, when there is one: read in place, nothing transferred.
    var localFile: String? { get }
    /// Streams the blob into `sink`, from `sink.count` on (a resumed download). Whoever trusts the bytes checks
    /// the sink's digest against `descriptor`; the sink's `append` paces the transfer.
    func fetch(into sink: any BlobSink) async throws
    /// Byte ranges of the blob, unverified: for formats that verify their own parts (eStargz TOCs), and for
    /// passing ranges through to a client that verifies the whole.
    func read(ranges: [Range<Int64>]) async throws -> [[UInt8]]
}

/// One layer of an image, whatever the image's origin: what every feature that reads layers takes, so each
/// composes with every source.
public protocol Layer: Blob {
    /// The digest of the uncompressed tar, as the image config promises it.
    var diffID: Digest { get }
}

/// One platform's image from any origin: its manifest and config, verified, and its layers in order.
public protocol Image: Sendable {
    /// What the user named, for messages.
    var name: String { get }
    var manifestDescriptor: Descriptor { get }
    var manifest: Manifest { get }
    var config: ImageConfig { get }
    var layers: [any Layer] { get }
}
