import ContentStore
import Foundation
import OCI

/// The files a workload opened while it started, in first-access order, kept in the store per image (by manifest
/// digest). A lazy mount of the image fetches them first, so a cold start on any node that shares the store asks
/// for what the workload is about to read, without rebuilding the image (`convert --prioritize` does that).
///
/// A profile is a hint from a file any process writing the store could have written: it names the image it was
/// recorded for, and is used only for that image; paths the image does not have are skipped.
public struct StartupProfile: Codable, Sendable, Equatable {
    /// The manifest digest of the image the files were opened in.
    public var image: String
    /// Paths relative to the image's root, in the order they were first opened.
    public var files: [String]

    public init(image: Digest, files: [String]) {
        self.image = image.description
        self.files = files
    }

    public static func path(for image: Digest, storeRoot: String) -> String {
        "\(storeRoot)/profiles/\(image.algorithm.rawValue)/\(image.hex).json"
    }

    /// Larger profile files are not read: a start-up touches thousands of files, not millions.
    static let maximumBytes = 16 << 20

    /// The profile kept for `image`, or nil when there is none, it cannot be read, or it names another image.
    public static func load(for image: Digest, storeRoot: String) -> StartupProfile? {
        let path = path(for: image, storeRoot: storeRoot)
        guard let attributes = try? FileManager.default.attributesOfItem(atPath: path),
            let size = attributes[.size] as? Int, size <= maximumBytes,
            let data = FileManager.default.contents(atPath: path),
            let profile = try? JSONDecoder().decode(StartupProfile.self, from: data),
            profile.image == image.description
        else { return nil }
        return profile
    }

    /// Replaces the profile kept for its image (atomically: a reader sees the old one or the new one).
    public func save(storeRoot: String) throws {
        guard let image = try? Digest(image) else { return }
        let path = Self.path(for: image, storeRoot: storeRoot)
        try FileManager.default.createDirectory(atPath: (path as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        try AtomicFile.write(Array(try encoder.encode(self)), to: path)
    }
}
