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
    let workers = Workers()
    private var backfillStarted = false
    private var catchUpStarted = false
    private var lagChecksStarted = false
    /// Shared by every source's catch-up: per-shard lane slots and the (table, target) locks.
    private let catchUpGate: CatchUpGate
    /// `ALTER TABLE` on the sources while running: the column lists in use (`SchemaDrift`).
    let schemaDrift: SchemaDrift
    /// Backfill slices claimed in the metadata, shared with `apply --workers-only` processes.
    let sliceClaims: SliceClaims
    /// Wakes the control loop when a worker ends a slice or a failure stops the work.
    let loopSignal = ControlLoopSignal()
    /// How long `apply` planned before this coordinator started (validating the config against
    /// every shard, the estimates), for an event: a fixed cost of every run, as prepare's steps are.
    public var planningSeconds: Double?

    /// - Parameter shards: connection strings by shard name (sources and targets).
    public init(plan: Plan, shards: [String: ConnectionString], metadata: ConnectionString, options: ApplyOptions) {
        self.plan = plan
        self.shards = shards
        self.metadataDSN = metadata
        self.options = options
        catchUpGate = CatchUpGate(limitPerShard: options.maxConnectionsPerShard)
        schemaDrift = SchemaDrift(plan: plan)
        sliceClaims = SliceClaims(migration: plan.migration)
        var slices: [ApplyState.SliceKey: ApplyState.Slice] = [:]
        for table in plan.tables {
            for slice in table.slices {
                slices[.init(table: table.name.description, source: slice.source, target: slice.target)] = .init(
                    estimated: slice.estimatedRows, copied: 0, lastKey: nil, done: false, staysInPlace: slice.staysInPlace)
            }
        }
        state = ApplyState(slices: slices, sources: plan.sources.map(\.name))
        metaRetry = RetryPolicy.Run(options.retry)
    }

    // MARK: - Run

    /// The metadata connection of the control loop; nil while the metadata database is away.
    private var meta: PGConnection?
    /// The backend of the last metadata connection, so a reconnect can end it (and its lock).
    private var metaSession: Int32?
    private var metaRetry: RetryPolicy.Run
    private var metaRetryAt = Date.distantPast

    /// Runs until the goal is reached, `shouldStop` says so, or a fatal error.
    /// - Parameters:
    ///   - shouldStop: polled about ten times a second (Ctrl-C).
    ///   - report: called about once a second with the progress.
    ///   - notice: a line for the user when the coordinator waits for something.
    ///   - metadataSession: a session to the metadata database opened beforehand (while planning),
    ///     used when still healthy; otherwise one is opened here.
    /// - Returns: where it stopped and whether that was the goal (the CLI's exit code depends on it).
    @discardableResult
    public func run(
        shouldStop: () -> Bool, report: (ApplyProgress) -> Void, notice: (String) -> Void = { _ in },
        metadataSession: PGConnection? = nil
    ) throws -> ApplyOutcome {
        var startup = StepTimes()
        let meta = try startup.time("metadata connection") {
            if let metadataSession, metadataSession.isHealthy { return metadataSession }
            return try PGConnection.connect(metadataDSN, applicationName: "reshard apply")
        }
        _ = try startup.time("metadata schema") { try MetadataSchema.current.apply(to: meta) }
        try startup.time("locks") {
            try acquireLease(meta)
            try acquireCatchUpLock(meta, notice: notice)
        }
        self.meta = meta
        metaSession = meta.backendPID
        let recorded = try startup.time("registration") { try register(meta) }
        try startup.time("checkpoints") {
            try loadCheckpoints(meta)
            try storeApplyLimit(meta)
        }
        if let planningSeconds { state.log(String(format: "planned in %.3f s", planningSeconds)) }
        state.log("started in \(startup)")

        var machine = MigrationStateMachine(migration: plan.migration, phase: recorded, goal: options.goal)
        var pending = try machine.resume()
        var lastTick = Date.distantPast
        var lastCopied = state.copiedRows
        var lastRateAt = Date()
        var rate = 0.0
        var stopRequested = false
        defer { stopWorkers() }
        while true {
            actions: while !pending.isEmpty {
                let action = pending.removeFirst()
                switch action {
                case .prepare:
                    guard try retrying("prepare", shouldStop: shouldStop, prepare) else {
                        stopRequested = true
                        pending = machine.stopRequested()
                        continue actions
                    }
                    pending += try machine.prepared()
                case .record(let transition):
                    guard try onMetadata({ try record(transition, on: $0) }) != nil else {
                        // The metadata database is away: the phase is recorded once it is back.
                        pending.insert(action, at: 0)
                        break actions
                    }
                case .runBackfillAndCatchUp:
                    startLagChecks()
                    startBackfill()
                    startCatchUp()
                case .runCatchUp:
                    startLagChecks()
                    startCatchUp()
                case .buildDeferredIndexes:
                    if !(try retrying("finish the target tables", shouldStop: shouldStop, finishTargets)) {
                        stopRequested = true
                        pending = machine.stopRequested()
                    }
                case .stop:
                    let stopping = Date()
                    stopWorkers()
                    state.log(String(format: "workers stopped in %.3f s", Date().timeIntervalSince(stopping)))
                    if let failure = state.firstFailure { throw failure }
                    _ = try onMetadata { try persistProgress($0) }
                    let last = progress(machine.phase, rate: rate)
                    report(last)
                    return ApplyOutcome(goal: options.goal, reachedGoal: !stopRequested, progress: last)
                }
            }
            if let failure = state.firstFailure {
                _ = try? onMetadata { try recordError(failure, on: $0) }
                throw failure
            }
            if shouldStop() {
                stopRequested = true
                // Pending actions are only left over when a phase could not be recorded (the
                // metadata database is away): the recorded phase is where the next run resumes.
                pending = machine.stopRequested()
                continue
            }
            if pending.isEmpty, machine.phase == .backfilling, state.pendingSlices == 0 {
                pending += try machine.backfillComplete()
                continue
            }
            if pending.isEmpty, [.catchingUp, .inSync, .rolledBack].contains(machine.phase), state.caughtUp {
                pending += try machine.caughtUp()
                if !pending.isEmpty { continue }
            }
            if Date().timeIntervalSince(lastTick) >= 1 {
                lastTick = Date()
                try readThrottle()
                sampleTrends()
                _ = try onMetadata { meta in
                    try heartbeat(meta)
                    try sliceClaims.tick(meta, state: state)
                    try persistProgress(meta)
                }
                let copied = state.copiedRows
                let elapsed = Date().timeIntervalSince(lastRateAt)
                rate = rate == 0 ? Double(copied - lastCopied) / elapsed : 0.7 * rate + 0.3 * Double(copied - lastCopied) / elapsed
                lastCopied = copied
                lastRateAt = Date()
                report(progress(machine.phase, rate: rate))
            }
            loopSignal.wait(0.1)
        }
    }

    /// Tells every worker to stop and waits for them, bounded: statements still running after
    /// the grace period are cancelled, and threads that still do not end are named in an event.
    func stopWorkers() {
        state.stop()
        let stuck = workers.stop(grace: options.stopGraceSeconds, afterCancel: 5)
        if !stuck.isEmpty {
            state.log("stopped without waiting for \(stuck.joined(separator: ", ")): their statements did not end", level: "warning")
            _ = try? onMetadata { try flushEvents($0) }
        }
    }

    /// Runs `body` on the control loop's metadata connection. When the metadata database is away
    /// (restart, network) the failure is retried like any other (`RetryPolicy`), without blocking
    /// the loop: this returns nil, and a later call reconnects and takes the lease again. Throws
    /// when the error is not transient, the retry window is spent, or the lease was lost.
    @discardableResult
    func onMetadata<T>(_ body: (PGConnection) throws -> T) throws -> T? {
        if meta == nil || !(meta?.isHealthy ?? false) {
            meta = nil
            guard Date() >= metaRetryAt else { return nil }
            do {
                let conn = try PGConnection.connect(metadataDSN, applicationName: "reshard apply")
                try ApplyLease.reacquire(plan.migration, on: conn, previousSession: metaSession)
                try acquireCatchUpLock(conn, notice: { _ in })
                try ApplyLease.recordHolder(plan.migration, on: conn)
                meta = conn
                metaSession = conn.backendPID
                state.log("metadata connection re-established; apply lease taken again")
            } catch {
                try metadataFailed(error)
                return nil
            }
        }
        do {
            let value = try body(meta!)
            if metaRetry.succeeded() { state.noteRecovered("metadata") }
            try flushEvents(meta!)
            return value
        } catch {
            try metadataFailed(error)
            return nil
        }
    }

    private func metadataFailed(_ error: any Error) throws {
        guard let retry = metaRetry.failed(error) else { throw error }
        if !(meta?.isHealthy ?? false) { meta = nil }
        metaRetryAt = Date().addingTimeInterval(retry.delay)
        var noted = retry
        noted.shard = noted.shard ?? "metadata"
        state.noteRetry("metadata", noted)
    }

    /// Writes the events the workers queued, and the work being retried, for `status`.
    func flushEvents(_ meta: PGConnection) throws {
        let queued = state.takeEvents()
        let retries = state.retries
        do {
            try meta.transaction { conn in
                for event in queued {
                    try EventLog.record(migration: plan.migration, level: event.level, event.message, shard: event.shard, on: conn)
                }
                try conn.query("DELETE FROM reshard.retries WHERE migration = $1 AND NOT (work = ANY($2::text[]))", [plan.migration, Array(retries.keys)])
                for (work, retry) in retries {
                    try conn.query(
                        """
                        INSERT INTO reshard.retries (migration, work, shard, failures, since, last_error, updated_at)
                        VALUES ($1, $2, $3, $4, to_timestamp($5), $6, now())
                        ON CONFLICT (migration, work) DO UPDATE SET shard = EXCLUDED.shard, failures = EXCLUDED.failures,
                            since = EXCLUDED.since, last_error = EXCLUDED.last_error, updated_at = now()
                        """, [plan.migration, work, retry.shard, retry.failures, retry.since.timeIntervalSince1970, retry.error])
                }
            }
        } catch {
            state.requeue(queued)
            throw error
        }
    }

    func progress(_ phase: MigrationPhase, rate: Double) -> ApplyProgress {
        let copied = state.copiedRows, estimated = state.estimatedRows
        let catchUp = state.catchUp.values
        return ApplyProgress(
            migration: plan.migration, phase: phase, rowsCopied: copied, rowsEstimated: estimated,
            rowsPerSecond: max(rate, 0), etaSeconds: rate > 1 && estimated > copied ? Double(estimated - copied) / rate : nil,
            backlog: catchUp.reduce(0) { $0 + $1.backlog }, changesApplied: catchUp.reduce(0) { $0 + $1.applied },
            paused: state.isPaused, pausedReason: state.pauseReason, replicaLagSeconds: state.replicaLagSeconds,
            maxRowsPerSecond: state.rateLimit, backlogTrend: trendText,
            retrying: state.retries.sorted { $0.key < $1.key }.map { work, retry in
                "retrying \(work): \(retry.error) (\(MigrationStatus.Runtime.ordinal(retry.failures + 1)) attempt, since \(ApplyState.clock(retry.since)))"
            },
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
                            VALUES ($1, $2, $3, $4, $5, $6, false)
                            """,
                            [plan.migration, table.name.description, slice.source, slice.target, slice.staysInPlace, slice.estimatedRows])
                    }
                }
                try event("registered: \(plan.tables.count) table(s), \(plan.sources.count) -> \(plan.targets.count) shards", on: conn)
            } else {
                phase = try MigrationPhase.recorded(existing[0, 0] ?? "", migration: plan.migration)
                let registered = try JSONDecoder().decode(Plan.self, from: Data((existing[0, 1] ?? "{}").utf8))
                try checkStillMatches(registered)
                // A table changed and accepted since (`SchemaDrift.acceptChanged`) is registered as it is now.
                if registered.tables.map(\.fingerprint) != plan.tables.map(\.fingerprint) {
                    try conn.query("UPDATE reshard.migrations SET plan = $2::jsonb WHERE name = $1", [plan.migration, planJSON])
                }
                try event("resumed in phase \(phase.rawValue) by \(ProcessInfo.processInfo.hostName) pid \(getpid())", on: conn)
            }
            // Applications route by the old layout until cutover publishes the new one.
            try ShardMapStore.publishInitial(plan, on: conn)
            try ApplyLease.recordHolder(plan.migration, on: conn)
            // Retries a dead coordinator was in the middle of are not ours.
            try conn.query("DELETE FROM reshard.retries WHERE migration = $1", [plan.migration])
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
            if old.fingerprint != table.fingerprint { try schemaDrift.acceptChanged(table, registered: old) { [self] in try connect($0) } }
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

    func event(_ message: String, level: String = "info", shard: String? = nil, on conn: PGConnection) throws {
        try EventLog.record(migration: plan.migration, level: level, message, shard: shard, on: conn)
    }

    func recordError(_ error: Error, on meta: PGConnection) throws {
        let text = (error as? PostgresError)?.summary ?? "\(error)"
        let shard = (error as? PostgresError)?.endpoint?.label ?? (error as? ReshardError)?.shard
        try meta.query("UPDATE reshard.migrations SET last_error = $2, last_error_at = now() WHERE name = $1", [plan.migration, text])
        try event(text, level: "error", shard: shard, on: meta)
    }

    func heartbeat(_ meta: PGConnection) throws {
        try ApplyLease.heartbeat(plan.migration, on: meta)
    }

    /// Changes applied per source as last persisted, so the metadata's total accumulates across runs.
    private var persistedApplied: [String: Int64] = [:]
    /// Per source: changes produced and applied per second, sampled every control-loop tick.
    private var trends: [String: BacklogTrend] = [:]

    /// Adds a sample of every source's backlog and applied count to its trend; events when a
    /// changelog starts falling behind (the application writes faster than the catch-up applies,
    /// which `apply` never hides by slowing the application) and when it drains again.
    func sampleTrends() {
        for (source, figures) in state.catchUp {
            var trend = trends[source] ?? BacklogTrend()
            let before = trend.rates.map { MigrationStatus.Runtime.trend(source: source, produced: $0.produced, applied: $0.applied, backlog: figures.backlog) }
            trend.add(at: Date(), backlog: figures.backlog, applied: figures.applied)
            trends[source] = trend
            guard let rates = trend.rates else { continue }
            let now = MigrationStatus.Runtime.trend(source: source, produced: rates.produced, applied: rates.applied, backlog: figures.backlog)
            if now.fallingBehind != (before?.fallingBehind ?? false) {
                state.log("changelog \(source) \(now.text)", level: now.fallingBehind ? "warning" : "info", shard: source)
            }
        }
    }

    /// The catch-up's trend for the progress line: the first source falling behind, else the
    /// slowest to drain.
    var trendText: String? {
        let all = state.catchUp.compactMap { source, figures in
            trends[source]?.rates.map { MigrationStatus.Runtime.trend(source: source, produced: $0.produced, applied: $0.applied, backlog: figures.backlog) }
        }
        let shown = all.first(where: \.fallingBehind) ?? all.filter { $0.etaSeconds != nil }.max { $0.etaSeconds! < $1.etaSeconds! }
        return shown.map { "\($0.source) \($0.text)" }
    }

    func persistProgress(_ meta: PGConnection) throws {
        for (source, figures) in state.catchUp {
            let delta = figures.applied - persistedApplied[source, default: 0]
            let rates = trends[source]?.rates
            try meta.query(
                """
                INSERT INTO reshard.catchup (migration, source, backlog, oldest_change_at, applied_total, produced_per_second,
                    applied_per_second, updated_at)
                VALUES ($1, $2, $3, $4::timestamptz, $5, $6, $7, now())
                ON CONFLICT (migration, source) DO UPDATE SET backlog = EXCLUDED.backlog,
                    oldest_change_at = EXCLUDED.oldest_change_at,
                    applied_total = reshard.catchup.applied_total + EXCLUDED.applied_total,
                    produced_per_second = EXCLUDED.produced_per_second, applied_per_second = EXCLUDED.applied_per_second, updated_at = now()
                """, [plan.migration, source, figures.backlog, figures.oldest, delta, rates?.produced, rates?.applied])
            persistedApplied[source] = figures.applied
        }
        if pausedChanged {
            try meta.query(
                """
                UPDATE reshard.migrations SET paused_reason = $2,
                    paused_since = CASE WHEN $2::text IS NULL THEN NULL ELSE coalesce(paused_since, now()) END WHERE name = $1
                """, [plan.migration, state.pauseReason])
            pausedChanged = false
        }
    }

    /// Stores `--max-rows-per-second` of this run as the limit in force, so `status` shows it and
    /// where it came from. Without the flag, the limit stored earlier (by `throttle` or an
    /// earlier run) stays in force.
    func storeApplyLimit(_ meta: PGConnection) throws {
        if let limit = options.maxRowsPerSecond {
            try meta.transaction { conn in
                try conn.query(
                    """
                    UPDATE reshard.migrations SET max_rows_per_second = $2, max_rows_per_second_source = 'apply --max-rows-per-second',
                        max_rows_per_second_at = now() WHERE name = $1
                    """, [plan.migration, limit])
                try event("backfill limit \(Int64(limit).grouped) rows/s (apply --max-rows-per-second)", on: conn)
            }
        }
        state.setRateLimit(try readLimit(meta))
    }

    func readLimit(_ meta: PGConnection) throws -> Int? {
        let row = try meta.query("SELECT max_rows_per_second FROM reshard.migrations WHERE name = $1", [plan.migration])
        return row.rowCount > 0 ? row[0, 0].flatMap { Int($0) } : nil
    }

    /// Picks up `reshard throttle` changes (when the metadata can be read) and pauses the
    /// backfill while the changelog backlog is too long (the catch-up must keep up) or a
    /// source's replicas fall behind or cannot be checked (`ApplyState.pauseReason`). A change of
    /// either is an event, and the pause and its reason are stored for `status`.
    func readThrottle() throws {
        if let limit = try onMetadata({ try readLimit($0) }), limit != state.rateLimit {
            state.setRateLimit(limit)
            state.log("backfill limit now \(limit.map { "\(Int64($0).grouped) rows/s" } ?? "removed")")
        }
        let reason = state.pauseReason(maxBacklog: options.maxBacklog, maxLagSeconds: options.maxReplicationLagSeconds)
        let before = state.pauseReason
        guard reason != before else { return }
        state.setPaused(reason)
        state.log(reason.map { "backfill paused: \($0)" } ?? "backfill resumed", level: reason == nil ? "info" : "warning")
        pausedChanged = true
    }

    /// Whether the pause changed since it was last stored.
    private var pausedChanged = false

    /// Reads every source's replication lag once a second on a thread of its own, with a bounded
    /// `statement_timeout`, so a slow or unreachable source never holds up the control loop. A
    /// lag that cannot be read is recorded as such, which pauses the backfill (not knowing is
    /// not the same as not lagging); the first failure and the recovery are events.
    func startLagChecks() {
        guard !lagChecksStarted else { return }
        lagChecksStarted = true
        let timeout = String(Int(options.lagCheckTimeoutSeconds * 1000))
        workers.start("reshard lag checks") { [self] in
            var connections: [String: PGConnection] = [:]
            let replicaLag = ReplicaLag(replicas: options.replicas, settings: ["statement_timeout": timeout]) { [self] in workers.track($0) }
            while !state.isStopping {
                for source in plan.sources {
                    let previous = state.lag[source.name]
                    do {
                        if connections[source.name].map({ !$0.isHealthy }) ?? true {
                            connections[source.name] = nil
                            connections[source.name] = try connect(source.name, settings: ["statement_timeout": timeout])
                        }
                        state.setLag(source.name, .seconds(try replicaLag.read(source.name, primary: connections[source.name]!)))
                        if case .unreadable = previous { state.log("replication lag of \(source.name) readable again", shard: source.name) }
                    } catch {
                        let why = (error as? PostgresError)?.message ?? "\(error)"
                        state.setLag(source.name, .unreadable(why))
                        if case .unreadable = previous {} else {
                            state.log("replication lag of \(source.name) cannot be read: \(why)", level: "warning", shard: source.name)
                        }
                    }
                }
                state.wait(1)
            }
        }
    }

    // MARK: - Actions

    /// A connection to a shard. Values print the same on every such connection
    /// (`CanonicalText`), as the shim logs them, so keys read back from the changelog match.
    /// Registered with `workers`, so a stop can cancel its statement.
    func connect(_ shard: String, settings: [String: String] = [:]) throws -> PGConnection {
        guard let dsn = shards[shard] else { throw ReshardError.badInput("no connection string for shard \(shard)", shard: shard) }
        return workers.track(try PGConnection.connect(
            dsn, applicationName: "reshard apply", settings: CanonicalText.settings.merging(settings) { $1 }))
    }

    /// Creates missing target tables and installs the shim and the fence on every source and
    /// target. Idempotent.
    /// On a target that is a source's database the table is built beside the live one
    /// (`Plan.builtName(of:on:)`): the application never sees a copied row before cutover.
    func prepare() throws {
        var steps = StepTimes()
        try steps.time("key check") { try refuseCollidingKeys { try plan.sources.map { try connect($0.name) } } }
        // Every database's part at once, each on connections of its own: a target's tables (the
        // definitions read on a source session of its own) and then its fence, a source's shim and
        // then its fence. They do not depend on each other (a shared target builds beside the live
        // table the shim is on), and the copy starts only once all are done. The targets' fence is
        // the statement check only: its misrouted-key row check waits for the end of the copy
        // (`finishTargets`).
        let creates: [@Sendable () throws -> Void] = plan.targets.indices.map { index in
            { [self] in
                let target = plan.targets[index]
                let (source, conn) = try connectAtOnce(source: plan.sources[0].name, target: target.name)
                for table in plan.tables {
                    try TargetTables.create(
                        table, named: plan.builtName(of: table, on: target), from: source, on: conn,
                        withIndexes: options.keepIndexes, warn: { [state] in state.log($0, level: "warning", shard: target.name) })
                }
                // A shared target's fence goes on after its source's (same database, same functions).
                if !target.isShared {
                    try installTargetFence(index, misroutedChecks: false, installingState: targetNeedsFenceState(target), on: conn)
                }
            }
        }
        let shims: [@Sendable () throws -> Void] = plan.sources.map { source in
            { [self] in
                let conn = try connect(source.name)
                for table in plan.tables { try Shim.install(migration: plan.migration, table: table, on: conn) }
                try installSourceFence(source, on: conn)
            }
        }
        let took = try steps.time("tables, shims and fence") { try inParallel("reshard prepare", creates + shims) }
        for (name, seconds) in zip(plan.targets.map { "tables and fence on \($0.name)" } + plan.sources.map { "shim and fence on \($0.name)" }, took) {
            steps.add(name, seconds)
        }
        if !plan.sharedTargets.isEmpty {
            try steps.time("fence on shared targets") {
                for (index, target) in plan.targets.enumerated() where target.isShared {
                    try installTargetFence(index, misroutedChecks: false, installingState: targetNeedsFenceState(target), on: try connect(target.name))
                }
            }
        }
        state.log("prepared in \(steps)")
        copyStartedAt = Date()
    }

    /// When the copy started (after `prepare`), for the event that says how long it took.
    private var copyStartedAt: Date?

    /// `body` (prepare, finishing the targets) on the control loop through transient failures
    /// (a source restarting while the shim is installed), retried as the backfill is
    /// (`RetryPolicy`), each retry an event. Returns false when a stop was requested first.
    func retrying(_ what: String, shouldStop: () -> Bool, _ body: () throws -> Void) throws -> Bool {
        var run = RetryPolicy.Run(options.retry)
        while !shouldStop() {
            do {
                try body()
                if run.succeeded() { state.noteRecovered(what) }
                return true
            } catch {
                guard let retry = run.failed(error) else { throw error }
                state.noteRetry(what, retry)
                _ = try onMetadata { try flushEvents($0) }
                let until = Date().addingTimeInterval(retry.delay)
                while Date() < until && !shouldStop() { state.wait(0.1) }
            }
        }
        return false
    }

    /// Once every slice is copied, what would have slowed the copy: the secondary indexes (unless
    /// `--keep-indexes`), the table's own triggers (created disabled) and the fence's misrouted-key
    /// row check on the targets (a BEFORE ROW trigger, even a disabled one, makes `COPY FROM`
    /// insert row by row). Idempotent: a crash before the phase is
    /// recorded runs it again.
    func finishTargets() throws {
        if let copyStartedAt {
            state.log(String(format: "every slice copied in %.3f s", Date().timeIntervalSince(copyStartedAt)))
            self.copyStartedAt = nil
        }
        var steps = StepTimes()
        // First, at once: which tables have secondary indexes or triggers (read once on the
        // source), and the fence's misrouted-key row check on each target (one session per
        // target). The sources' fence is as `prepare` of this run left it (every path to this step
        // runs `prepare` first). A fence trigger and an index build on one table would wait for
        // each other's locks, so the indexes come after.
        let found = FinishChecks()
        let check: @Sendable () throws -> Void = { [self] in
            let source = try connect(plan.sources[0].name)
            found.indexed = options.keepIndexes ? [] : try plan.tables.filter { try !TargetTables.secondaryIndexes($0, on: source).isEmpty }
            found.triggered = try plan.tables.filter { try TargetTables.hasTriggers($0, on: source) }
        }
        let fences: [@Sendable () throws -> Void] = plan.targets.indices.map { index in
            { [self] in
                let target = plan.targets[index]
                try installTargetFence(index, misroutedChecks: true, installingState: targetNeedsFenceState(target), on: try connect(target.name))
            }
        }
        try steps.time("fence") { try inParallel("reshard finish", [check] + fences) }
        // Then the secondary indexes per target and table at once, each build on sessions of its
        // own; then the table's own triggers, created disabled, per target at once (one session
        // per target: two tables' triggers may share a function the target lacks). Only for
        // tables that have any: a job's own sessions cost more than a table without indexes or
        // triggers takes.
        let indexed = found.indexed, triggered = found.triggered
        if !indexed.isEmpty {
            var jobs: [@Sendable () throws -> Void] = [], names: [String] = []
            for target in plan.targets {
                for table in indexed {
                    names.append("indexes of \(table.name) on \(target.name)")
                    jobs.append { [self] in
                        let (source, conn) = try connectAtOnce(source: plan.sources[0].name, target: target.name)
                        try TargetTables.createIndexes(table, named: plan.builtName(of: table, on: target), from: source, on: conn)
                    }
                }
            }
            let took = try steps.time("indexes") { try inParallel("reshard indexes", jobs) }
            for (name, seconds) in zip(names, took) { steps.add(name, seconds) }
        }
        if !triggered.isEmpty {
            let triggers: [@Sendable () throws -> Void] = plan.targets.map { target in
                { [self] in
                    let (source, conn) = try connectAtOnce(source: plan.sources[0].name, target: target.name)
                    for table in triggered { try TargetTables.createTriggers(table, named: plan.builtName(of: table, on: target), from: source, on: conn) }
                }
            }
            try steps.time("triggers") { try inParallel("reshard triggers", triggers) }
        }
        state.log("target tables finished in \(steps)")
    }

    /// What `finishTargets` reads on the source in a job of its own, for the steps after it.
    /// Why `@unchecked Sendable`: every field is read and written under `lock`.
    private final class FinishChecks: @unchecked Sendable {
        private let lock = NSLock()
        private var tables: (indexed: [Plan.Table], triggered: [Plan.Table]) = ([], [])
        var indexed: [Plan.Table] {
            get { lock.withLock { tables.indexed } }
            set { lock.withLock { tables.indexed = newValue } }
        }
        var triggered: [Plan.Table] {
            get { lock.withLock { tables.triggered } }
            set { lock.withLock { tables.triggered = newValue } }
        }
    }

    private func spawn(_ name: String, _ body: @escaping @Sendable () -> Void) {
        workers.start(name, body)
    }

    func startBackfill() {
        guard !backfillStarted else { return }
        backfillStarted = true
        let count = max(1, min(state.pendingSlices, options.maxConnectionsPerShard * max(plan.sources.count, plan.targets.count)))
        workers.start("reshard backfill", count: count) { [self] _ in
            // The loop acts on a slice done (the last one ends the backfill) or a failure at once.
            defer { loopSignal.signal() }
            while !state.isStopping, state.pendingSlices > 0 {
                guard let key = state.claimSlice(limitPerShard: options.maxConnectionsPerShard) else {
                    state.wait(0.1)
                    continue
                }
                copySlice(key)
                state.release(key)
                loopSignal.signal()
            }
        }
    }

    /// Retries `body` through transient failures (a shard restarting, a dropped connection) with
    /// the backoff of `options.retry`, until it returns true or a stop; any other error, or
    /// failures lasting longer than the retry window, fail the migration. Every retry is an event
    /// naming `what` and the shard, and shows in `status` until `what` succeeds again. Before a
    /// retry, `reset` drops the work's sessions: a session can be healthy and still unfit (one
    /// opened while its database was read-only stays read-only).
    func withRetry(_ what: String, reset: () -> Void = {}, _ body: () throws -> Bool) {
        var run = RetryPolicy.Run(options.retry)
        while !state.isStopping {
            do {
                let finished = try body()
                if run.succeeded() { state.noteRecovered(what) }
                if finished { return }
            } catch {
                // A statement cancelled by a stop (`Workers.stop`) is the stop, not a failure.
                if state.isStopping { return }
                guard let retry = run.failed(error) else {
                    let shard = (error as? PostgresError)?.endpoint?.label
                    let summary = (error as? PostgresError)?.summary ?? "\(error)"
                    state.log("\(what) failed: \(summary)", level: "error", shard: shard)
                    state.fail(RetryPolicy.isTransient(error) ? run.gaveUp(what, error, shard: shard) : error)
                    return
                }
                state.noteRetry(what, retry)
                reset()
                state.wait(retry.delay)
            }
        }
    }

    func copySlice(_ key: ApplyState.SliceKey) {
        guard let table = plan.tables.first(where: { $0.name.description == key.table }),
            let targetIndex = plan.targets.firstIndex(where: { $0.name == key.target })
        else {
            // Cannot happen for slices built from the plan; if it does, say so and stop rather
            // than leave the slice to be claimed again forever.
            state.fail(ReshardError.failed("slice \(key.table) \(key.source) -> \(key.target) is not part of the plan", shard: key.target))
            return
        }
        var connections: (source: PGConnection, target: PGConnection, meta: PGConnection)?
        var batchSize = options.initialBatchSize
        var integerRange: SliceCopier.IntegerKeyRange??
        // Per session set: the claim (made on its metadata session) and the collision guard (its
        // connections to the other sources), made once, not per batch.
        var claimed = false
        var collisionGuard: (columns: Int, probe: KeyCollisionGuard)?
        let drift = (connect: { [self] (shard: String) in try connect(shard) }, log: { [state] (line: String) in state.log(line, shard: key.source) })
        withRetry("copy \(key.table) \(key.source) -> \(key.target)", reset: { connections = nil }) {
            if connections == nil || !(connections!.source.isHealthy && connections!.target.isHealthy && connections!.meta.isHealthy) {
                connections = nil
                claimed = false
                collisionGuard = nil
                // Slices already run side by side: parallel query workers would only compete with them.
                let opened = try connectAtOnce([
                    { [self] in try connect(key.source, settings: ["max_parallel_workers_per_gather": "0"]) },
                    { [self] in try connect(key.target) },
                    { [self] in workers.track(try PGConnection.connect(metadataDSN, applicationName: "reshard apply")) },
                ])
                connections = (opened[0], opened[1], opened[2])
            }
            let (source, target, meta) = connections!
            if !claimed {
                guard try sliceClaims.claim(key, on: meta, state: state) else { return true }
                claimed = true
                try schemaDrift.check(key.source, on: source, connect: drift.connect, log: drift.log)
            } else {
                try schemaDrift.checkRecent(key.source, on: source, connect: drift.connect, log: drift.log)
            }
            let current = schemaDrift.current(table)
            var copier = SliceCopier(
                plan: plan, table: current, targetIndex: targetIndex, source: source, target: target,
                local: plan.targets[targetIndex].sameAsSource == key.source)
            if collisionGuard?.columns != current.columns.count {
                collisionGuard = (current.columns.count, KeyCollisionGuard(plan: plan, table: current, target: targetIndex, source: key.source) { [self] in try connect($0) })
            }
            copier.collisionGuard = collisionGuard?.probe
            let slice = state.slice(key)
            if slice.done { return true }
            while state.isPaused && state.wait(0.2) {}
            // A batch holds at most about a second of the rate limit, and waits for it in full.
            let rows = min(batchSize, state.maxBatchRows ?? batchSize)
            guard state.reserveRows(rows) else { return true }
            var copied = 0
            defer { state.settleRows(reserved: rows, copied: copied) }
            let started = Date()
            if integerRange == nil { integerRange = .some(try copier.integerKeyRange()) }
            let batch: SliceCopier.Batch
            do {
                batch = try copier.copyBatch(after: slice.lastKey, batchSize: rows, integerRange: integerRange!)
            } catch {
                // An ALTER TABLE since the last check (a dropped column fails the batch's query):
                // stop naming the change rather than with the query's error.
                try schemaDrift.check(key.source, on: source, connect: drift.connect, log: drift.log)
                throw error
            }
            copied = batch.rows
            // Only now, with the batch committed on the target, does the checkpoint move, and
            // only while the slice is still ours (else its new holder goes on from its own).
            guard try sliceClaims.checkpoint(key, on: meta, state: state, rows: batch.rows, lastKey: batch.lastKey, done: batch.done) else {
                state.log("slice \(key.table) \(key.source) -> \(key.target) was taken over by another process; left to it", shard: key.target)
                return true
            }
            state.recordBatch(key, rows: batch.rows, lastKey: batch.lastKey, done: batch.done)
            let took = Date().timeIntervalSince(started)
            if took < options.targetBatchSeconds / 2 { batchSize = min(rows * 2, 1_000_000) }
            if took > options.targetBatchSeconds * 2 { batchSize = max(rows / 2, 1_000) }
            return batch.done
        }
    }

    func startCatchUp() {
        guard !catchUpStarted else { return }
        catchUpStarted = true
        for source in plan.sources {
            spawn("reshard catch-up \(source.name)") { [self] in
                catchUp(source.name)
                loopSignal.signal()  // it ends on a stop or a failure: the loop acts on the failure at once
            }
        }
    }

    func catchUp(_ sourceName: String) {
        var applier: CatchUpApplier?
        // Counting the logs scans them: once a second is as fresh as `status` shows anyway.
        var lastCount = Date.distantPast
        var columnsSeen = 0
        withRetry("catch-up \(sourceName)", reset: { applier = nil }) {
            if applier == nil || !applier!.isHealthy || schemaDrift.changed(since: &columnsSeen) {
                applier = nil
                applier = try CatchUpApplier.connecting(plan: plan, source: sourceName, gate: catchUpGate) { [self] in try connect($0) }
            }
            try schemaDrift.check(sourceName, on: applier!.source, connect: { [self] in try connect($0) }, log: { [self] in state.log($0, shard: sourceName) })
            let copied = state.copiedTables(from: sourceName)
            let tables = plan.tables.filter { copied.contains($0.name.description) }.map(schemaDrift.current)
            guard let round = try schemaDrift.round(seen: columnsSeen, { try applier!.applyRound(tables: tables) }) else { return false }
            var backlog: (Int64, String?)?
            if Date().timeIntervalSince(lastCount) >= 1 {
                backlog = try applier!.backlog()
                lastCount = Date()
            }
            state.recordCatchUp(
                source: sourceName, applied: round.applied, drained: round.drained && tables.count == plan.tables.count,
                backlog: backlog)
            // A stop ends the pause (the coordinator waits for this thread before it exits).
            if round.applied == 0 { state.wait(0.05) }
            if state.replicasLag(maxLagSeconds: options.maxReplicationLagSeconds) { state.wait(ApplyOptions.laggingCatchUpPause) }
            return false
        }
    }
}
