import Foundation
import PostgresClient
import ReshardRouting

/// Runs `reshard cutover` and `reshard rollback`: switches the application's writes from one
/// layout to the other in a stall bounded by `--max-stall`, losing no acknowledged write.
///
/// Before the stall (nothing the application sees changes): the checks, sequences advanced on
/// the layout taking over, capture installed and proven on it (it must log the application's
/// first write there), the changelogs applied until their backlog is small. The stall: barrier
/// and fence on every database (`CutoverBarrier`, `Fence`), changelogs drained to zero, sequences
/// checked, the new epoch published, the fence released for the layout taking over. Each step is
/// recorded in the metadata before it is taken (`SwitchStore`). Until the publish, any failure or
/// timeout undoes the attempt (the fence serves the old layout again; exit 1 naming the step and
/// shard) and the command can simply be run again; after it, the switch only goes forward. A
/// coordinator killed in the middle leaves the phase `cutting-over` or `rolling-back`, which
/// the next `cutover` or `rollback` finishes or undoes (`CutoverStateMachine.actions`).
///
/// **The apply lease.** A switch holds the apply lease and the catch-up lock for its whole run,
/// so it refuses while `apply` runs (stop it first: the switch catches up itself) and an `apply`
/// started meanwhile refuses; after cutover `apply` refuses the phase.
public final class LayoutSwitch {
    public struct StepReport: Sendable, Codable {
        public var step: String
        public var milliseconds: Double
        public var detail: String?
    }

    public struct Report: Sendable, Codable {
        public var migration: String
        public var command: String
        public var dryRun: Bool
        /// The epoch applications route by afterwards.
        public var epoch: Int64
        /// What the checks found (dry run) or what was done, one line each.
        public var lines: [String]
        public var steps: [StepReport]
        /// How long writes were held up, measured from the barrier to the release; nil when no switch ran.
        public var stallMilliseconds: Double?
        public var sequences: [SequenceSync.Advanced]
    }

    let shards: [String: ConnectionString]
    let metadata: ConnectionString
    let options: SwitchOptions
    private var connections: [String: PGConnection] = [:]
    private var report: Report!
    var plan: Plan!
    private var store: SwitchStore!
    private var machine: MigrationStateMachine!
    let notice: (String) -> Void

    /// - Parameter shards: connection strings by shard name (sources and targets).
    public init(shards: [String: ConnectionString], metadata: ConnectionString, options: SwitchOptions, notice: @escaping (String) -> Void = { _ in }) {
        self.shards = shards
        self.metadata = metadata
        self.options = options
        self.notice = notice
    }

    /// A session on a shard (one per shard for the coordinator's own statements).
    func connect(_ shard: String) throws -> PGConnection {
        if let conn = connections[shard], conn.isHealthy { return conn }
        let conn = try Self.fresh(shards, shard)
        connections[shard] = conn
        return conn
    }

    /// A new session, with the settings under which keys print as the shim logs them.
    /// `replica`: with `session_replication_role = replica` when the role may set it (the
    /// application's triggers do not fire for its writes), else (42501, and only then: any other
    /// failure is the caller's) a plain session, the shard noted in `plain` for a notice.
    static func fresh(_ shards: [String: ConnectionString], _ shard: String, replica: Bool = false, plain: ShardNames? = nil) throws -> PGConnection {
        guard let dsn = shards[shard] else { throw ReshardError.badInput("no connection string for shard \(shard)", shard: shard) }
        if replica {
            do {
                return try PGConnection.connect(
                    dsn, applicationName: "reshard cutover", settings: CanonicalText.settings.merging(["session_replication_role": "replica"]) { $1 })
            } catch let error as PostgresError where error.sqlState == "42501" {
                plain?.add(shard)
            }
        }
        return try PGConnection.connect(dsn, applicationName: "reshard cutover", settings: CanonicalText.settings)
    }

