#if canImport(Glibc)
import Glibc
#endif
import Foundation
import OCI

/// Named images in `index.json` (`org.opencontainers.image.ref.name`), as skopeo's `oci:STORE:NAME` reads them.
extension ContentStore {
    public struct NamedImage: Sendable {
        public var name: String
        public var descriptor: Descriptor
    }

    public func images() throws -> [NamedImage] {
        try readIndex().manifests.compactMap { descriptor in
            descriptor.annotations?[Annotation.refName].map { NamedImage(name: $0, descriptor: descriptor) }
        }
    }

    public func image(named name: String) throws -> Descriptor? {
        try images().first { $0.name == name }?.descriptor
    }

    /// Points `name` at `descriptor`, replacing what it named before.
    public func setImage(named name: String, to descriptor: Descriptor) throws {
        try withIndexLock {
            var index = try readIndex()
            index.manifests.removeAll { $0.annotations?[Annotation.refName] == name }
            var entry = descriptor
            entry.annotations = (entry.annotations ?? [:]).merging([Annotation.refName: name]) { $1 }
            index.manifests.append(entry)
            try writeIndex(index)
        }
    }

    @discardableResult
    public func removeImage(named name: String) throws -> Bool {
        try withIndexLock {
            var index = try readIndex()
            let before = index.manifests.count
            index.manifests.removeAll { $0.annotations?[Annotation.refName] == name }
            try writeIndex(index)
            return index.manifests.count != before
        }
    }

    func readIndex() throws -> Index {
        guard let data = FileManager.default.contents(atPath: indexPath) else { return Index(manifests: []) }
        do {
            return try JSONDecoder().decode(Index.self, from: data)
        } catch {
            throw StoreError.corrupt(path: indexPath, reason: "\(error)")
        }
    }

    func writeIndex(_ index: Index) throws {
        try AtomicFile.write(Array(try JSONEncoder.canonical.encode(index)), to: indexPath)
    }

    /// Serialises read-modify-write of index.json across processes. The lock is blocking but held for microseconds.
    func withIndexLock<T>(_ body: () throws -> T) throws -> T {
        let path = "\(root)/.slipway/index.lock"
        while true {
            if let lock = try FileLock.tryAcquire(path, mode: .exclusive) {
                defer { lock.release() }
                return try body()
            }
            usleep(2_000)
        }
    }
}

extension ContentStore {
    /// Every top-level entry of index.json, named or not.
    public func allManifestDescriptors() throws -> [Descriptor] { try readIndex().manifests }
}

/// Artifacts that refer to a manifest (OCI referrers), kept in `index.json` as unnamed entries annotated with their
/// subject, so that gc keeps them and an OCI-layout reader sees them as ordinary manifests.
extension ContentStore {
    public static let subjectAnnotation = "dev.slipway.subject"

    public func referrers(of subject: Digest) throws -> [Descriptor] {
        try readIndex().manifests.filter { $0.annotations?[Self.subjectAnnotation] == subject.description }
    }

    /// Records `artifact` (its manifest already in the store) as a referrer of `subject`.
    public func addReferrer(_ artifact: Descriptor, subject: Digest) throws {
        try withIndexLock {
            var index = try readIndex()
            guard !index.manifests.contains(where: { $0.digest == artifact.digest && $0.annotations?[Self.subjectAnnotation] != nil }) else { return }
            var entry = artifact
            entry.annotations = (entry.annotations ?? [:]).merging([Self.subjectAnnotation: subject.description]) { $1 }
            index.manifests.append(entry)
            try writeIndex(index)
        }
    }
}
