/// Little-endian numbers and length-prefixed strings in byte arrays, for the small binary files Slipway keeps in
/// its store (layer entry listings, squashfs block indexes) and for squashfs itself.
extension [UInt8] {
    package mutating func appendLE<T: FixedWidthInteger>(_ value: T) {
        Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
    }

    /// The string's UTF-8 bytes behind their count (32 bits).
    package mutating func appendString(_ text: String) {
        let bytes = Array(text.utf8)
        appendLE(UInt32(bytes.count))
        self += bytes
    }
}

/// Reads what `appendLE` and `appendString` wrote; every read answers nil past the end.
package struct LittleEndianReader {
    package let bytes: [UInt8]
    package var position: Int

    package init(bytes: [UInt8], position: Int = 0) {
        self.bytes = bytes
        self.position = position
    }

    package mutating func bytes(_ count: Int) -> [UInt8]? {
        guard count >= 0, count <= bytes.count - position else { return nil }
        defer { position += count }
        return Array(bytes[position..<position + count])
    }

    package mutating func u8() -> UInt8? { bytes(1)?.first }

    package mutating func u32() -> UInt32? {
        bytes(4).map { $0.enumerated().reduce(0) { $0 | UInt32($1.element) << (8 * $1.offset) } }
    }

    package mutating func u64() -> UInt64? {
        bytes(8).map { $0.enumerated().reduce(0) { $0 | UInt64($1.element) << (8 * $1.offset) } }
    }

    package mutating func string() -> String? {
        guard let length = u32(), let raw = bytes(Int(length)) else { return nil }
        return String(decoding: raw, as: UTF8.self)
    }
}