    public func run(_ command: CutoverStateMachine.Direction, migration: String) throws -> Report {
        let meta = try PGConnection.connect(metadata, applicationName: "reshard \(command.rawValue)")
        guard try PhaseStore.read(migration, on: meta) != nil else {
            throw ReshardError.refused("migration \(migration) is not registered; run 'reshard apply' first")
        }
        let plan = try MigrationStatus.registeredPlan(migration: migration, on: meta)
        if let missing = (plan.sources + plan.targets).first(where: { shards[$0.name] == nil }) {
            throw ReshardError.badInput("no connection string for shard \(missing.name) of migration \(migration) (is this its config?)")
        }
        _ = try MetadataSchema.current.apply(to: meta)
        do { try ApplyLease.acquire(migration, on: meta, waitForDeadLocalHolder: 5) } catch let error as ReshardError where error.code == .refused {
            throw ReshardError.refused("\(error.message); \(command.rawValue) needs the apply lease: stop that apply first (\(command.rawValue) catches up itself)")
        }
        defer { try? MetadataLock.apply.unlock(migration, on: meta) }
        guard try MetadataLock.catchUp.lock(migration, on: meta, waitingUpTo: 30, waiting: {}) else {
            throw ReshardError.refused("migration \(migration): 'reshard verify' is applying changes; try again")
        }
        defer { try? MetadataLock.catchUp.unlock(migration, on: meta) }
        if !options.dryRun { try ApplyLease.recordHolder(migration, on: meta) }

        self.plan = plan
        store = SwitchStore(migration: migration, meta: meta)
        let phase = try PhaseStore.read(migration, on: meta)!
        machine = MigrationStateMachine(migration: migration, phase: phase)
        let unfinished = try store.unfinished()
        let actions = try CutoverStateMachine.actions(for: command, migration: migration, phase: phase, unfinished: unfinished?.state)
        report = Report(migration: migration, command: command.rawValue, dryRun: options.dryRun, epoch: try store.currentEpoch(),
                        lines: [], steps: [], stallMilliseconds: nil, sequences: [])
        for action in actions {
            switch action {
            case .complete(let direction):
                guard !options.dryRun else { report.lines.append("would finish the \(direction.rawValue) a coordinator left published"); continue }
                try complete(direction, attempt: unfinished!.attempt, toEpoch: unfinished!.toEpoch)
            case .undo(let direction, let undoing):
                guard !options.dryRun else { report.lines.append("would undo the \(direction.rawValue) a coordinator left unfinished"); continue }
                let attempt = unfinished.map { (attempt: $0.attempt, from: $0.fromEpoch) }
                try undo(direction, attempt: attempt?.attempt, fromEpoch: attempt?.from ?? report.epoch, error: "its coordinator ended before it finished",
                         triggers: undoing.swapBack)
            case .run(let direction):
                try runSwitch(direction)
            }
        }
        report.epoch = try store.currentEpoch()
        return report
    }

    // MARK: - One switch

    private func servingState(_ direction: CutoverStateMachine.Direction, epoch: Int64, to: Bool) -> Fence.State {
        let new = (direction == .cutover) == to
        return Fence.State(epoch: epoch, serving: new ? .new : .old)
    }

    /// Sets the fence on every database of both layouts, all at once (a round trip in all, not
    /// one per database: inside the stall each is time writes wait), on the barrier's own
    /// sessions where it holds them.
    private func setFence(_ state: Fence.State, places: SwitchPlaces, barrier: CutoverBarrier? = nil) throws {
        let held = barrier?.sessions ?? [:]
        let work = try places.databases.map { (shard: $0, conn: try held[$0].flatMap { $0.isHealthy ? $0 : nil } ?? connect($0)) }
        let migration = plan.migration
        try CutoverBarrier.inParallel(work) { try Fence.set(state, migration: migration, on: $1) }
    }

    private func crashIfAsked(_ step: CutoverStateMachine.Step) {
        // For the kill -9 tests: die abruptly right after recording the step, before taking it.
        if ProcessInfo.processInfo.environment["RESHARD_TEST_CRASH_AT"] == step.rawValue { kill(getpid(), SIGKILL) }
    }

    /// Every shared database swapped (`true`) or none: where a finished switch leaves the tables.
    private func locations(swapped: Bool) -> TableLocations {
        TableLocations(plan, swapped: swapped ? Set(plan.sharedTargets.map(\.name)) : [])
    }

