#if canImport(Glibc)
import Glibc
#endif

/// An extracted layer's file that cannot be read while its entries are listed.
public struct LayerDirectoryError: Error, CustomStringConvertible {
    public var path: String
    public var errno: Int32
    public var description: String { "\(path): \(String(cString: strerror(errno)))" }
}
