import Foundation
import PostgresClient

/// Runs `reshard apply`: holds the lease, registers or resumes the migration, and carries out
/// the state machine's actions with worker threads (one connection each, never on Swift's
/// cooperative pool). All progress lives in the metadata, so a coordinator killed at any moment
/// is replaced by running `apply` again.
public final class Coordinator: @unchecked Sendable {
    public let plan: Plan
    let shards: [String: ConnectionString]
    let metadataDSN: ConnectionString
    let options: ApplyOptions
    let state: ApplyState
    private var threads: [Thread] = []
    private let finished = DispatchGroup()
    private var backfillStarted = false
    private var catchUpStarted = false

    /// - Parameter shards: connection strings by shard name (sources and targets).
    public init(plan: Plan, shards: [String: ConnectionString], metadata: ConnectionString, options: ApplyOptions) {
        self.plan = plan
        self.shards = shards
        self.metadataDSN = metadata
        self.options = options
        var slices: [ApplyState.SliceKey: ApplyState.Slice] = [:]
        for table in plan.tables {
            for slice in table.slices {
                slices[.init(table: table.name.description, source: slice.source, target: slice.target)] = .init(
                    estimated: slice.estimatedRows, copied: 0, lastKey: nil, done: slice.staysInPlace,
                    staysInPlace: slice.staysInPlace)
            }
        }
        state = ApplyState(slices: slices, sources: plan.sources.map(\.name))
    }

    // MARK: - Run

    /// Runs until the goal is reached, `shouldStop` says so, or a fatal error.
    /// - Parameters:
    ///   - shouldStop: polled about twice a second (Ctrl-C).
    ///   - report: called about once a second with the progress.
    ///   - notice: a line for the user when the coordinator waits for something.
    /// - Returns: where it stopped and whether that was the goal (the CLI's exit code depends on it).
    @discardableResult
    public func run(
        shouldStop: () -> Bool, report: (ApplyProgress) -> Void, notice: (String) -> Void = { _ in }
    ) throws -> ApplyOutcome {
        let meta = try PGConnection.connect(metadataDSN, applicationName: "reshard apply")
        _ = try MetadataSchema.current.apply(to: meta)
        try acquireLease(meta)
        try acquireCatchUpLock(meta, notice: notice)
        let recorded = try register(meta)
        try loadCheckpoints(meta)

        var machine = MigrationStateMachine(migration: plan.migration, phase: recorded, goal: options.goal)
        var pending = try machine.resume()
        var lastTick = Date.distantPast
        var lastCopied = state.copiedRows
        var lastRateAt = Date()
        var rate = 0.0
        var stopRequested = false
        defer {
            state.stop()
            finished.wait()
        }
        while true {
            while !pending.isEmpty {
                let action = pending.removeFirst()
                switch action {
                case .prepare:
                    try prepare()
                    pending += try machine.prepared()
                case .record(let transition):
                    try record(transition, on: meta)
                case .runBackfillAndCatchUp:
                    startBackfill()
                    startCatchUp()
                case .runCatchUp:
                    startCatchUp()
                case .buildDeferredIndexes:
                    if !options.keepIndexes { try buildDeferredIndexes() }
                case .stop:
                    state.stop()
                    finished.wait()
                    if let failure = state.firstFailure { throw failure }
                    try persistProgress(meta)
                    let last = progress(machine.phase, rate: rate)
                    report(last)
                    return ApplyOutcome(goal: options.goal, reachedGoal: !stopRequested, progress: last)
                }
            }
            if let failure = state.firstFailure {
                try? recordError(failure, on: meta)
                throw failure
            }
            if shouldStop() {
                stopRequested = true
                pending += machine.stopRequested()
                continue
            }
            if machine.phase == .backfilling, state.pendingSlices == 0 {
                pending += try machine.backfillComplete()
                continue
            }
            if [.catchingUp, .inSync, .rolledBack].contains(machine.phase), state.caughtUp {
                pending += try machine.caughtUp()
                if !pending.isEmpty { continue }
            }
            if Date().timeIntervalSince(lastTick) >= 1 {
                lastTick = Date()
                try heartbeat(meta)
                try persistProgress(meta)
                try readThrottle(meta)
                let copied = state.copiedRows
                let elapsed = Date().timeIntervalSince(lastRateAt)
                rate = rate == 0 ? Double(copied - lastCopied) / elapsed : 0.7 * rate + 0.3 * Double(copied - lastCopied) / elapsed
                lastCopied = copied
                lastRateAt = Date()
                report(progress(machine.phase, rate: rate))
            }
            usleep(100_000)
        }
    }