    private func runSwitch(_ direction: CutoverStateMachine.Direction) throws {
        // Where the tables are, asked of the shared databases (not swapped before cutover, swapped before rollback).
        let locations = TableLocations(plan, swapped: try TableLocations.read(plan, connect: connect))
        let places = locations.places(plan, direction)
        // The layout the capture is installed on: the one taking over.
        let captureLayout: TableLocations.Layout = direction == .cutover ? .new : .old
        let started = Date()
        let checked = try CutoverChecks.run(direction, plan: plan, meta: store.meta, options: options, places: places, connect: connect)
        report.lines += checked
        report.steps.append(.init(step: CutoverStateMachine.Step.checks.rawValue, milliseconds: Date().timeIntervalSince(started) * 1000, detail: nil))
        let fromEpoch = try store.currentEpoch()
        let toEpoch = fromEpoch + 1
        if options.dryRun {
            report.lines += CutoverStateMachine.Step.allCases.dropFirst().map { "would take step \($0.rawValue)" }
            report.lines.append("would publish epoch \(toEpoch) (\(direction == .cutover ? "the new layout" : "the old layout"))")
            return
        }
        let transition = direction == .cutover ? try machine.startCutover() : try machine.startRollback()
        let attempt = try store.begin(direction, from: fromEpoch, to: toEpoch, transition: transition)
        try store.starting(.checks, attempt: attempt)
        try store.finished(.checks, attempt: attempt, detail: checked.joined(separator: "; "))

        let capture: Plan = direction == .cutover ? plan.reversed() : plan!
        let drainPlan = direction == .cutover ? plan! : plan.reversed()
        var reached: CutoverStateMachine.Step = .checks
        var stallStarted: Date?
        var barrier: CutoverBarrier?
        // The drain's appliers and the barrier's sessions live until the release is done: closing
        // dozens of sessions (each a backend exiting on its server) inside the stall cost the
        // coordinator's thread and the servers the release runs on a hundred milliseconds.
        var drain: CutoverDrain?
        // Also when the switch is undone or fails: the old layout's writers resume then.
        defer { drain?.retire(after: CutoverDrain.retirePause) }
        var released: CutoverBarrier?
        var paused: [(bouncer: PgBouncerAdmin, database: String)] = []
        let shards = self.shards
        let connectFresh: @Sendable (String) throws -> PGConnection = { try LayoutSwitch.fresh(shards, $0) }
        // Rollback's drain writes the old layout, whose tables have the application's triggers
        // enabled: its sessions are replicas (ordinary triggers do not fire; reshard's own are ALWAYS).
        let replica = direction == .rollback
        let plainSessions = ShardNames()
        let drainConnect: @Sendable (String) throws -> PGConnection = { try LayoutSwitch.fresh(shards, $0, replica: replica, plain: plainSessions) }
        var told: Set<String> = []
        func tellPlainSessions() {
            for shard in Set(plainSessions.shards).subtracting(told).sorted() {
                notice("\(direction.rawValue): the role on \(shard) may not set session_replication_role: the catch-up writes there in plain sessions, so the application's triggers fire for its writes")
                told.insert(shard)
            }
        }
        // No metadata round trip inside the stall: every stalling step is recorded as about to
        // be taken in one write before the barrier (`recordStallAhead`; recovery reads them all as
        // possibly taken, which its undo handles), and their `finished` records wait for the
        // release (or the undo). Each would be a round trip and a commit the writers wait for.
        let stallSteps = CutoverStateMachine.Step.allCases.filter(\.stalls)
        var recordedAhead: Date?
        var unrecorded: [(step: CutoverStateMachine.Step, at: Double, took: Double, detail: String?)] = []
        func recordStallAhead() throws {
            try store.starting(stallSteps, attempt: attempt)
            recordedAhead = Date()
        }
        func recordFinished() {
            for done in unrecorded { try? store.finished(done.step, attempt: attempt, at: done.at, took: done.took, detail: done.detail) }
            unrecorded = []
        }
        func step(_ step: CutoverStateMachine.Step, _ body: () throws -> String?) throws {
            reached = step
            if !step.stalls || recordedAhead == nil { try store.starting(step, attempt: attempt) }
            crashIfAsked(step)
            let began = Date()
            let detail = try body()
            let took = Date().timeIntervalSince(began)
            report.steps.append(.init(step: step.rawValue, milliseconds: took * 1000, detail: detail))
            if let recordedAhead, step.stalls {
                unrecorded.append((step, began.timeIntervalSince(recordedAhead), took, detail))
            } else {
                try store.finished(step, attempt: attempt, detail: detail)
            }
        }
        func beforeDeadline(_ what: String) throws {
            guard let stallStarted, Date().timeIntervalSince(stallStarted) > options.maxStallSeconds else { return }
            throw ReshardError.failed("step \(what): --max-stall \(options.maxStallSeconds) s was spent")
        }
        do {
            var sequences = SequenceSync.Known(from: [], to: [])
            try step(.sequences) {
                sequences = try SequenceSync.known(plan, places: places.sequencePlaces, connect: connect)
                let advanced = try SequenceSync.advance(plan, places: places.sequencePlaces, margin: options.sequenceMargin, connect: connect)
                report.sequences += advanced
                advanced.forEach { notice($0.text) }
                return advanced.isEmpty ? "no sequence needed advancing" : advanced.map(\.text).joined(separator: "; ")
            }
            try step(.reverseCapture) {
                let names = { (shard: String) in locations.names(captureLayout, on: shard) }
                try ReverseCapture.install(capturing: capture, names: names, connect: connect)
                if let problem = try ReverseCapture.prove(capturing: capture, names: names, connect: connect) { throw ReshardError.failed(problem) }
                return "capture on \(capture.sources.map(\.name).joined(separator: ", ")) proven"
            }
            try step(.catchUp) {
                let drainer = try CutoverDrain(plan: drainPlan, maxConnectionsPerShard: options.maxConnectionsPerShard, connect: drainConnect)
                drain = drainer
                var applied = try drainer.run(leave: options.maxBacklog, deadline: Date().addingTimeInterval(options.catchUpSeconds))
                barrier = try CutoverBarrier.prepare(places: places.from, connect: connectFresh)
                // The coordinator's own sessions to every database the fence flips on, opened now (not in the release).
                for shard in places.databases { _ = try connect(shard) }
                // A last pass right before the stall, so the drain behind the fence has little left:
                // up to three rounds, until one applies next to nothing (a round finds what was
                // written while the last one ran, so each is shorter than the one before).
                applied += try drainer.run(leave: 1, deadline: Date().addingTimeInterval(options.catchUpSeconds), rounds: 3)
                tellPlainSessions()
                return "\(applied) change(s) applied"
            }
            try recordStallAhead()
            try step(.barrier) {
                stallStarted = Date()
                // --pgbouncer: the application's new queries wait in PgBouncer for the switch.
                paused = try pausePgBouncers(deadline: stallStarted!.addingTimeInterval(options.maxStallSeconds / 2))
                try barrier!.lock(lockTimeout: options.maxStallSeconds / 2, connect: connect)
                // While the locks are held: no layout serves; writers that wait for the locks
                // (kept through the drain) meet the fence once they are released.
                try setFence(Fence.State(epoch: toEpoch, serving: .none), places: places, barrier: barrier)
                return paused.isEmpty ? nil : "paused " + paused.map { "\($0.database) on pgbouncer \($0.bouncer.admin.endpoint.description)" }.joined(separator: ", ")
            }
            try step(.drain) {
                try beforeDeadline("drain")
                let applied = try drain!.run(leave: 0, deadline: stallStarted!.addingTimeInterval(options.maxStallSeconds), fenced: true)
                return "\(applied) change(s) applied"
            }
            try step(.sequenceCheck) {
                try beforeDeadline("sequence-check")
                let advanced = try SequenceSync.check(sequences, margin: options.sequenceMargin, connect: connect)
                report.sequences += advanced
                // The swap's DDL would wait for the barrier's locks: writers go on, into the fence.
                barrier?.release()
                released = barrier
                barrier = nil
                return advanced.isEmpty ? nil : advanced.map(\.text).joined(separator: "; ")
            }
            try step(.swap) {
                // The application's triggers on the targets serve from here on (or stop, on
                // rollback), set where the tables are before the swap; then the shared databases swap.
                try beforeDeadline("swap")
                let tables = try Self.setTargetTriggers(enabled: direction == .cutover, plan: plan, locations: locations, connect: connect)
                _ = try Self.setTargetForeignKeys(adding: direction == .cutover, plan: plan, locations: locations, connect: connect)
                try beforeDeadline("swap")
                let left = options.maxStallSeconds - Date().timeIntervalSince(stallStarted!)
                let swapped = try Self.swapShared(plan, swappedIn: direction == .cutover, lockTimeout: left, connect: connect)
                return "triggers \(direction == .cutover ? "enabled" : "disabled") on \(tables) target table(s)"
                    + (swapped.isEmpty ? "" : "; swapped \(direction == .cutover ? "in" : "back") on \(swapped.joined(separator: ", "))")
            }
            try step(.publish) {
                try beforeDeadline("publish")
                try store.publish(attempt: attempt, map: ShardMap(plan: plan, layout: direction == .cutover ? .new : .old), epoch: toEpoch)
                // For the tests of a publish whose reply is lost: committed, yet this run sees an
                // error (or, `kill`, dies before it hears of it).
                if let lose = ProcessInfo.processInfo.environment["RESHARD_TEST_LOSE_PUBLISH_REPLY"] {
                    if lose == "kill" { kill(getpid(), SIGKILL) }
                    throw ReshardError.failed("the publish's reply was lost (RESHARD_TEST_LOSE_PUBLISH_REPLY)")
                }
                return "epoch \(toEpoch)"
            }
        } catch {
            barrier?.release()
            recordFinished()
            // The steps recorded ahead that this attempt never took (the one that failed keeps its record).
            if recordedAhead != nil, let failed = stallSteps.firstIndex(of: reached) {
                try? store.forget(Array(stallSteps[(failed + 1)...]), attempt: attempt)
            }
            // A publish whose reply was lost may have committed: then the switch only goes forward.
            // Not knowing (the metadata unreachable), neither undo nor complete: the next run reads it.
            let published: Bool
            do { published = reached == .publish ? try store.unfinished()?.state.published ?? false : false } catch {
                resumePgBouncers(paused)
                throw error
            }
            if published {
                notice("\(direction.rawValue): the epoch \(toEpoch) was published despite the error (\((error as? ReshardError)?.message ?? "\(error)")); finishing it")
                // complete() resumes every PgBouncer database; these only if it fails.
                do { try complete(direction, attempt: attempt, toEpoch: toEpoch) } catch {
                    resumePgBouncers(paused)
                    throw error
                }
                return
            }
            let why = (error as? ReshardError)?.message ?? (error as? PostgresError)?.summary ?? "\(error)"
            let shard = (error as? ReshardError)?.shard ?? (error as? PostgresError)?.endpoint?.label
            let at = "step \(reached.rawValue)" + (shard.map { " on shard \($0)" } ?? "")
            do {
                try undo(direction, attempt: attempt, fromEpoch: fromEpoch, error: "\(at): \(why)",
                         triggers: CutoverStateMachine.undo(reached: reached).swapBack)
            } catch {
                resumePgBouncers(paused)
                throw error
            }
            throw ReshardError.failed(
                "migration \(plan.migration): \(direction.rawValue) undone at \(at): \(why); the \(direction == .cutover ? "old" : "new") layout serves as before; run \(direction.rawValue) again",
                shard: shard)
        }
        // Published: from here on the switch only goes forward.
        try step(.release) {
            // On the barrier's sessions where it has them (idle since its commit), as the flip behind the barrier.
            try setFence(servingState(direction, epoch: toEpoch, to: true), places: places, barrier: released)
            return nil
        }
        let stall = Date().timeIntervalSince(stallStarted!) * 1000
        // Routers waiting for the fence retry now rather than at their next poll.
        try? store.announce()
        resumePgBouncers(paused)
        recordFinished()
        tellPlainSessions()
        report.stallMilliseconds = stall
        try store.end(attempt: attempt, outcome: "done", stallMilliseconds: stall, error: nil,
                      transition: direction == .cutover ? try machine.cutoverComplete() : try machine.rollbackComplete())
        // Only now, with the queries PgBouncer held resumed and the switch recorded as done.
        drain?.retire(after: CutoverDrain.retirePause)
        drain = nil
        released = nil
        report.lines.append(String(format: "%@ done: epoch %lld serves (%@ layout), writes stalled %.0f ms",
                                   direction.rawValue, toEpoch, direction == .cutover ? "new" : "old", stall))
        if direction == .cutover { validateTargetForeignKeys() }
    }

