import Foundation

/// What the workers of one `apply` share: slice progress, catch-up figures, throttle and stop.
///
/// Why `@unchecked Sendable`: every field is read and written under `lock`.
final class ApplyState: @unchecked Sendable {
    struct SliceKey: Hashable {
        var table: String
        var source: String
        var target: String
    }

    struct Slice {
        var estimated: Int64
        var copied: Int64
        var lastKey: [String]?
        var done: Bool
        var staysInPlace: Bool
        var running = false
    }

    struct Source {
        var backlog: Int64 = 0
        var oldest: String?
        var applied: Int64 = 0
        var drained = false
    }

    private let lock = NSLock()
    private var slices: [SliceKey: Slice] = [:]
    private var sources: [String: Source] = [:]
    private var connectionsInUse: [String: Int] = [:]
    private var stopping = false
    private var failure: Error?
    private var paused = false
    private var maxRowsPerSecond: Int?
    private var tokens = 0.0
    private var lastRefill = Date()

    init(slices: [SliceKey: Slice], sources: [String]) {
        self.slices = slices
        for source in sources { self.sources[source] = Source() }
    }

    // MARK: stop and failure

    var isStopping: Bool { lock.withLock { stopping } }

    func stop() { lock.withLock { stopping = true } }

    /// Records the first fatal error and stops everything.
    func fail(_ error: Error) {
        lock.withLock {
            if failure == nil { failure = error }
            stopping = true
        }
    }

    var firstFailure: Error? { lock.withLock { failure } }

    // MARK: slices

    /// Takes the next slice to copy whose source and target both have a connection to spare.
    func claimSlice(limitPerShard: Int) -> SliceKey? {
        lock.withLock {
            guard !stopping else { return nil }
            let pending = slices.filter { !$0.value.done && !$0.value.running }.keys
                .sorted { ($0.table, $0.source, $0.target) < ($1.table, $1.source, $1.target) }
            for key in pending
            where connectionsInUse[key.source, default: 0] < limitPerShard && connectionsInUse["target:" + key.target, default: 0] < limitPerShard {
                slices[key]!.running = true
                connectionsInUse[key.source, default: 0] += 1
                connectionsInUse["target:" + key.target, default: 0] += 1
                return key
            }
            return nil
        }
    }

    func release(_ key: SliceKey) {
        lock.withLock {
            slices[key]?.running = false
            connectionsInUse[key.source, default: 1] -= 1
            connectionsInUse["target:" + key.target, default: 1] -= 1
        }
    }

    func slice(_ key: SliceKey) -> Slice { lock.withLock { slices[key]! } }

    func recordBatch(_ key: SliceKey, rows: Int, lastKey: [String]?, done: Bool) {
        lock.withLock {
            slices[key]!.copied += Int64(rows)
            slices[key]!.lastKey = lastKey
            slices[key]!.done = done
        }
    }

    var pendingSlices: Int { lock.withLock { slices.values.filter { !$0.done }.count } }

    var copiedRows: Int64 { lock.withLock { slices.values.filter { !$0.staysInPlace }.reduce(0) { $0 + $1.copied } } }

    var estimatedRows: Int64 { lock.withLock { slices.values.filter { !$0.staysInPlace }.reduce(0) { $0 + $1.estimated } } }

    /// Per table (moving slices only): rows copied, rows estimated, all copied.
    var tableProgress: [(name: String, copied: Int64, estimated: Int64, done: Bool)] {
        lock.withLock {
            var byTable: [String: (Int64, Int64, Bool)] = [:]
            for (key, slice) in slices {
                var entry = byTable[key.table] ?? (0, 0, true)
                if !slice.staysInPlace {
                    entry.0 += slice.copied
                    entry.1 += slice.estimated
                }
                entry.2 = entry.2 && slice.done
                byTable[key.table] = entry
            }
            return byTable.sorted { $0.key < $1.key }.map { ($0.key, $0.value.0, $0.value.1, $0.value.2) }
        }
    }

    /// Tables whose slices from `source` are all copied: their changes can be applied.
    func copiedTables(from source: String) -> Set<String> {
        lock.withLock {
            var byTable: [String: Bool] = [:]
            for (key, slice) in slices where key.source == source { byTable[key.table, default: true] = byTable[key.table, default: true] && slice.done }
            return Set(byTable.filter(\.value).keys)
        }
    }

    // MARK: catch-up

    func recordCatchUp(source: String, applied: Int, drained: Bool, backlog: (Int64, String?)?) {
        lock.withLock {
            sources[source]!.applied += Int64(applied)
            sources[source]!.drained = drained
            if let backlog { (sources[source]!.backlog, sources[source]!.oldest) = backlog }
        }
    }

    var catchUp: [String: Source] { lock.withLock { sources } }

    /// Every source drained its changelog in its last round, with every table copied.
    var caughtUp: Bool { lock.withLock { slices.values.allSatisfy(\.done) && sources.values.allSatisfy(\.drained) } }

    // MARK: throttle

    func setThrottle(maxRowsPerSecond: Int?, paused: Bool) {
        lock.withLock {
            self.maxRowsPerSecond = maxRowsPerSecond
            self.paused = paused
        }
    }

    var isPaused: Bool { lock.withLock { paused } }

    /// How long a worker about to copy `rows` rows must wait to respect `--max-rows-per-second`.
    func throttleDelay(rows: Int) -> TimeInterval {
        lock.withLock {
            guard let rate = maxRowsPerSecond else { return 0 }
            let now = Date()
            tokens = min(Double(rate), tokens + now.timeIntervalSince(lastRefill) * Double(rate))
            lastRefill = now
            tokens -= Double(rows)
            return tokens >= 0 ? 0 : -tokens / Double(rate)
        }
    }
}
