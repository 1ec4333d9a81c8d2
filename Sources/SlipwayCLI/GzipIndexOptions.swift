import Foundation
import Images
import LazyFS
import Slipway

extension LazyMountOptions {
    /// Serves the image's plain gzip layers through the gzip indexes its source knows (the store's, the
    /// registry's referrers); says which it found and why any is not used.
    mutating func useGzipIndexes(of image: ResolvedImage, notice: @escaping @Sendable (String) -> Void) async {
        let found = await GzipIndexes.find(for: image)
        for problem in found.problems { notice("gzip index not used: \(problem)") }
        guard let artifact = found.artifact, !found.layers.isEmpty else { return }
        notice("gzip index \(artifact.digest.short): \(found.layers.count) of \(GzipIndexes.indexableLayers(of: image).count) plain gzip layers served lazily")
        gzipIndexes = found.layers
        prioritizedFiles = found.prioritizedFiles
    }
}
