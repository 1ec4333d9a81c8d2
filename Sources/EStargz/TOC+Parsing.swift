extension TOC {
    /// Parses `stargz.index.json` with the parser `EStargzReader` uses, for the fuzz targets (Sources/FuzzTargets)
    /// which reach the TOC parser without a gzip member and tar header around it.
    package static func parse(json: [UInt8]) throws -> TOC { try TOCParser.parse(json) }
}
