import Foundation

/// The files a workload reads, in first-access order, for `slipway convert --prioritize`: they go to the front of
/// their layer so a lazy mount prefetches them in one request.
///
/// Read from one path per line, or from the JSON lines `ctr-remote image optimize --record-out` writes
/// (`{"path": ..., "layerIndex": ...}`), whose layer index then limits a path to that layer. A plain path is
/// offered to every layer and prioritized in each layer that has it.
public struct PrioritizedFiles: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        public var path: String
        public var layerIndex: Int?
    }

    public var entries: [Entry]

    public init(entries: [Entry] = []) { self.entries = entries }

    public var isEmpty: Bool { entries.isEmpty }

    public init(contentsOf path: String) throws {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            throw ConvertError.unreadableList(path)
        }
        try self.init(parsing: text, source: path)
    }

    public init(parsing text: String, source: String = "list") throws {
        struct Record: Decodable {
            var path: String
            var layerIndex: Int?
        }
        var entries: [Entry] = []
        // "\r\n" is one Character, which never equals "\n": a list saved on Windows has lines only if it is split too.
        for (number, line) in text.split(omittingEmptySubsequences: false, whereSeparator: { $0 == "\n" || $0 == "\r\n" }).enumerated() {
            if line.allSatisfy(\.isWhitespace) { continue }
            if line.first == "{" {
                guard let record = try? JSONDecoder().decode(Record.self, from: Data(line.utf8)) else {
                    throw ConvertError.malformedListLine(source: source, line: number + 1)
                }
                entries.append(Entry(path: record.path, layerIndex: record.layerIndex))
            } else {
                entries.append(Entry(path: String(line), layerIndex: nil))
            }
        }
        self.entries = entries
    }

    /// The paths offered to layer `index`, in access order.
    public func paths(forLayer index: Int) -> [String] {
        entries.filter { $0.layerIndex == nil || $0.layerIndex == index }.map(\.path)
    }
}