    /// After the release: validates the foreign keys the stall added NOT VALID. The switch is
    /// done whatever happens here; a key the existing rows violate stays NOT VALID (still checked
    /// for every new write) and is reported, as PostgreSQL would on its own `VALIDATE`.
    private func validateTargetForeignKeys() {
        do {
            _ = try Self.setTargetForeignKeys(adding: true, validate: true, plan: plan, locations: locations(swapped: true), connect: connect)
        } catch {
            let why = (error as? PostgresError)?.summary ?? "\(error)"
            report.lines.append("warning: foreign keys between the migrated tables stay NOT VALID on the targets: \(why)")
        }
    }

    /// Finishes a published switch whose coordinator died (or whose publish reply was lost):
    /// redoes the swap step's work, releases the fence, records the phase. The swap step came
    /// before the publish, but an undo may have run after it (the publish committed, its reply
    /// lost, then the undo's record failed): triggers, keys and the swap are set again, each
    /// idempotent, with the tables found where the catalog says, before the fence lets writes in.
    private func complete(_ direction: CutoverStateMachine.Direction, attempt: Int, toEpoch: Int64) throws {
        let now = TableLocations(plan, swapped: try TableLocations.read(plan, connect: connect))
        _ = try Self.setTargetTriggers(enabled: direction == .cutover, plan: plan, locations: now, connect: connect)
        _ = try Self.setTargetForeignKeys(adding: direction == .cutover, plan: plan, locations: now, connect: connect)
        _ = try Self.swapShared(plan, swappedIn: direction == .cutover, lockTimeout: max(1, options.maxStallSeconds), connect: connect)
        let places = locations(swapped: direction == .cutover).places(plan, direction)
        try setFence(servingState(direction, epoch: toEpoch, to: true), places: places)
        try? store.announce()
        resumeAllPgBouncers()
        try store.end(attempt: attempt, outcome: "done", stallMilliseconds: nil, error: nil,
                      transition: direction == .cutover ? try machine.cutoverComplete() : try machine.rollbackComplete())
        report.lines.append("finished the \(direction.rawValue) of attempt \(attempt): epoch \(toEpoch) serves")
        if direction == .cutover { validateTargetForeignKeys() }
    }

