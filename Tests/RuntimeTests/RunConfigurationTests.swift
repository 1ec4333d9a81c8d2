import Foundation
import Testing
import TestSupport

@testable import Runtime

/// `--bind SRC:DST[:ro|rw]`.
@Suite(.tags(.unit)) struct BindMountTests {
    @Test func goodBindsParse() throws {
        #expect(try BindMount(parsing: "/host/data:/data") == BindMount(source: "/host/data", destination: "/data", readOnly: false))
        #expect(try BindMount(parsing: "/host/data:/data:ro") == BindMount(source: "/host/data", destination: "/data", readOnly: true))
        #expect(try BindMount(parsing: "/host/data:/data:rw").readOnly == false)
        // Relative sources are taken from the given directory; paths are normalised.
        #expect(
            try BindMount(parsing: "data/../input/:/work/./in/", relativeTo: "/home/me")
                == BindMount(source: "/home/me/input", destination: "/work/in", readOnly: false))
    }

    @Test func bindPrintsAsItIsWritten() throws {
        #expect(try BindMount(parsing: "/a:/b:ro").description == "/a:/b:ro")
        #expect(try BindMount(parsing: "/a:/b:rw").description == "/a:/b")
    }

    @Test(arguments: [
        ("/only-one-field", "expected two or three fields separated by ':'"),
        ("/a:/b:ro:extra", "expected two or three fields separated by ':'"),
        ("/a:/b:rx", "the third field must be ro or rw, not 'rx'"),
        (":/b", "the source is empty"),
        ("/a:relative", "the destination must be an absolute path"),
        ("/a:/", "the destination cannot be /"),
        ("/a:/b/..", "the destination cannot be /"),
    ])
    func badBindsAreRefusedWithTheirReason(_ text: String, _ reason: String) {
        #expect {
            try BindMount(parsing: text)
        } throws: { error in
            "\(error)" == "--bind \(text): \(reason); the form is SRC:DST[:ro]"
        }
    }

    @Test func specMountIsABindWithoutSetuidOrDevices() throws {
        let readOnly = try BindMount(parsing: "/a:/b:ro").specMount
        #expect(readOnly == RuntimeSpec.Mount(destination: "/b", type: "bind", source: "/a", options: ["rbind", "ro", "nosuid", "nodev"]))
        #expect(try BindMount(parsing: "/a:/b").specMount.options == ["rbind", "rw", "nosuid", "nodev"])
    }
}

/// What `slipway run` checks before it fetches or mounts anything.
@Suite(.tags(.unit)) struct RunConfigurationValidationTests {
    @Test func goodOptionsPass() throws {
        let directory = try ScratchDirectory()
        try RunConfiguration(
            environment: ["A=1", "EMPTY="], workingDirectory: "/srv", user: "1000:100", binds: [BindMount(source: directory.path, destination: "/data")]
        ).validate()
        try RunConfiguration(user: "app").validate()
    }

    @Test(arguments: ["NOEQUALS", "=value"])
    func environmentWithoutAKeyIsRefused(_ variable: String) {
        #expect {
            try RunConfiguration(environment: [variable]).validate()
        } throws: { error in
            "\(error)" == "--env \(variable): the form is KEY=VALUE"
        }
    }

    @Test func relativeWorkingDirectoryIsRefused() {
        #expect {
            try RunConfiguration(workingDirectory: "srv").validate()
        } throws: { error in
            "\(error)" == "working directory srv must be an absolute path"
        }
    }

    @Test(arguments: ["", ":100", "1000:"])
    func malformedUserIsRefused(_ user: String) {
        #expect {
            try RunConfiguration(user: user).validate()
        } throws: { error in
            "\(error)" == "user '\(user)': the form is uid[:gid] or name[:group]"
        }
    }

    @Test func missingBindSourceIsRefused() throws {
        let directory = try ScratchDirectory()
        let missing = directory.sub("absent")
        #expect {
            try RunConfiguration(binds: [BindMount(source: missing, destination: "/data")]).validate()
        } throws: { error in
            "\(error)".hasPrefix("--bind source \(missing) does not exist")
        }
    }
}
