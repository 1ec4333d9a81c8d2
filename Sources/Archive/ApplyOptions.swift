#if canImport(Glibc)
import Glibc
#endif

/// How whiteout entries (`.wh.NAME`, `.wh..wh..opq`) are treated.
public enum WhiteoutMode: Sendable {
    /// Flat rootfs: `.wh.NAME` deletes NAME (lower content already in the root), `.wh..wh..opq` empties
    /// the directory of content from earlier layers. Whiteout files themselves are not written.
    case apply
    /// Per-layer directory for kernel overlayfs: `.wh.NAME` becomes a 0/0 character device and
    /// `.wh..wh..opq` sets `trusted.overlay.opaque=y` on the directory when running as root;
    /// otherwise the marker files are kept as they are.
    case overlay
}

public struct ApplyOptions: Sendable {
    public var whiteouts: WhiteoutMode
    /// Apply the archive's uid/gid (default: running as root).
    public var preserveOwnership: Bool
    /// Create character/block devices (default: running as root). When false they are skipped and
    /// noted in `ApplyResult.skipped`, never an error. FIFOs are always created.
    public var allowDeviceNodes: Bool

    public init(
        whiteouts: WhiteoutMode = .apply,
        preserveOwnership: Bool = geteuid() == 0,
        allowDeviceNodes: Bool = geteuid() == 0
    ) {
        self.whiteouts = whiteouts
        self.preserveOwnership = preserveOwnership
        self.allowDeviceNodes = allowDeviceNodes
    }
}

public struct ApplyResult: Sendable {
    /// `sha256:<hex>` of the uncompressed tar stream (the layer's diffID).
    public var diffID: String
    /// Size of the uncompressed tar stream.
    public var uncompressedSize: Int64
    /// Number of tar entries processed (including whiteouts, excluding PAX/GNU metadata records).
    public var entries: Int
    /// Human-readable notes about things that were skipped (device nodes, unsupported xattrs...).
    public var skipped: [String]

    public init(diffID: String, uncompressedSize: Int64, entries: Int, skipped: [String]) {
        self.diffID = diffID
        self.uncompressedSize = uncompressedSize
        self.entries = entries
        self.skipped = skipped
    }
}
