import Crypto
import Foundation

/// Digest and size of an uncompressed layer stream.
struct StreamDigest: Sendable {
    var diffID: String
    var size: Int64
}

/// Holds the producer's result for the consumer (written before `ChunkPipe.finish`).
final class DigestBox: @unchecked Sendable {
    var value: StreamDigest?
}

enum DecompressionPipeline {
    static func hex(_ digest: SHA256.Digest) -> String {
        let table = Array("0123456789abcdef".utf8)
        var out = [UInt8]()
        out.reserveCapacity(64)
        for byte in digest {
            out.append(table[Int(byte >> 4)])
            out.append(table[Int(byte & 15)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Starts the decompression + hashing thread feeding `pipe`.
    static func startProducer(
        input: LayerInput, compression: LayerCompression, limit: DecompressionLimit, layer: String, pipe: ChunkPipe, result: DigestBox
    ) {
        let thread = Thread {
            defer { pipe.markExited() }
            do {
                let decoder = makeDecoder(compression, input: InputReader(input), limit: limit, layer: layer)
                var hasher = SHA256()
                var total: Int64 = 0
                while true {
                    guard let chunk = pipe.takeFree() else {
                        pipe.finish(error: nil)  // consumer cancelled
                        return
                    }
                    let n = try decoder.read(into: UnsafeMutableRawBufferPointer(start: chunk.base, count: chunk.capacity))
                    chunk.count = n
                    if n > 0 {
                        hasher.update(bufferPointer: chunk.bytes)
                        total += Int64(n)
                        pipe.push(chunk)
                    }
                    if n < chunk.capacity {
                        if n == 0 { pipe.recycle(chunk) }
                        break
                    }
                }
                result.value = StreamDigest(diffID: "sha256:" + hex(hasher.finalize()), size: total)
                pipe.finish(error: nil)
            } catch {
                pipe.finish(error: error)
            }
        }
        thread.name = "slipway-layer-decompress"
        thread.stackSize = 1 << 20
        thread.start()
    }

    /// Decompresses and hashes on the calling thread (no extraction).
    static func digest(input: LayerInput, compression: LayerCompression, limit: DecompressionLimit, layer: String) throws -> StreamDigest {
        let decoder = makeDecoder(compression, input: InputReader(input), limit: limit, layer: layer)
        let chunk = DecodedChunk(capacity: 1 << 20)
        var hasher = SHA256()
        var total: Int64 = 0
        while true {
            let n = try decoder.read(into: UnsafeMutableRawBufferPointer(start: chunk.base, count: chunk.capacity))
            if n > 0 {
                hasher.update(bufferPointer: UnsafeRawBufferPointer(start: chunk.base, count: n))
                total += Int64(n)
            }
            if n < chunk.capacity { break }
        }
        return StreamDigest(diffID: "sha256:" + hex(hasher.finalize()), size: total)
    }
}
