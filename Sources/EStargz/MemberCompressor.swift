import CDeflate
import Crypto
import Foundation
import OCI

/// gzip members waiting to be compressed together. Batching keeps the per-member hand-off cost small when a
/// layer is thousands of tiny files, while a 4 MiB chunk fills a batch on its own.
final class MemberBatch: @unchecked Sendable {
    // Filled by the writer thread before submission, then owned by one worker until `done`, then read by the
    // writer again; `ParallelMemberCompressor.condition` orders those hand-offs.
    var members: [[UInt8]] = []
    /// Leading bytes of each member that are one chunk of file payload (0 for a member of tar headers only).
    var payloadLengths: [Int] = []
    var byteCount = 0
    var compressed: [[UInt8]] = []
    /// sha256 of each member's payload bytes (nil when it has none).
    var payloadDigests: [OCI.Digest?] = []
    var failure: Error?
    var done = false

    func add(_ member: [UInt8], payloadLength: Int) {
        members.append(member)
        payloadLengths.append(payloadLength)
        byteCount += member.count
    }

    var isFull: Bool { byteCount >= 1 << 20 || members.count >= 512 }
}

/// Compresses gzip members with libdeflate on worker threads and gives batches back in submission order, so one
/// conversion uses every core while the blob stays byte-for-byte what a sequential writer would produce.
final class ParallelMemberCompressor: @unchecked Sendable {
    // `queue`, `stopping` and every batch's `done`/results are guarded by `condition`; `pending` is touched by the
    // submitting thread only.
    private let condition = NSCondition()
    private var queue: [MemberBatch] = []
    private var stopping = false
    private var pending: [MemberBatch] = []
    private var pendingHead = 0
    private let maxPending: Int
    private var workersRunning = 0

    init(level: Int, workers: Int) {
        maxPending = workers * 2 + 1
        for _ in 0..<workers { start(level: level) }
    }

    private func start(level: Int) {
        workersRunning += 1
        let thread = Thread { [self] in
            let compressor = libdeflate_alloc_compressor(Int32(level))
            defer { if let compressor { libdeflate_free_compressor(compressor) } }
            while let batch = nextJob() {
                if let compressor {
                    Self.compress(batch, with: compressor)
                } else {
                    batch.failure = EStargzError.invalidInput("libdeflate cannot allocate a level \(level) compressor")
                }
                condition.lock()
                batch.done = true
                condition.broadcast()
                condition.unlock()
            }
            condition.lock()
            workersRunning -= 1
            condition.broadcast()
            condition.unlock()
        }
        thread.name = "estargz-deflate"
        thread.start()
    }

    private func nextJob() -> MemberBatch? {
        condition.lock()
        defer { condition.unlock() }
        while queue.isEmpty && !stopping { condition.wait() }
        return queue.isEmpty ? nil : queue.removeFirst()
    }

    private static func compress(_ batch: MemberBatch, with compressor: OpaquePointer) {
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
                return
            }
            batch.compressed.append(output)
            batch.payloadDigests.append(
                payload == 0 ? nil : member.withUnsafeBytes { OCI.Digest(sha256: SHA256.hash(data: UnsafeRawBufferPointer(rebasing: $0[..<payload]))) })
        }
        batch.members = []
    }

    /// Queues `batch`; hands every batch finished in order to `emit`, waiting when too many are outstanding.
    func submit(_ batch: MemberBatch, emit: (MemberBatch) throws -> Void) throws {
        condition.lock()
        queue.append(batch)
        condition.signal()
        condition.unlock()
        pending.append(batch)
        try drain(waitingWhileAbove: maxPending, emit: emit)
    }

    /// Waits for every queued batch and emits it.
    func finish(emit: (MemberBatch) throws -> Void) throws {
        try drain(waitingWhileAbove: 0, emit: emit)
    }

    private func drain(waitingWhileAbove limit: Int, emit: (MemberBatch) throws -> Void) throws {
        while pendingHead < pending.count {
            let head = pending[pendingHead]
            condition.lock()
            while !head.done && pending.count - pendingHead > limit { condition.wait() }
            let ready = head.done
            condition.unlock()
            guard ready else { return }
            pendingHead += 1
            if pendingHead > 64 {
                pending.removeFirst(pendingHead)
                pendingHead = 0
            }
            if let failure = head.failure { throw failure }
            try emit(head)
        }
    }

    /// Stops the workers once they are idle; pending batches are dropped. Call exactly once.
    func shutdown() {
        condition.lock()
        stopping = true
        queue.removeAll()
        condition.broadcast()
        while workersRunning > 0 { condition.wait() }
        condition.unlock()
    }
}
