/// Waits for an event a test can observe (a log line, a file, a request reaching the proxy) by checking
/// `condition` every `interval`; throws when it has not happened within `timeout`. The timeout only bounds a
/// broken run: a correct one goes on as soon as the event happens, however loaded the machine is.
public func waitUntil(
    _ event: String, timeout: Duration = .seconds(60), interval: Duration = .milliseconds(20),
    _ condition: () async throws -> Bool
) async throws {
    let deadline = ContinuousClock.now + timeout
    while try await !condition() {
        guard ContinuousClock.now < deadline else { throw TestSupportError("gave up after \(timeout) waiting until \(event)") }
        try await Task.sleep(for: interval)
    }
}
