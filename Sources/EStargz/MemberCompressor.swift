import Blocking
import CDeflate
import Crypto
import Foundation
import OCI

/// gzip members waiting to be compressed together. Batching keeps the per-member hand-off cost small when a
/// layer is thousands of tiny files, while a 4 MiB chunk fills a batch on its own.
final class MemberBatch: @unchecked Sendable {
    // Filled by the writer thread before submission, then owned by one worker until it is handed back, then read
    // by the writer again; `OrderedWorkers` orders those hand-offs.
    var members: [[UInt8]] = []
    /// Leading bytes of each member that are one chunk of file payload (0 for a member of tar headers only).
    var payloadLengths: [Int] = []
    var byteCount = 0
    var compressed: [[UInt8]] = []
    /// sha256 of each member's payload bytes (nil when it has none).
    var payloadDigests: [OCI.Digest?] = []
    var failure: Error?

    func add(_ member: [UInt8], payloadLength: Int) {
        members.append(member)
        payloadLengths.append(payloadLength)
        byteCount += member.count
    }

    var isFull: Bool { byteCount >= 1 << 20 || members.count >= 512 }
}

/// One libdeflate compressor writing gzip members, owned by one thread.
final class GzipMemberCompressor {
    let handle: OpaquePointer

    init(level: Int) throws {
        guard let handle = libdeflate_alloc_compressor(Int32(level)) else {
            throw EStargzError.invalidInput("libdeflate cannot allocate a level \(level) compressor")
        }
        self.handle = handle
    }

    deinit { libdeflate_free_compressor(handle) }
}

/// Compresses gzip members with libdeflate on worker threads and gives batches back in submission order, so one
/// conversion uses every core while the blob stays byte-for-byte what a sequential writer would produce.
final class ParallelMemberCompressor {
    private let workers: OrderedWorkers<GzipMemberCompressor, MemberBatch>

    init(level: Int, workers: Int) throws {
        self.workers = try OrderedWorkers(workers: workers, name: "estargz-deflate") { try GzipMemberCompressor(level: level) }
    }

    private static func compress(_ batch: MemberBatch, with compressor: OpaquePointer) -> MemberBatch {
        batch.compressed.reserveCapacity(batch.members.count)
        for (member, payload) in zip(batch.members, batch.payloadLengths) {
            let bound = libdeflate_gzip_compress_bound(compressor, member.count)
            let output = member.withUnsafeBytes { input in
                [UInt8](unsafeUninitializedCapacity: bound) { buffer, count in
                    count = libdeflate_gzip_compress(compressor, input.baseAddress, input.count, buffer.baseAddress, bound)
                }
            }
            guard !output.isEmpty else {
                batch.failure = EStargzError.invalidInput("libdeflate could not compress a member of \(member.count) bytes")
                return batch
            }
            batch.compressed.append(output)
            batch.payloadDigests.append(
                payload == 0 ? nil : member.withUnsafeBytes { OCI.Digest(sha256: SHA256.hash(data: UnsafeRawBufferPointer(rebasing: $0[..<payload]))) })
        }
        batch.members = []
        return batch
    }

    /// Queues `batch`; hands every batch finished in order to `emit`, waiting when too many are outstanding.
    func submit(_ batch: MemberBatch, emit: (MemberBatch) throws -> Void) throws {
        try workers.submit({ compressor in Self.compress(batch, with: compressor.handle) }, emit: { try Self.checked($0, emit) })
    }

    /// Waits for every queued batch and emits it.
    func finish(emit: (MemberBatch) throws -> Void) throws {
        try workers.finish(emit: { try Self.checked($0, emit) })
    }

    private static func checked(_ batch: MemberBatch, _ emit: (MemberBatch) throws -> Void) throws {
        if let failure = batch.failure { throw failure }
        try emit(batch)
    }

    /// Stops the workers once they are idle; pending batches are dropped. Call exactly once.
    func shutdown() { workers.stop() }
}