    func progress(_ phase: MigrationPhase, rate: Double) -> ApplyProgress {
        let copied = state.copiedRows, estimated = state.estimatedRows
        let catchUp = state.catchUp.values
        return ApplyProgress(
            migration: plan.migration, phase: phase, rowsCopied: copied, rowsEstimated: estimated,
            rowsPerSecond: max(rate, 0), etaSeconds: rate > 1 && estimated > copied ? Double(estimated - copied) / rate : nil,
            backlog: catchUp.reduce(0) { $0 + $1.backlog }, changesApplied: catchUp.reduce(0) { $0 + $1.applied },
            paused: state.isPaused,
            tables: state.tableProgress.map { .init(name: $0.name, rowsCopied: $0.copied, rowsEstimated: $0.estimated, done: $0.done) })
    }

    // MARK: - Lease and registration

    /// The apply lease (`ApplyLease`): a second coordinator refuses, a dead one's lock dies with
    /// its connection.
    func acquireLease(_ meta: PGConnection) throws { try ApplyLease.acquire(plan.migration, on: meta) }

    /// The catch-up lock, held for the coordinator's life. `reshard verify` holds it while it
    /// applies pending changes itself; it lets go within a round, and drains nothing more once it
    /// sees the lease taken, so this waits rather than refusing.
    func acquireCatchUpLock(_ meta: PGConnection, notice: (String) -> Void, seconds: Double = 30) throws {
        let held = try MetadataLock.catchUp.lock(plan.migration, on: meta, waitingUpTo: seconds) {
            notice("migration \(plan.migration): waiting up to \(Int(seconds)) s for 'reshard verify' to finish applying changes")
        }
        guard held else {
            throw ReshardError.refused(
                "migration \(plan.migration): 'reshard verify' kept applying changes for \(Int(seconds)) s; run apply again")
        }
    }

    /// Registers a new migration, or checks that a registered one still matches the shards.
    /// Returns the recorded phase.
    func register(_ meta: PGConnection) throws -> MigrationPhase {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        let planJSON = String(decoding: try encoder.encode(plan), as: UTF8.self)
        return try meta.transaction { conn in
            let existing = try conn.query("SELECT phase, plan::text FROM reshard.migrations WHERE name = $1 FOR UPDATE", [plan.migration])
            var phase = MigrationPhase.planned
            if existing.rowCount == 0 {
                // A new migration starts in `planned`; every later phase is a transition (`PhaseStore`).
                try conn.query("INSERT INTO reshard.migrations (name, phase, plan) VALUES ($1, 'planned', $2::jsonb)", [plan.migration, planJSON])
                for table in plan.tables {
                    for slice in table.slices {
                        try conn.query(
                            """
                            INSERT INTO reshard.slices (migration, table_name, source, target, stays_in_place, estimated_rows, done)
                            VALUES ($1, $2, $3, $4, $5, $6, $5)
                            """,
                            [plan.migration, table.name.description, slice.source, slice.target, slice.staysInPlace, slice.estimatedRows])
                    }
                }
                try event("registered: \(plan.tables.count) table(s), \(plan.sources.count) -> \(plan.targets.count) shards", on: conn)
            } else {
                phase = try MigrationPhase.recorded(existing[0, 0] ?? "", migration: plan.migration)
                let registered = try JSONDecoder().decode(Plan.self, from: Data((existing[0, 1] ?? "{}").utf8))
                try checkStillMatches(registered)
                try event("resumed in phase \(phase.rawValue) by \(ProcessInfo.processInfo.hostName) pid \(getpid())", on: conn)
            }
            try ApplyLease.recordHolder(plan.migration, on: conn)
            return phase
        }
    }

