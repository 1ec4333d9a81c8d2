import ImageTree

/// The order a squashfs is written in: each directory's children sorted bytewise (as lookups require), every
/// inode numbered after everything below it (a directory's entries point back at inodes already written, and a
/// directory inode at its listing), and a hard-linked file once, at its first name.
struct TreeWalk {
    let tree: ImageTree
    /// Distinct inodes, children before their directory; an inode's number is its position + 1.
    private(set) var order: [UInt64] = []
    private(set) var numbers: [UInt64: UInt32] = [:]
    /// Names each non-directory has in the tree (its link count).
    private(set) var names: [UInt64: UInt32] = [:]
    private(set) var sortedChildren: [UInt64: [(name: String, ino: UInt64)]] = [:]
    /// The first path of each inode, for messages.
    private(set) var paths: [UInt64: String] = [:]

    init(_ tree: ImageTree) throws(SquashfsError) {
        self.tree = tree
        try visit(ImageTree.rootIno, path: "")
        guard order.count < Int(UInt32.max) else {
            throw .tooLarge(field: "the number of inodes", path: "", value: UInt64(order.count), limit: UInt64(UInt32.max - 1))
        }
    }

    private mutating func visit(_ ino: UInt64, path: String) throws(SquashfsError) {
        guard let node = tree.node(ino) else { return }
        paths[ino] = path
        if node.isDirectory {
            let children = node.children.map { (name: $0.key, ino: $0.value) }.sorted { $0.name.utf8.lexicographicallyPrecedes($1.name.utf8) }
            sortedChildren[ino] = children
            for child in children {
                guard child.name.utf8.count <= SquashfsFormat.maxNameLength else {
                    throw .tooLarge(
                        field: "a name's length", path: path.isEmpty ? child.name : "\(path)/\(child.name)", value: UInt64(child.name.utf8.count),
                        limit: UInt64(SquashfsFormat.maxNameLength))
                }
                if let seen = names[child.ino] {
                    names[child.ino] = seen + 1
                    continue
                }
                if tree.node(child.ino)?.isDirectory == false { names[child.ino] = 1 }
                try visit(child.ino, path: path.isEmpty ? child.name : "\(path)/\(child.name)")
            }
        }
        order.append(ino)
        numbers[ino] = UInt32(truncatingIfNeeded: order.count)
    }
}
