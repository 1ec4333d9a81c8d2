import EStargz

enum EStargzTargets {
    /// A whole eStargz (or legacy stargz) blob: footer, TOC member, TOC, then every chunk the TOC points at,
    /// decompressed and verified as a lazy mount reads it.
    static func blob(_ input: [UInt8]) {
        _ = try? parseStargzFooter(Array(input.suffix(estargzFooterSize)))
        guard let reader = try? EStargzReader(blob: input, layer: "fuzz", maxTOCSize: 4 << 20) else { return }
        precondition(reader.tocOffset >= 0 && reader.tocOffset < Int64(input.count), "estargz: TOC offset \(reader.tocOffset) outside the blob")
        for chunk in reader.allChunks.prefix(64) {
            guard let bytes = try? reader.readChunk(chunk) else { continue }
            precondition(Int64(bytes.count) == chunk.chunkSize, "estargz: chunk of \(chunk.chunkSize) bytes read as \(bytes.count)")
        }
    }

    /// `stargz.index.json` alone. What parses must survive the writer's encoding unchanged.
    static func toc(_ input: [UInt8]) {
        guard let toc = try? TOC.parse(json: input) else { return }
        let reparsed = try? TOC.parse(json: toc.jsonBytes())
        precondition(reparsed == toc, "estargz-toc: the TOC changed through jsonBytes() and back")
    }
}
