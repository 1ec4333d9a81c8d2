import Foundation

/// A throwaway certificate authority and a server certificate for 127.0.0.1 and localhost, made with the openssl
/// command, so tests can run a registry over real TLS that only a client trusting the CA accepts.
public struct TLSFiles: Sendable {
    public var caCertificate: String
    public var certificate: String
    public var key: String

    public static func generate(in directory: URL) async throws -> TLSFiles {
        let dir = directory.path
        let files = TLSFiles(caCertificate: "\(dir)/ca.pem", certificate: "\(dir)/server.pem", key: "\(dir)/server.key")
        try "subjectAltName=IP:127.0.0.1,DNS:localhost\n".write(toFile: "\(dir)/san.ext", atomically: true, encoding: .utf8)
        let steps: [[String]] = [
            ["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
             "-subj", "/CN=slipway test CA", "-keyout", "\(dir)/ca.key", "-out", files.caCertificate],
            ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-subj", "/CN=127.0.0.1", "-keyout", files.key, "-out", "\(dir)/server.csr"],
            ["x509", "-req", "-in", "\(dir)/server.csr", "-CA", files.caCertificate, "-CAkey", "\(dir)/ca.key",
             "-CAcreateserial", "-days", "2", "-extfile", "\(dir)/san.ext", "-out", files.certificate],
        ]
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/openssl") else {
            throw TestSupportError("openssl not found: install Debian's openssl package (scripts/test does)")
        }
        for arguments in steps {
            let step = try await run("/usr/bin/openssl", arguments)
            guard step.status == 0 else { throw TestSupportError("openssl \(arguments[0]) failed: \(step.stderr)") }
        }
        return files
    }
}
