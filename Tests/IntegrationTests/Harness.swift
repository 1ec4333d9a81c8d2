import TestSupport

/// A real docker-registry with a fault-injecting proxy in front of it, both stopped when `body` returns.
func withRegistryAndProxy<T>(auth: BasicCredentials? = nil, _ body: (RegistryProcess, FaultProxy) async throws -> T) async throws -> T {
    try await RegistryProcess.withRegistry(auth: auth) { registry in
        try await FaultProxy.withProxy(upstream: registry) { proxy in
            try await body(registry, proxy)
        }
    }
}
