import Foundation

/// containerd's filter syntax as `List` receives it: `labels."containerd.io/snapshot.ref"==sha256:…,parent==…`.
/// Selectors joined by `,` must all match; a field alone (`labels.x`) matches when present; `==`, `!=` and `~=`
/// (a regular expression) compare. Several filters passed to `List` match when any one does. Fields of a
/// snapshot: `name`, `parent`, `kind` and `labels.KEY`.
public struct SnapshotFilter: Sendable {
    struct Selector: Sendable {
        enum Comparison: Sendable {
            case present
            case equal(String)
            case notEqual(String)
            case matches(String)
        }

        var field: [String]
        var comparison: Comparison
    }

    let selectors: [Selector]

    /// Parses one filter; throws `invalidArgument` naming the position of what it cannot read.
    public init(parsing text: String) throws {
        var scanner = FilterScanner(Array(text.unicodeScalars))
        var selectors: [Selector] = []
        repeat {
            selectors.append(try scanner.selector())
        } while try scanner.comma()
        self.selectors = selectors
    }

    public func matches(_ snapshot: Snapshot) -> Bool {
        selectors.allSatisfy { selector in
            let value = Self.value(of: selector.field, in: snapshot)
            switch selector.comparison {
            case .present: return value != nil
            case .equal(let expected): return value == expected
            case .notEqual(let expected): return value != expected
            case .matches(let pattern):
                guard let value, let regex = try? NSRegularExpression(pattern: pattern) else { return false }
                return regex.firstMatch(in: value, range: NSRange(value.startIndex..., in: value)) != nil
            }
        }
    }

    private static func value(of field: [String], in snapshot: Snapshot) -> String? {
        switch field.first {
        case "name": return field.count == 1 ? snapshot.name : nil
        case "parent": return field.count == 1 ? snapshot.parent : nil
        case "kind": return field.count == 1 ? snapshot.kind.rawValue : nil
        case "labels": return field.count == 2 ? snapshot.labels[field[1]] : nil
        default: return nil
        }
    }
}

/// Reads a filter's characters: field paths of bare or quoted components, operators, bare or quoted values.
private struct FilterScanner {
    private let characters: [Unicode.Scalar]
    private var position = 0

    init(_ characters: [Unicode.Scalar]) { self.characters = characters }

    mutating func selector() throws -> SnapshotFilter.Selector {
        var field = [try component()]
        while peek == "." {
            position += 1
            field.append(try component())
        }
        let comparison: SnapshotFilter.Selector.Comparison
        if consume("==") {
            comparison = .equal(try value())
        } else if consume("!=") {
            comparison = .notEqual(try value())
        } else if consume("~=") {
            comparison = .matches(try value())
        } else {
            comparison = .present
        }
        return SnapshotFilter.Selector(field: field, comparison: comparison)
    }

    /// True after a `,` (another selector follows), false at the end; throws on anything else.
    mutating func comma() throws -> Bool {
        guard let next = peek else { return false }
        guard next == "," else { throw unexpected("',' or the end") }
        position += 1
        return true
    }

    private var peek: Unicode.Scalar? { position < characters.count ? characters[position] : nil }

    private mutating func consume(_ text: String) -> Bool {
        let wanted = Array(text.unicodeScalars)
        guard characters[position...].starts(with: wanted) else { return false }
        position += wanted.count
        return true
    }

    private mutating func component() throws -> String {
        if let quote = peek, quote == "\"" || quote == "`" { return try quoted() }
        let start = position
        while let next = peek, next.properties.isAlphabetic || next.properties.numericType != nil || next == "_" || next == "-" {
            position += 1
        }
        guard position > start else { throw unexpected("a field name") }
        return String(String.UnicodeScalarView(characters[start..<position]))
    }

    private mutating func value() throws -> String {
        if let quote = peek, quote == "\"" || quote == "`" { return try quoted() }
        let start = position
        while let next = peek, next != "," { position += 1 }
        guard position > start else { throw unexpected("a value") }
        return String(String.UnicodeScalarView(characters[start..<position]))
    }

    /// `"…"` with backslash escapes of `"` and `\`, or a raw `` `…` ``.
    private mutating func quoted() throws -> String {
        let quote = characters[position]
        position += 1
        var result = String.UnicodeScalarView()
        while let next = peek {
            position += 1
            if next == quote { return String(result) }
            if next == "\\", quote == "\"", let escaped = peek {
                position += 1
                result.append(escaped)
            } else {
                result.append(next)
            }
        }
        throw SnapshotError.invalidArgument("filter: unterminated quote")
    }

    private func unexpected(_ wanted: String) -> SnapshotError {
        let found = peek.map { "'\($0)'" } ?? "the end"
        return .invalidArgument("filter: expected \(wanted) at position \(position + 1), found \(found)")
    }
}