    /// A resumed migration must run on the same shards, function and table schemas.
    func checkStillMatches(_ registered: Plan) throws {
        guard registered.function == plan.function, registered.sources.map(\.name) == plan.sources.map(\.name),
            registered.targets.map(\.name) == plan.targets.map(\.name)
        else {
            throw ReshardError.refused(
                "migration \(plan.migration) was started with other shards or another shard function; use a new migration name")
        }
        for table in plan.tables {
            guard let old = registered.tables.first(where: { $0.name == table.name }) else {
                throw ReshardError.refused("table \(table.name) is not part of migration \(plan.migration) as registered")
            }
            guard old.fingerprint == table.fingerprint else {
                throw ReshardError.refused("table \(table.name) changed since migration \(plan.migration) started (columns, types or key)")
            }
        }
    }

    func loadCheckpoints(_ meta: PGConnection) throws {
        let rows = try meta.query(
            "SELECT table_name, source, target, rows_copied, array_to_json(last_key)::text, done FROM reshard.slices WHERE migration = $1",
            [plan.migration])
        for row in 0..<rows.rowCount {
            let key = ApplyState.SliceKey(table: rows[row, 0]!, source: rows[row, 1]!, target: rows[row, 2]!)
            let lastKey = rows[row, 4].flatMap { try? JSONDecoder().decode([String].self, from: Data($0.utf8)) }
            state.recordBatch(key, rows: try rows.get(row, 3, as: Int.self), lastKey: lastKey, done: rows[row, 5] == "t")
        }
    }

    func record(_ transition: MigrationStateMachine.Transition, on meta: PGConnection) throws {
        try meta.transaction { conn in
            try PhaseStore.write(transition, migration: plan.migration, on: conn)
            try event("phase \(transition.to.rawValue)", on: conn)
        }
    }

    func event(_ message: String, level: String = "info", on conn: PGConnection) throws {
        try conn.query("INSERT INTO reshard.events (migration, level, message) VALUES ($1, $2, $3)", [plan.migration, level, message])
    }

    func recordError(_ error: Error, on meta: PGConnection) throws {
        let text = (error as? PostgresError)?.summary ?? "\(error)"
        try meta.query("UPDATE reshard.migrations SET last_error = $2, last_error_at = now() WHERE name = $1", [plan.migration, text])
        try event(text, level: "error", on: meta)
    }

    func heartbeat(_ meta: PGConnection) throws {
        try ApplyLease.heartbeat(plan.migration, on: meta)
    }

    /// Changes applied per source as last persisted, so the metadata's total accumulates across runs.
    private var persistedApplied: [String: Int64] = [:]

    func persistProgress(_ meta: PGConnection) throws {
        for (source, figures) in state.catchUp {
            let delta = figures.applied - persistedApplied[source, default: 0]
            try meta.query(
                """
                INSERT INTO reshard.catchup (migration, source, backlog, oldest_change_at, applied_total, updated_at)
                VALUES ($1, $2, $3, $4::timestamptz, $5, now())
                ON CONFLICT (migration, source) DO UPDATE SET backlog = EXCLUDED.backlog,
                    oldest_change_at = EXCLUDED.oldest_change_at,
                    applied_total = reshard.catchup.applied_total + EXCLUDED.applied_total, updated_at = now()
                """, [plan.migration, source, figures.backlog, figures.oldest, delta])
            persistedApplied[source] = figures.applied
        }
    }

