/// One libFuzzer target per parser that reads bytes from outside (registries, images, clients, the user's
/// files). `run` must never trap on any input: a parser answers garbage with a thrown error or nil. Where it is
/// cheap, `run` also checks an invariant of the parse with `precondition`, so a wrong answer is a crash too.
public enum FuzzTarget: String, CaseIterable, Sendable {
    case tar
    case gzip
    case estargz
    case estargzTOC = "estargz-toc"
    case sif
    case manifest
    case imageConfig = "image-config"
    case rangeRequest = "range-request"
    case contentRange = "content-range"
    case link
    case wwwAuthenticate = "www-authenticate"
    case reference
    case dockerConfig = "docker-config"
    case gzipIndex = "gzip-index"
    case gzipIndexDocument = "gzip-index-document"
    case squashfsBlockIndex = "squashfs-block-index"

    /// Feeds one input to the target's parser.
    public func run(_ input: [UInt8]) {
        switch self {
        case .tar: ArchiveTargets.tar(input)
        case .gzip: ArchiveTargets.gzip(input)
        case .estargz: EStargzTargets.blob(input)
        case .estargzTOC: EStargzTargets.toc(input)
        case .sif: SIFTargets.file(input)
        case .manifest: OCITargets.manifest(input)
        case .imageConfig: OCITargets.imageConfig(input)
        case .rangeRequest: HTTPTargets.rangeRequest(input)
        case .contentRange: HTTPTargets.contentRange(input)
        case .link: HTTPTargets.link(input)
        case .wwwAuthenticate: HTTPTargets.wwwAuthenticate(input)
        case .reference: OCITargets.reference(input)
        case .dockerConfig: HTTPTargets.dockerConfig(input)
        case .gzipIndex: GzipIndexTargets.layer(input)
        case .gzipIndexDocument: GzipIndexTargets.document(input)
        case .squashfsBlockIndex: SquashfsTargets.blockIndex(input)
        }
    }
}

/// Header values and references arrive as text; invalid UTF-8 becomes U+FFFD as it does in the HTTP stack.
func text(_ input: [UInt8]) -> String { String(decoding: input, as: UTF8.self) }
