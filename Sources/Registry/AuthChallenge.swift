import Foundation

/// A parsed `WWW-Authenticate` challenge (RFC 7235): a scheme and its parameters.
struct AuthChallenge: Sendable, Equatable {
    enum Scheme: Sendable, Equatable { case basic, bearer, other(String) }
    var scheme: Scheme
    var parameters: [String: String]

    var realm: String? { parameters["realm"] }
    var service: String? { parameters["service"] }
    var scope: String? { parameters["scope"] }

    /// Parses the first challenge of a header value such as
    /// `Bearer realm="https://auth.example/token",service="registry",scope="repository:a/b:pull,push"`.
    init?(header: String) {
        var rest = Substring(header).drop(while: { $0 == " " })
        let schemeName = rest.prefix(while: { $0 != " " })
        guard !schemeName.isEmpty else { return nil }
        switch schemeName.lowercased() {
        case "basic": scheme = .basic
        case "bearer": scheme = .bearer
        default: scheme = .other(String(schemeName))
        }
        rest = rest.dropFirst(schemeName.count)
        parameters = [:]
        while true {
            rest = rest.drop(while: { $0 == " " || $0 == "," })
            guard let equals = rest.firstIndex(of: "=") else { break }
            let key = rest[..<equals].trimmingCharacters(in: .whitespaces).lowercased()
            rest = rest[rest.index(after: equals)...]
            var value = ""
            if rest.first == "\"" {
                rest = rest.dropFirst()
                var escaped = false
                while let character = rest.first {
                    rest = rest.dropFirst()
                    if escaped { value.append(character); escaped = false; continue }
                    if character == "\\" { escaped = true; continue }
                    if character == "\"" { break }
                    value.append(character)
                }
            } else {
                let token = rest.prefix(while: { $0 != "," })
                value = token.trimmingCharacters(in: .whitespaces)
                rest = rest.dropFirst(token.count)
            }
            parameters[key] = value
        }
    }
}