    /// Undoes an unpublished switch: the layout it started from serves again with its epoch.
    /// `triggers`: the swap step may have run, so the targets' triggers are set back as the
    /// layout the switch started from needs them. Whether each shared database swapped is read
    /// from its catalog (a coordinator may have died on either side of the commit), and what did
    /// is swapped back.
    private func undo(_ direction: CutoverStateMachine.Direction, attempt: Int?, fromEpoch: Int64, error: String, triggers: Bool = false) throws {
        let now = TableLocations(plan, swapped: try TableLocations.read(plan, connect: connect))
        let places = now.places(plan, direction)
        // Before the fence: no write reaches a layout whose triggers are not as it needs them.
        // Triggers first, where the tables are now, then the swap back (as the switch did it).
        if triggers {
            _ = try Self.setTargetTriggers(enabled: direction == .rollback, plan: plan, locations: now, connect: connect)
            _ = try Self.setTargetForeignKeys(adding: direction == .rollback, plan: plan, locations: now, connect: connect)
        }
        let started = locations(swapped: direction == .rollback)
        if now != started {
            // Not bounded by the stall (the fence holds every writer off meanwhile), but not left waiting forever either.
            var tries = 1
            while true {
                do {
                    _ = try Self.swapShared(plan, swappedIn: direction == .rollback, lockTimeout: max(1, options.maxStallSeconds), connect: connect)
                    break
                } catch let failure as ReshardError where tries < 5 {
                    tries += 1
                    notice("undo: swapping back: \(failure.message); trying again")
                } catch let failure as ReshardError {
                    // The fence stays at none (no layout serves): what the next run finishes or undoes.
                    throw ReshardError.failed(
                        "migration \(plan.migration): undoing the \(direction.rawValue): swapping back gave up after \(tries) attempts: \(failure.message); no layout serves writes until then: run cutover/rollback again",
                        shard: failure.shard)
                }
            }
        }
        try setFence(servingState(direction, epoch: fromEpoch, to: false), places: places)
        try? store.announce()
        resumeAllPgBouncers()
        let transition = direction == .cutover ? try machine.cutoverUndone() : try machine.rollbackUndone()
        if let attempt {
            try store.end(attempt: attempt, outcome: "undone", stallMilliseconds: nil, error: error, transition: transition)
        } else {
            try store.meta.transaction { try PhaseStore.write(transition, migration: plan.migration, on: $0) }
        }
        report.lines.append("undid the \(direction.rawValue)\(attempt.map { " of attempt \($0)" } ?? ""): epoch \(fromEpoch) serves (\(error))")
    }
}
