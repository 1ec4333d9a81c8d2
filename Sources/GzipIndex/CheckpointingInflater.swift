import Archive
import CZlib
import Foundation
import OCI

/// Inflates a whole gzip blob (any number of members) front to back as a `TarByteSource`, and on the way records
/// a checkpoint at the first deflate block boundary past every `spanSize` bytes of output (zlib's zran: inflate
/// with `Z_BLOCK`), the digest of each checkpoint's span, and the blob's and the uncompressed stream's digests.
final class CheckpointingInflater: TarByteSource {
    private let input: () throws -> [UInt8]?
    private let spanSize: Int64
    private var stream = z_stream()
    /// Output goes here; the last `windowSize` bytes before `next_out` are the window when a checkpoint is taken.
    private let output: UnsafeMutablePointer<UInt8>
    private static let outputCapacity = 512 << 10
    /// Compressed bytes read and not yet inflated live in `input[0..<inputCount]`; `next_in` points into it.
    private var inputBuffer: UnsafeMutablePointer<UInt8>
    private var inputCapacity = 1 << 20
    private var inputCount = 0
    /// Compressed bytes consumed so far (the absolute offset of `next_in`).
    private(set) var consumed: Int64 = 0
    private(set) var produced: Int64 = 0
    private var lastConsumedByte: UInt8 = 0
    private var inputEnded = false
    private var streamEnded = false

    private(set) var checkpoints: [GzipCheckpoint] = []
    private var spanHasher: DigestHasher?
    /// Nil when the caller verifies the blob's digest itself (a cache fill does, as the bytes arrive).
    private var blobHasher: DigestHasher?
    private var diffHasher = DigestHasher()

    init(spanSize: Int64, hashBlob: Bool = true, input: @escaping () throws -> [UInt8]?) throws {
        self.spanSize = spanSize
        blobHasher = hashBlob ? DigestHasher() : nil
        self.input = input
        output = .allocate(capacity: Self.outputCapacity)
        inputBuffer = .allocate(capacity: inputCapacity)
        // 31: a gzip wrapper, whose header zlib parses; `Z_BLOCK` returns right after it, which is checkpoint 0.
        guard slipway_inflate_init2(&stream, 31) == Z_OK else { throw GzipIndexError.unreadableLayer("zlib would not start") }
        stream.next_out = output
        stream.avail_out = UInt32(Self.outputCapacity)
    }

    deinit {
        inflateEnd(&stream)
        output.deallocate()
        inputBuffer.deallocate()
    }

    var blobDigest: Digest? { blobHasher?.finalize() }
    var diffID: Digest { diffHasher.finalize() }

    func nextBytes() throws -> UnsafeRawBufferPointer? {
        while true {
            if streamEnded { return nil }
            if stream.avail_out == 0 { keepWindowOnly() }
            let before = stream.next_out!
            let inBefore = stream.avail_in
            let rc = inflate(&stream, Z_BLOCK)
            account(consumedBytes: Int(inBefore - stream.avail_in))
            let count = stream.next_out! - before
            let bytes = UnsafeRawBufferPointer(start: before, count: count)
            produced += Int64(count)
            diffHasher.update(bytes)
            switch rc {
            case Z_STREAM_END:
                try endOfMember()
            case Z_OK:
                if stream.data_type & 128 != 0, stream.data_type & 64 == 0 { takeCheckpointIfDue() }
            case Z_BUF_ERROR where stream.avail_in == 0:
                guard try refill() else {
                    throw GzipIndexError.unreadableLayer("the gzip stream is truncated after \(consumed) bytes")
                }
            default:
                let message = stream.msg.map { String(cString: $0) } ?? "error \(rc)"
                throw GzipIndexError.unreadableLayer("corrupt gzip data at compressed offset \(consumed): \(message)")
            }
            if count > 0 { return bytes }
        }
    }

    /// Reads the rest of the blob (past the end of the tar: zero padding, more members, trailing bytes) so that the
    /// digests and the last span cover all of it.
    func drain() throws {
        while try nextBytes() != nil {}
        repeat {
            account(consumedBytes: Int(stream.avail_in))
            stream.avail_in = 0
        } while try refill()
        finishSpan()
    }

    /// The end of the blob: the last span ends here.
    private func finishSpan() {
        if let hasher = spanHasher, !checkpoints.isEmpty {
            checkpoints[checkpoints.count - 1].spanDigest = hasher.finalize().description
            spanHasher = nil
        }
    }

    /// Appends the next non-empty read to the unread input (moved to the front); false at the end of the blob.
    private func refill() throws -> Bool {
        while !inputEnded {
            guard let next = try input() else {
                inputEnded = true
                break
            }
            if next.isEmpty { continue }
            let unread = Int(stream.avail_in)
            if unread > 0 { inputBuffer.update(from: stream.next_in, count: unread) }
            if unread + next.count > inputCapacity {
                let larger = UnsafeMutablePointer<UInt8>.allocate(capacity: unread + next.count)
                larger.update(from: inputBuffer, count: unread)
                inputBuffer.deallocate()
                inputBuffer = larger
                inputCapacity = unread + next.count
            }
            next.withUnsafeBufferPointer { (inputBuffer + unread).update(from: $0.baseAddress!, count: next.count) }
            inputCount = unread + next.count
            stream.next_in = inputBuffer
            stream.avail_in = UInt32(inputCount)
            return true
        }
        return false
    }

    /// Hashes the `count` bytes inflate just consumed (those before `next_in`).
    private func account(consumedBytes count: Int) {
        guard count > 0 else { return }
        let slice = UnsafeRawBufferPointer(start: stream.next_in - count, count: count)
        blobHasher?.update(slice)
        spanHasher?.update(slice)
        lastConsumedByte = slice[count - 1]
        consumed += Int64(count)
    }

    /// After a member's trailer: another member follows (inflate it with the same stream, reset), or the blob ends
    /// (anything left is trailing bytes, which gzip tools ignore and the digests still cover).
    private func endOfMember() throws {
        while stream.avail_in < 2, try refill() {}
        if stream.avail_in >= 2, stream.next_in[0] == 0x1f, stream.next_in[1] == 0x8b {
            inflateReset(&stream)
        } else {
            streamEnded = true
        }
    }

    private func takeCheckpointIfDue() {
        let due = checkpoints.isEmpty ? true : produced - checkpoints[checkpoints.count - 1].out >= spanSize
        guard due else { return }
        let bits = Int(stream.data_type & 7)
        finishSpan()
        var hasher = DigestHasher()
        if bits > 0 { hasher.update([lastConsumedByte]) }
        spanHasher = hasher
        let windowCount = Int(min(produced, Int64(GzipIndex.windowSize)))
        let window = Data(bytes: stream.next_out! - windowCount, count: windowCount)
        checkpoints.append(GzipCheckpoint(in: consumed, out: produced, bits: bits, window: window, spanDigest: ""))
    }

    /// Makes room for output while keeping the last window's worth in front of `next_out`.
    private func keepWindowOnly() {
        let keep = GzipIndex.windowSize
        let used = Self.outputCapacity
        output.update(from: output + (used - keep), count: keep)
        stream.next_out = output + keep
        stream.avail_out = UInt32(used - keep)
    }
}
