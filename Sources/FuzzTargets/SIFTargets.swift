import SIF

enum SIFTargets {
    /// A SIF file's header and descriptor table, as `slipway run` opens a .sif (and a range-fetched prefix).
    static func file(_ input: [UInt8]) {
        guard let file = try? SIFFile(path: "fuzz.sif", prefix: input, fileSize: Int64(input.count)) else { return }
        for descriptor in file.descriptors {
            precondition(descriptor.offset >= 0 && descriptor.size >= 0 && descriptor.offset + descriptor.size <= file.fileSize,
                "sif: object \(descriptor.id) at \(descriptor.offset)+\(descriptor.size) outside the \(file.fileSize)-byte file")
        }
        _ = file.primaryPartition
    }
}
