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
