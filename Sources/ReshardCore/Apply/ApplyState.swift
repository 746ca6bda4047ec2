import Foundation

/// What the workers of one `apply` share: slice progress, catch-up figures, throttle, pause,
/// retries in progress, events waiting to be written, and stop.
///
/// Workers never write events to the metadata themselves: they queue them here (`log`,
/// `noteRetry`) and the coordinator's control loop writes them, so an event raised while the
/// metadata database is away is written once it is back.
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

    /// An event for `reshard.events`, queued until the control loop writes it.
    struct Event: Equatable {
        var level: String
        var message: String
        var shard: String?
    }

    /// A source's replication lag as the lag checker last read it.
    enum Lag: Equatable {
        case seconds(Double)
        /// The lag could not be read: counts as lagging (the backfill pauses), with the reason.
        case unreadable(String)
    }

    /// `NSCondition` rather than a plain lock so that `wait(_:)` wakes up on stop.
    private let lock = NSCondition()
    private var slices: [SliceKey: Slice] = [:]
    private var sources: [String: Source] = [:]
    private var connectionsInUse: [String: Int] = [:]
    private var stopping = false
    private var failure: Error?
    private var pausedReason: String?
    private var limiter = RateLimiter()
    private var retrying: [String: RetryPolicy.Retry] = [:]
    private var events: [Event] = []
    private var lags: [String: Lag] = [:]
    /// Slices another process holds a live claim on (`SliceClaims`): not worth trying here.
    private var claimedElsewhere: Set<SliceKey> = []

    init(slices: [SliceKey: Slice], sources: [String]) {
        self.slices = slices
        for source in sources { self.sources[source] = Source() }
    }

    // MARK: stop and failure

    var isStopping: Bool { lock.withLock { stopping } }

    func stop() {
        lock.withLock {
            stopping = true
            lock.broadcast()
        }
    }

    /// Records the first fatal error and stops everything.
    func fail(_ error: Error) {
        lock.withLock {
            if failure == nil { failure = error }
            stopping = true
            lock.broadcast()
        }
    }

    /// Waits `seconds`, or less when a stop is requested meanwhile. Returns false when stopping.
    @discardableResult
    func wait(_ seconds: TimeInterval) -> Bool {
        let deadline = Date().addingTimeInterval(max(seconds, 0))
        return lock.withLock {
            while !stopping && lock.wait(until: deadline) {}
            return !stopping
        }
    }

    var firstFailure: Error? { lock.withLock { failure } }

    // MARK: slices

    /// Takes the next slice to copy whose source and target both have a connection to spare.
    func claimSlice(limitPerShard: Int) -> SliceKey? {
        lock.withLock {
            guard !stopping else { return nil }
            let pending = slices.filter { !$0.value.done && !$0.value.running && !claimedElsewhere.contains($0.key) }.keys
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

    /// Which slices other processes hold live claims on (`SliceClaims.tick`), or one more (a claim refused).
    func setClaimedElsewhere(_ keys: Set<SliceKey>) { lock.withLock { claimedElsewhere = keys } }

    func addClaimedElsewhere(_ key: SliceKey) { lock.withLock { _ = claimedElsewhere.insert(key) } }

    /// Sets a slice's checkpoint as the metadata records it (another process copies it, `SliceClaims`).
    func setCheckpoint(_ key: SliceKey, copied: Int64, lastKey: [String]?, done: Bool) {
        lock.withLock {
            guard slices[key] != nil else { return }
            slices[key]!.copied = copied
            slices[key]!.lastKey = lastKey
            slices[key]!.done = done
        }
    }

    var pendingSlices: Int { lock.withLock { slices.values.filter { !$0.done }.count } }

    /// Every slice counts, the rows that stay too: they are copied into the table built beside the live one.
    var copiedRows: Int64 { lock.withLock { slices.values.reduce(0) { $0 + $1.copied } } }

    var estimatedRows: Int64 { lock.withLock { slices.values.reduce(0) { $0 + $1.estimated } } }

    /// Per table: rows copied, rows estimated, all copied.
    var tableProgress: [(name: String, copied: Int64, estimated: Int64, done: Bool)] {
        lock.withLock {
            var byTable: [String: (Int64, Int64, Bool)] = [:]
            for (key, slice) in slices {
                var entry = byTable[key.table] ?? (0, 0, true)
                entry.0 += slice.copied
                entry.1 += slice.estimated
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

    // MARK: throttle and pause

    /// The rate limit in force (rows per second, nil for none).
    func setRateLimit(_ limit: Int?) { lock.withLock { limiter.setLimit(limit, at: Date()) } }

    var rateLimit: Int? { lock.withLock { limiter.limit } }

    /// The largest batch the limit allows (about one second of it), nil without a limit.
    var maxBatchRows: Int? { lock.withLock { limiter.maxBatchRows } }

    /// Blocks until `rows` may be copied under the rate limit, and reserves them; false when a
    /// stop came first. Asks again at least twice a second, so a new limit applies at once.
    func reserveRows(_ rows: Int) -> Bool {
        while true {
            let wait = lock.withLock { stopping ? -1 : limiter.reserve(rows, at: Date()) }
            if wait < 0 { return false }
            if wait == 0 { return true }
            self.wait(min(wait, 0.5))
        }
    }

    /// Settles a reservation once the batch copied `copied` of the `reserved` rows.
    func settleRows(reserved: Int, copied: Int) { lock.withLock { limiter.settle(unused: reserved - copied, at: Date()) } }

    /// Why the backfill is paused, nil while it copies.
    func setPaused(_ reason: String?) { lock.withLock { pausedReason = reason } }

    var isPaused: Bool { lock.withLock { pausedReason != nil } }

    var pauseReason: String? { lock.withLock { pausedReason } }

    func setLag(_ source: String, _ lag: Lag) { lock.withLock { lags[source] = lag } }

    var lag: [String: Lag] { lock.withLock { lags } }

    /// Why the backfill must pause now, or nil: the changelogs hold more than `maxBacklog`
    /// changes (the catch-up must keep up), or a source's replicas lag more than `maxLagSeconds`,
    /// or a source's lag cannot be read (not knowing is treated as lagging).
    func pauseReason(maxBacklog: Int64, maxLagSeconds: Double) -> String? {
        lock.withLock {
            var reasons: [String] = []
            let backlog = sources.values.reduce(0) { $0 + $1.backlog }
            if backlog > maxBacklog { reasons.append("changelog backlog \(backlog.grouped) > --max-backlog \(maxBacklog.grouped)") }
            for (source, lag) in lags.sorted(by: { $0.key < $1.key }) {
                switch lag {
                case .seconds(let seconds) where seconds > maxLagSeconds:
                    reasons.append(String(format: "replicas of %@ lag %.0fs > --max-replica-lag %.0fs", source, seconds, maxLagSeconds))
                case .unreadable(let why):
                    reasons.append("replication lag of \(source) cannot be read (\(why))")
                default:
                    break
                }
            }
            return reasons.isEmpty ? nil : reasons.joined(separator: "; ")
        }
    }

    // MARK: retries and events

    /// Queues an event for `reshard.events`.
    func log(_ message: String, level: String = "info", shard: String? = nil) {
        lock.withLock { events.append(Event(level: level, message: message, shard: shard)) }
    }

    /// Records that `work` failed and is retried, and queues the event saying so for the 1st,
    /// 2nd, 4th, 8th... failure in a row (a shard down for five minutes is a dozen events per
    /// worker, not a hundred; `status` shows the current attempt all along).
    func noteRetry(_ work: String, _ retry: RetryPolicy.Retry) {
        let message = String(
            format: "retrying %@: %@ (%@ attempt in %.1fs, failing since %@)", work, retry.error, MigrationStatus.Runtime.ordinal(retry.failures + 1),
            retry.delay, Self.clock(retry.since))
        lock.withLock {
            retrying[work] = retry
            if retry.failures & (retry.failures - 1) == 0 {
                events.append(Event(level: "warning", message: message, shard: retry.shard))
            }
        }
    }

    /// Records that `work` succeeded again after retries, with an event.
    func noteRecovered(_ work: String) {
        lock.withLock {
            guard let retry = retrying.removeValue(forKey: work) else { return }
            events.append(Event(level: "info", message: "\(work) recovered after \(retry.failures) failure(s)", shard: retry.shard))
        }
    }

    /// Work being retried right now, by what it is.
    var retries: [String: RetryPolicy.Retry] { lock.withLock { retrying } }

    /// The queued events, removed from the queue; `requeue` puts them back when writing failed.
    func takeEvents() -> [Event] {
        lock.withLock {
            defer { events = [] }
            return events
        }
    }

    func requeue(_ unwritten: [Event]) { lock.withLock { events = unwritten + events } }

    /// `12:00:01 UTC`
    static func clock(_ date: Date) -> String {
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let parts = calendar.dateComponents([.hour, .minute, .second], from: date)
        return String(format: "%02d:%02d:%02d UTC", parts.hour ?? 0, parts.minute ?? 0, parts.second ?? 0)
    }
}
