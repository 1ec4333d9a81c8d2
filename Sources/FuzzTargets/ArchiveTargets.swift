import Archive

enum ArchiveTargets {
    /// A tar stream (ustar, GNU long names and sparse markers, PAX local and global records), read as the layer
    /// applier reads it. It is read twice, in one piece and in 7-byte pieces (headers and records split across
    /// reads): both must see the same entries and the same outcome.
    static func tar(_ input: [UInt8]) {
        let whole = entries(TarReader(source: ArrayByteSource(input)))
        let split = entries(TarReader(source: ArrayByteSource(input, pieceSize: 7)))
        precondition(whole.headers == split.headers && whole.failed == split.failed, "tar: reading in pieces changed the result")
    }

    private static func entries(_ reader: TarReader) -> (headers: [TarHeader], failed: Bool) {
        var headers: [TarHeader] = []
        do {
            while let header = try reader.next() {
                precondition(header.size >= 0, "tar: negative entry size \(header.size)")
                let before = reader.offset
                var bodyBytes: Int64 = 0
                try reader.readContents { bodyBytes += Int64($0.count) }
                precondition(reader.offset == before + bodyBytes, "tar: offset does not count the body")
                headers.append(header)
            }
            try reader.drain()
            return (headers, false)
        } catch {
            return (headers, true)
        }
    }

    /// gzip members as layers and eStargz chunks are decompressed (multi-member, zero padding), bounded so a
    /// small bomb cannot exhaust the fuzzer's memory.
    static func gzip(_ input: [UInt8]) {
        let limit = 8 << 20
        guard let output = try? gunzip(input, limit: limit) else { return }
        precondition(output.count <= limit + (1 << 18), "gzip: \(output.count) bytes out, limit \(limit)")
    }
}
