import Archive

extension TOCEntry {
    /// The entry a tar header describes, named `name` (the cleaned path); user and group names are the header's.
    package init(header h: TarHeader, name: String) throws {
        self.init(name: name, type: "")
        mode = Int64(h.mode)
        uid = h.uid
        gid = h.gid
        userName = h.uname
        groupName = h.gname
        modtime = formatModtime(h.mtime)
        xattrs = h.xattrs
        switch h.type {
        case .hardLink: type = "hardlink"; linkName = h.linkName
        case .symbolicLink: type = "symlink"; linkName = h.linkName
        case .directory: type = "dir"
        case .regular: type = "reg"; size = h.size
        case .characterDevice: type = "char"; devMajor = Int(h.devMajor); devMinor = Int(h.devMinor)
        case .blockDevice: type = "block"; devMajor = Int(h.devMajor); devMinor = Int(h.devMinor)
        case .fifo: type = "fifo"
        case .other(let flag):
            throw EStargzError.invalidInput("unsupported tar entry type \(UnicodeScalar(flag)) for \(h.name)")
        }
    }
}

extension TOCEntry {
    /// The tar header of a file entry, as a layer's tar would carry it; nil for what is not a file of the layer
    /// (a chunk record continues a file, the TOC and landmarks describe the blob).
    package func tarHeader() -> TarHeader? {
        let path = cleanEntryName(name)
        guard path != estargzTOCName, path != prefetchLandmarkName, path != noPrefetchLandmarkName else { return nil }
        let kind: TarEntryType
        switch type {
        case "dir": kind = .directory
        case "reg": kind = .regular
        case "symlink": kind = .symbolicLink
        case "hardlink": kind = .hardLink
        case "char": kind = .characterDevice
        case "block": kind = .blockDevice
        case "fifo": kind = .fifo
        default: return nil
        }
        return TarHeader(
            name: kind == .directory ? (path.isEmpty ? "./" : path + "/") : path, type: kind, mode: UInt32(truncatingIfNeeded: mode) & 0o7777, uid: uid, gid: gid,
            uname: userName, gname: groupName, size: kind == .regular ? size : 0, mtime: TarTimestamp(seconds: parseModtime(modtime)),
            linkName: kind == .hardLink ? cleanEntryName(linkName) : linkName, devMajor: UInt32(clamping: devMajor),
            devMinor: UInt32(clamping: devMinor), xattrs: xattrs)
    }
}

/// "2024-01-02T03:04:05Z" → seconds since the epoch; 0 when empty or malformed.
package func parseModtime(_ text: String) -> Int64 {
    let digits = Array(text.utf8)
    guard digits.count >= 20, digits[4] == UInt8(ascii: "-"), digits[10] == UInt8(ascii: "T") else { return 0 }
    func number(_ range: Range<Int>) -> Int64? {
        var value: Int64 = 0
        for d in digits[range] {
            guard d >= 48 && d <= 57 else { return nil }
            value = value * 10 + Int64(d - 48)
        }
        return value
    }
    guard var y = number(0..<4), let m = number(5..<7), let d = number(8..<10), let hh = number(11..<13),
        let mm = number(14..<16), let ss = number(17..<19)
    else { return 0 }
    // Days from the civil date (Howard Hinnant's algorithm), the inverse of the writer's formatting.
    if m <= 2 { y -= 1 }
    let era = (y >= 0 ? y : y - 399) / 400
    let yoe = y - era * 400
    let doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
    let days = era * 146_097 + doe - 719_468
    return days * 86400 + hh * 3600 + mm * 60 + ss
}
