import Foundation
import NIOCore
import OCI

/// OCI 1.1 referrers: artifacts whose manifest names another manifest as its `subject` (signatures, SBOMs,
/// Slipway's gzip indexes). Registries with the Referrers API list them at `/v2/NAME/referrers/DIGEST`; for the
/// others (docker-registry 2.8) the spec's fallback is an image index under the tag `ALGORITHM-HEX` of the subject,
/// which pushers keep up to date.
extension RegistryClient {
    /// The fallback tag of `subject`.
    public static func referrersTag(for subject: Digest) -> String { "\(subject.algorithm.rawValue)-\(subject.hex)" }

    /// Descriptors of `subject`'s referrers of `artifactType` (all when nil), from the Referrers API or else the
    /// fallback tag; empty when the registry knows of none.
    public func referrers(repository: String, subject: Digest, artifactType: String? = nil) async throws -> [Descriptor] {
        let (supported, listed) = try await referrersFromAPI(repository: repository, subject: subject)
        let all = supported ? listed : try await referrersFromFallbackTag(repository: repository, subject: subject)?.manifests ?? []
        return all.filter { artifactType == nil || $0.artifactType == artifactType }
    }

    /// Pushes an artifact manifest whose `subject` is set, by digest, and lists it under the subject's fallback tag
    /// when the registry has no Referrers API (which would list it by itself).
    public func pushReferrer(repository: String, artifact: Descriptor, bytes: [UInt8], subject: Digest) async throws {
        try await pushManifest(repository: repository, reference: artifact.digest.description, bytes: bytes, mediaType: artifact.mediaType)
        let (supported, _) = try await referrersFromAPI(repository: repository, subject: subject)
        guard !supported else { return }
        var index = try await referrersFromFallbackTag(repository: repository, subject: subject) ?? Index(manifests: [])
        guard !index.manifests.contains(where: { $0.digest == artifact.digest }) else { return }
        index.manifests.append(artifact)
        let encoded = Array(try JSONEncoder.canonical.encode(index))
        try await pushManifest(repository: repository, reference: Self.referrersTag(for: subject), bytes: encoded, mediaType: MediaType.ociIndex)
    }

    /// Whether the registry answers the Referrers API for this repository, and what it listed.
    private func referrersFromAPI(repository: String, subject: Digest) async throws -> (Bool, [Descriptor]) {
        var request = Request(method: .GET, target: "/v2/\(repository)/referrers/\(subject)", scope: Self.scope(repository))
        request.headers.add(name: "Accept", value: MediaType.ociIndex)
        request.timeout = .seconds(60)
        let response = try await send(request, expecting: [200, 404])
        let url = resolve(request.target)
        let bytes = try await Self.collect(response.body, limit: Self.manifestLimit, url: url)
        // A registry without the API answers 404 (no such route); one with it answers 200, an empty index when
        // nothing refers to the subject.
        guard response.status == .ok else { return (false, []) }
        do {
            return (true, try JSONDecoder().decode(Index.self, from: Data(bytes)).manifests)
        } catch {
            throw RegistryError.invalidResponse(url: url, reason: "the referrers list is not an image index: \(error)")
        }
    }

    private func referrersFromFallbackTag(repository: String, subject: Digest) async throws -> Index? {
        let fetched: FetchedManifest
        do {
            fetched = try await fetchManifest(repository: repository, reference: Self.referrersTag(for: subject))
        } catch RegistryError.notFound {
            return nil
        }
        guard case .index(let index) = fetched.document else {
            throw RegistryError.invalidResponse(
                url: resolve("/v2/\(repository)/manifests/\(Self.referrersTag(for: subject))"), reason: "the referrers tag holds a manifest, not an index")
        }
        return index
    }
}
