import Synchronization

/// Counters for `/metrics`, in Prometheus' text format.
final class CacheMetrics: Sendable {
    enum Counter: String, CaseIterable, Sendable {
        case blobHits = "slipway_cache_blob_hits_total"
        case blobMisses = "slipway_cache_blob_misses_total"
        case blobFillJoins = "slipway_cache_blob_fill_joins_total"
        case rangePassthroughs = "slipway_cache_range_passthrough_total"
        case manifestHits = "slipway_cache_manifest_hits_total"
        case manifestMisses = "slipway_cache_manifest_misses_total"
        case manifestRevalidations = "slipway_cache_manifest_revalidations_total"
        case staleManifestsServed = "slipway_cache_stale_manifests_served_total"
        case upstreamBytes = "slipway_cache_upstream_bytes_total"
        case servedBytes = "slipway_cache_served_bytes_total"
        case fillsStarted = "slipway_cache_fills_started_total"
        case fillsFailed = "slipway_cache_fills_failed_total"
        case evictedBlobs = "slipway_cache_evicted_blobs_total"
        case evictedBytes = "slipway_cache_evicted_bytes_total"
        case clientErrors = "slipway_cache_client_errors_total"
        case upstreamErrors = "slipway_cache_upstream_errors_total"
        case indexesBuilt = "slipway_cache_gzip_indexes_built_total"
        case indexBuildFailures = "slipway_cache_gzip_index_failures_total"

        var help: String {
            switch self {
            case .blobHits: return "Blob requests answered from the store."
            case .blobMisses: return "Blob requests that started an upstream fill."
            case .blobFillJoins: return "Blob requests that joined a fill already running."
            case .rangePassthroughs: return "Range requests on a blob still filling that were fetched upstream as ranges."
            case .manifestHits: return "Manifest requests answered from the store."
            case .manifestMisses: return "Manifest requests fetched from upstream."
            case .manifestRevalidations: return "Tags checked upstream with HEAD after their TTL."
            case .staleManifestsServed: return "Tags served from the store because upstream could not be asked."
            case .upstreamBytes: return "Bytes received from upstream registries."
            case .servedBytes: return "Body bytes sent to clients."
            case .fillsStarted: return "Upstream blob fills started."
            case .fillsFailed: return "Upstream blob fills that failed (nothing was stored)."
            case .evictedBlobs: return "Blobs removed by the size limit."
            case .evictedBytes: return "Bytes removed by the size limit."
            case .clientErrors: return "Requests answered with 4xx."
            case .upstreamErrors: return "Requests answered with 5xx because of upstream."
            case .indexesBuilt: return "Gzip indexes built while their layer filled (serve --index)."
            case .indexBuildFailures: return "Layers that could not be indexed (not gzip, a failed or restarted fill)."
            }
        }
    }

    enum Gauge: String, CaseIterable, Sendable {
        case fillsInFlight = "slipway_cache_fills_in_flight"
        case storeBytes = "slipway_cache_store_bytes"
        case indexBuildsInFlight = "slipway_cache_gzip_index_builds_in_flight"

        var help: String {
            switch self {
            case .fillsInFlight: return "Upstream blob fills running now."
            case .storeBytes: return "Bytes of blobs in the store, as tracked for the size limit."
            case .indexBuildsInFlight: return "Gzip indexes being built now."
            }
        }
    }

    /// Request latency buckets in seconds, from a warm manifest to a cold multi-GB layer.
    static let buckets: [Double] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 300]

    private struct State {
        var counters: [Counter: Int64] = [:]
        var gauges: [Gauge: Int64] = [:]
        var latency: [String: (buckets: [Int64], sum: Double, count: Int64)] = [:]
    }
    private let state = Mutex(State())

    func add(_ counter: Counter, _ amount: Int64 = 1) {
        state.withLock { $0.counters[counter, default: 0] += amount }
    }

    func set(_ gauge: Gauge, _ value: Int64) { state.withLock { $0.gauges[gauge] = value } }
    func adjust(_ gauge: Gauge, by delta: Int64) { state.withLock { $0.gauges[gauge, default: 0] += delta } }

    func observe(kind: String, seconds: Double) {
        state.withLock { state in
            var entry = state.latency[kind] ?? (Array(repeating: 0, count: Self.buckets.count), 0, 0)
            for (index, bound) in Self.buckets.enumerated() where seconds <= bound { entry.buckets[index] += 1 }
            entry.sum += seconds
            entry.count += 1
            state.latency[kind] = entry
        }
    }

    func render() -> String {
        let snapshot = state.withLock { $0 }
        var text = ""
        for counter in Counter.allCases {
            text += "# HELP \(counter.rawValue) \(counter.help)\n# TYPE \(counter.rawValue) counter\n\(counter.rawValue) \(snapshot.counters[counter] ?? 0)\n"
        }
        for gauge in Gauge.allCases {
            text += "# HELP \(gauge.rawValue) \(gauge.help)\n# TYPE \(gauge.rawValue) gauge\n\(gauge.rawValue) \(snapshot.gauges[gauge] ?? 0)\n"
        }
        let name = "slipway_cache_request_duration_seconds"
        text += "# HELP \(name) Time to answer a request, by kind.\n# TYPE \(name) histogram\n"
        for kind in snapshot.latency.keys.sorted() {
            let entry = snapshot.latency[kind]!
            for (index, bound) in Self.buckets.enumerated() {
                text += "\(name)_bucket{kind=\"\(kind)\",le=\"\(bound)\"} \(entry.buckets[index])\n"
            }
            text += "\(name)_bucket{kind=\"\(kind)\",le=\"+Inf\"} \(entry.count)\n"
            text += "\(name)_sum{kind=\"\(kind)\"} \(entry.sum)\n\(name)_count{kind=\"\(kind)\"} \(entry.count)\n"
        }
        return text
    }
}
