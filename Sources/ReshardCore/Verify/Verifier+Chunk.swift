import Foundation
import PostgresClient

/// What one chunk's verification found.
struct ChunkOutcome {
    var sources = RowSet()
    var targets = RowSet()
    var differences: [RowDifference] = []
    var rechecks = 0
}

extension Verifier {
    /// Compares one chunk: sums first; while they differ, waits for the chunk's pending changes and
    /// scans again; then narrows what still differs down to keys, and re-checks those keys the same
    /// way, so a row caught between its source commit and the catch-up is not reported.
    func verify(_ chunk: VerifyState.Chunk, with conns: ChunkConnections, drainer: PendingDrainer) throws -> ChunkOutcome {
        let sql = conns.sql(chunk.table)
        // An empty outcome would be recorded as a clean chunk: a chunk of no known table is an error.
        guard let table = tables.first(where: { $0.name.description == chunk.table }), sql.count == places.count else {
            throw ReshardError.failed("verify of \(plan.migration): chunk \(chunk.index) is of table \(chunk.table), which this run does not verify")
        }
        let ranges = try sql.map { try $0.rangeCondition(lower: chunk.lower, upper: chunk.upper) }
        let pendingInRange = try sql.map { try $0.logCondition(lower: chunk.lower, upper: chunk.upper) }
        var outcome = ChunkOutcome()
        // A second pass only when the keys all settled: its scan gives the chunk's counts as of a
        // moment the layouts agreed, rather than those of a scan caught mid-write.
        for pass in 0..<2 {
            var sums = try scanSums(conns, sql, ranges)
            var chunkRechecks = 0
            while sums.sources != sums.targets && chunkRechecks < options.rechecks {
                chunkRechecks += 1
                recheck(&outcome)
                try waitForPending(table, conns, sql, pendingInRange, drainer)
                sums = try scanSums(conns, sql, ranges)
            }
            (outcome.sources, outcome.targets) = sums
            guard sums.sources != sums.targets else { return outcome }

            var differences = try rowDifferences(table, conns, sql, ranges, targets: Array(plan.targets.indices))
            for _ in 0..<options.rechecks where !differences.isEmpty {
                recheck(&outcome)
                // By bytes: canonically equivalent keys are different rows (`RowComparison.KeyBytes`).
                let keys = Array(Set(differences.map { RowComparison.KeyBytes($0.key) })).map(\.key)
                try waitForPending(table, conns, sql, try sql.map { try $0.logKeyCondition(keys) }, drainer)
                let targets = Array(Set(differences.map { targetIndex($0.target) })).sorted()
                let again = try rowDifferences(table, conns, sql, try sql.map { try $0.keyCondition(keys) }, targets: targets)
                if again == differences { break }
                differences = again
            }
            outcome.differences = differences
            if !differences.isEmpty || pass == 1 { break }
        }
        return outcome
    }

    private func recheck(_ outcome: inout ChunkOutcome) {
        outcome.rechecks += 1
        state.recheck()
    }

    private func targetIndex(_ name: String) -> Int { plan.targets.firstIndex { $0.name == name } ?? 0 }

    /// The sources' rows and the targets' own rows in the chunk, as sums. One total per side is
    /// as strong as one per target: each target reads only the rows that map to it, so a row in
    /// the wrong place or missing changes the totals, and differences cancel out only by a
    /// 64-bit hash coincidence. The drill-down then says which target.
    func scanSums(_ conns: ChunkConnections, _ sql: [VerifySQL], _ conditions: [String]) throws -> (sources: RowSet, targets: RowSet) {
        var sums = (sources: RowSet(), targets: RowSet())
        for (i, (place, conn)) in conns.places.enumerated() {
            let result = try conn.query(sql[i].sums(where: conditions[i]))
            for r in 0..<result.rowCount {
                let t = try result.get(r, 0, as: Int.self)
                guard let sum = RowSet.hashSum(fromServer: result[r, 2] ?? "") else {
                    throw ReshardError.failed("unexpected hash sum '\(result[r, 2] ?? "")' from \(place.shard)")
                }
                let set = RowSet(rows: try result.get(r, 1, as: Int64.self), hashSum: sum)
                if place.countsForSources { sums.sources += set }
                if place.countsForTarget(t) { sums.targets += set }
            }
        }
        return sums
    }

    /// The keys that differ, for the given targets, among the rows matching `conditions`.
    func rowDifferences(
        _ table: Plan.Table, _ conns: ChunkConnections, _ sql: [VerifySQL], _ conditions: [String], targets: [Int]
    ) throws -> [RowDifference] {
        var sourceRows: [Int: [RowComparison.SourceRow]] = [:]
        var targetRows: [Int: [(key: [String], hash: Int64)]] = [:]
        let decoder = JSONDecoder()
        let wanted = Set(targets)
        for (i, (place, conn)) in conns.places.enumerated() {
            let only = "\(sql[i].targetIndex) IN (\(targets.map(String.init).joined(separator: ", ")))"
            let result = try conn.query(sql[i].rows(where: "\(conditions[i]) AND \(only)"))
            for r in 0..<result.rowCount {
                let t = try result.get(r, 0, as: Int.self)
                guard wanted.contains(t) else { continue }
                let key = try decoder.decode([String].self, from: Data(result[r, 1]!.utf8))
                let hash = try result.get(r, 2, as: Int64.self)
                if let source = place.source {
                    sourceRows[t, default: []].append(.init(source: source.name, key: key, hash: hash))
                }
                if place.countsForTarget(t) { targetRows[t, default: []].append((key, hash)) }
            }
        }
        return targets.flatMap { t in
            RowComparison.differences(
                table: table.name.description, target: plan.targets[t].name, sourceRows: sourceRows[t] ?? [], targetRows: targetRows[t] ?? [])
        }
    }