    /// Picks up `reshard throttle` changes and pauses the backfill while the changelog backlog is
    /// too long (the catch-up must keep up) or a source's replicas fall behind.
    func readThrottle(_ meta: PGConnection) throws {
        let row = try meta.query("SELECT max_rows_per_second FROM reshard.migrations WHERE name = $1", [plan.migration])
        let limit = row.rowCount > 0 ? row[0, 0].flatMap { Int($0) } : nil
        let backlog = state.catchUp.values.reduce(0) { $0 + $1.backlog }
        var lagging = false
        for source in plan.sources {
            guard let dsn = shards[source.name], let conn = try? connectionForLagChecks(source.name, dsn) else { continue }
            let lag = try? conn.query("SELECT coalesce(max(extract(epoch FROM replay_lag)), 0)::float8 FROM pg_stat_replication")
            if let seconds = try? lag?.get(0, 0, as: Double.self), seconds > options.maxReplicationLagSeconds { lagging = true }
        }
        state.setThrottle(maxRowsPerSecond: limit ?? options.maxRowsPerSecond, paused: backlog > options.maxBacklog || lagging)
    }

    private var lagConnections: [String: PGConnection] = [:]
    private func connectionForLagChecks(_ name: String, _ dsn: ConnectionString) throws -> PGConnection {
        if let conn = lagConnections[name], conn.isHealthy { return conn }
        let conn = try PGConnection.connect(dsn, applicationName: "reshard apply")
        lagConnections[name] = conn
        return conn
    }

    // MARK: - Actions

    /// A connection to a shard. Values print the same on every such connection
    /// (`CanonicalText`), as the shim logs them, so keys read back from the changelog match.
    func connect(_ shard: String, settings: [String: String] = [:]) throws -> PGConnection {
        guard let dsn = shards[shard] else { throw ReshardError.badInput("no connection string for shard \(shard)") }
        return try PGConnection.connect(
            dsn, applicationName: "reshard apply", settings: CanonicalText.settings.merging(settings) { $1 })
    }

    /// Creates missing target tables and installs the shim on every source table. Idempotent.
    func prepare() throws {
        let sources = try plan.sources.map { try connect($0.name) }
        for table in plan.tables {
            for target in plan.targets where target.sameAsSource == nil {
                try TargetTables.create(table, from: sources[0], on: try connect(target.name), withIndexes: options.keepIndexes)
            }
            for source in sources { try Shim.install(migration: plan.migration, table: table, on: source) }
        }
    }

    func buildDeferredIndexes() throws {
        let source = try connect(plan.sources[0].name)
        for target in plan.targets where target.sameAsSource == nil {
            let conn = try connect(target.name)
            for table in plan.tables { try TargetTables.createIndexes(table, from: source, on: conn) }
        }
    }

    private func spawn(_ name: String, _ body: @escaping @Sendable () -> Void) {
        finished.enter()
        let group = finished
        let thread = Thread {
            body()
            group.leave()
        }
        thread.name = name
        threads.append(thread)
        thread.start()
    }

    func startBackfill() {
        guard !backfillStarted else { return }
        backfillStarted = true
        let workers = max(1, min(state.pendingSlices, options.maxConnectionsPerShard * max(plan.sources.count, plan.targets.count)))
        for index in 0..<workers {
            spawn("reshard backfill \(index)") { [self] in
                while !state.isStopping, state.pendingSlices > 0 {
                    guard let key = state.claimSlice(limitPerShard: options.maxConnectionsPerShard) else {
                        usleep(100_000)
                        continue
                    }
                    copySlice(key)
                    state.release(key)
                }
            }
        }
    }

    func startCatchUp() {
        guard !catchUpStarted else { return }
        catchUpStarted = true
        for source in plan.sources {
            spawn("reshard catch-up \(source.name)") { [self] in catchUp(source.name) }
        }
    }

