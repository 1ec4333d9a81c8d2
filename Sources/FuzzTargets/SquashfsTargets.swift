import Squashfs

enum SquashfsTargets {
    /// The block index kept beside a cached SIF (`.blocks`), which the next conversion reads from the store.
    static func blockIndex(_ input: [UInt8]) {
        guard let index = BlockIndex.decode(input) else { return }
        guard let again = BlockIndex.decode(index.encoded()) else { preconditionFailure("squashfs-block-index: a re-encoded index does not decode") }
        precondition(
            again.files.count == index.files.count && again.fragments.count == index.fragments.count && again.sources == index.sources,
            "squashfs-block-index: re-encoding changed the index")
    }
}