    /// Waits until no source's changelog holds an entry matching `conditions` (per place), applying
    /// them itself when no coordinator runs; gives up after `pendingTimeoutSeconds`.
    func waitForPending(
        _ table: Plan.Table, _ conns: ChunkConnections, _ sql: [VerifySQL], _ conditions: [String], _ drainer: PendingDrainer
    ) throws {
        let log = Shim.logTable(migration: plan.migration, table: table)
        let deadline = Date().addingTimeInterval(options.pendingTimeoutSeconds)
        // The sources whose changelog exists (once the shim is removed there is nothing to wait for).
        var logged: [Int] = []
        for (i, (place, conn)) in conns.places.enumerated() where place.source != nil {
            if try conn.query("SELECT to_regclass($1) IS NOT NULL", [log]).get(0, 0, as: Bool.self) { logged.append(i) }
        }
        while true {
            var pending = 0
            for i in logged {
                pending += try conns.places[i].connection.query("SELECT count(*) FROM \(log) WHERE \(conditions[i])").get(0, 0, as: Int.self)
            }
            if pending == 0 || Date() > deadline || state.isStopping { return }
            if try !drainer.drain(table) { usleep(50_000) }
        }
    }
}

/// Applies pending changelog entries on verify's behalf when no `apply` runs: under the catch-up
/// lock (`MetadataLock.catchUp`, which a coordinator holds for its life, so the two never apply
/// the same log at once), with the catch-up's own code. One at a time.
final class PendingDrainer: @unchecked Sendable {
    let plan: Plan
    let shards: [String: ConnectionString]
    let metadataDSN: ConnectionString
    private let lock = NSLock()
    private var meta: PGConnection?
    private var appliers: [CatchUpApplier] = []
    private let gate = CatchUpGate(limitPerShard: 2)

    init(plan: Plan, shards: [String: ConnectionString], metadata: ConnectionString) {
        self.plan = plan
        self.shards = shards
        self.metadataDSN = metadata
    }

    /// Applies `table`'s pending entries from every source. Returns false when a coordinator runs
    /// or is starting (its catch-up will apply them).
    func drain(_ table: Plan.Table) throws -> Bool {
        try lock.withLock {
            if meta == nil || !meta!.isHealthy || appliers.contains(where: { !$0.isHealthy }) {
                meta = nil
                appliers = []
                meta = try PGConnection.connect(metadataDSN, applicationName: "reshard verify")
                appliers = try plan.sources.map { source in
                    try CatchUpApplier.connecting(plan: plan, source: source.name, gate: gate) { [shards] in
                        try PGConnection.connect(shards[$0]!, applicationName: "reshard verify", settings: CanonicalText.settings)
                    }
                }
            }
            // The catch-up lock keeps a coordinator's catch-up out while this applies; the lease
            // is only looked at, never taken, so an `apply` starting now is not refused: it waits
            // for the catch-up lock, and from then on its catch-up applies the changes.
            guard try MetadataLock.catchUp.tryLock(plan.migration, on: meta!) else { return false }
            defer { try? MetadataLock.catchUp.unlock(plan.migration, on: meta!) }
            let leaseHeld = try meta!.query("SELECT \(MetadataLock.apply.isHeldSQL(migrationParameter: 1))", [plan.migration])
            guard !(try leaseHeld.get(0, 0, as: Bool.self)) else { return false }
            for applier in appliers {
                for _ in 0..<20 {
                    if try applier.applyRound(tables: [table]).drained { break }
                }
            }
            return true
        }
    }
}

/// The chunks still to verify and the figures for progress, shared by the workers.
final class VerifyState: @unchecked Sendable {
    struct Chunk: Sendable {
        let table: String
        let index: Int
        let lower: [String]?
        let upper: [String]?
    }

    private let lock = NSLock()
    private var queue: [Chunk] = []
    private var total = 0, done = 0, doneThisRun = 0, rechecks = 0
    private var rows: Int64 = 0, differences: Int64 = 0
    private var startedAt = Date()
    private var stopping = false
    private(set) var firstFailure: Error?

    func start(chunks: [Chunk], total: Int, done: Int, rows: Int64) {
        lock.withLock {
            queue = chunks.reversed()
            self.total = total
            self.done = done
            self.rows = rows
            startedAt = Date()
        }
    }

    func claim() -> Chunk? { lock.withLock { stopping ? nil : queue.popLast() } }

    func finished(_ chunk: Chunk, _ outcome: ChunkOutcome) {
        lock.withLock {
            done += 1
            doneThisRun += 1
            rows += outcome.sources.rows
            differences += Int64(outcome.differences.count)
        }
    }

    func recheck() { lock.withLock { rechecks += 1 } }

    func progress() -> (done: Int, doneThisRun: Int, total: Int, rows: Int64, differences: Int64, rechecks: Int, startedAt: Date) {
        lock.withLock { (done, doneThisRun, total, rows, differences, rechecks, startedAt) }
    }

    func stop() { lock.withLock { stopping = true } }
    var isStopping: Bool { lock.withLock { stopping } }

    func fail(_ error: Error) {
        lock.withLock {
            if firstFailure == nil { firstFailure = error }
            stopping = true
        }
    }
}