    /// Retries `body` through transient failures (a shard restarting, a dropped connection) with
    /// backoff, for up to `retryWindowSeconds`; any other error fails the migration.
    func withRetry(_ what: String, _ body: () throws -> Bool) {
        var delay = 0.2
        var firstFailure: Date?
        while !state.isStopping {
            do {
                if try body() { return }
                firstFailure = nil
                delay = 0.2
            } catch let error as PostgresError where error.isTransient || error.code == .connectionFailed {
                let since = firstFailure ?? Date()
                firstFailure = since
                if Date().timeIntervalSince(since) > options.retryWindowSeconds {
                    state.fail(error)
                    return
                }
                usleep(UInt32(delay * 1_000_000))
                delay = min(delay * 2, 5)
            } catch {
                state.fail(error)
                return
            }
        }
    }

    func copySlice(_ key: ApplyState.SliceKey) {
        guard let table = plan.tables.first(where: { $0.name.description == key.table }),
            let targetIndex = plan.targets.firstIndex(where: { $0.name == key.target })
        else { return }
        var connections: (source: PGConnection, target: PGConnection, meta: PGConnection)?
        var batchSize = options.initialBatchSize
        var integerRange: SliceCopier.IntegerKeyRange??
        withRetry("copy \(key.table) \(key.source) -> \(key.target)") {
            if connections == nil || !(connections!.source.isHealthy && connections!.target.isHealthy && connections!.meta.isHealthy) {
                connections = nil
                // Slices already run side by side: parallel query workers would only compete with them.
                connections = (try connect(key.source, settings: ["max_parallel_workers_per_gather": "0"]), try connect(key.target),
                               try PGConnection.connect(metadataDSN, applicationName: "reshard apply"))
            }
            let (source, target, meta) = connections!
            let copier = SliceCopier(plan: plan, table: table, targetIndex: targetIndex, source: source, target: target)
            let slice = state.slice(key)
            if slice.done { return true }
            while state.isPaused && !state.isStopping { usleep(200_000) }
            let wait = state.throttleDelay(rows: batchSize)
            if wait > 0 { usleep(UInt32(min(wait, 5) * 1_000_000)) }
            let started = Date()
            if integerRange == nil { integerRange = .some(try copier.integerKeyRange()) }
            let batch = try copier.copyBatch(after: slice.lastKey, batchSize: batchSize, integerRange: integerRange!)
            // Only now, with the batch committed on the target, does the checkpoint move.
            try meta.query(
                """
                UPDATE reshard.slices SET rows_copied = rows_copied + $5, last_key = $6::text[], done = $7,
                    started_at = coalesce(started_at, now()), updated_at = now()
                WHERE migration = $1 AND table_name = $2 AND source = $3 AND target = $4
                """, [plan.migration, key.table, key.source, key.target, batch.rows, batch.lastKey, batch.done])
            state.recordBatch(key, rows: batch.rows, lastKey: batch.lastKey, done: batch.done)
            let took = Date().timeIntervalSince(started)
            if took < options.targetBatchSeconds / 2 { batchSize = min(batchSize * 2, 1_000_000) }
            if took > options.targetBatchSeconds * 2 { batchSize = max(batchSize / 2, 1_000) }
            return batch.done
        }
    }

    func catchUp(_ sourceName: String) {
        var applier: CatchUpApplier?
        // Counting the logs scans them: once a second is as fresh as `status` shows anyway.
        var lastCount = Date.distantPast
        withRetry("catch-up \(sourceName)") {
            if applier == nil || !applier!.source.isHealthy || applier!.targets.contains(where: { $0.map { !$0.isHealthy } ?? false }) {
                applier = nil
                applier = try CatchUpApplier.connecting(plan: plan, source: sourceName) { try connect($0) }
            }
            let copied = state.copiedTables(from: sourceName)
            let tables = plan.tables.filter { copied.contains($0.name.description) }
            let round = try applier!.applyRound(tables: tables)
            var backlog: (Int64, String?)?
            if Date().timeIntervalSince(lastCount) >= 1 {
                backlog = try applier!.backlog()
                lastCount = Date()
            }
            state.recordCatchUp(
                source: sourceName, applied: round.applied, drained: round.drained && tables.count == plan.tables.count,
                backlog: backlog)
            if round.applied == 0 { usleep(50_000) }
            return false
        }
    }
}
