/// Runs `body` with a started `resource` and then stops it, also when `body` throws: the one shape behind
/// `withRegistry`, `withProxy`, `withServer` and `withCache`.
public func withStopped<Resource, T>(
    _ resource: Resource, stop: (Resource) async -> Void, _ body: (Resource) async throws -> T
) async throws -> T {
    do {
        let result = try await body(resource)
        await stop(resource)
        return result
    } catch {
        await stop(resource)
        throw error
    }
}
