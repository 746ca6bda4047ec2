import ArgumentParser
import Foundation
import PostgresClient
import ReshardCore

/// `reshard apply`: installs the shim, backfills, and keeps the targets caught up. Resumable:
/// run it again after a crash and it continues from the checkpoints in the metadata.
struct ApplyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "apply",
        abstract: "Copy the rows and keep the targets in sync, resuming from checkpoints.",
        discussion: """
            Runs until the backfill is done and the catch-up has caught up, then keeps the targets in sync until \
            stopped (Ctrl-C stops cleanly), unless --until says to return earlier. On stop it prints one line: where \
            it stopped and how to continue. Exit code 0 when --until's goal was reached or a plain apply was stopped; \
            4 when a signal stopped it before --until's goal (so 'apply --until caught-up && next-step' does not go on).
            With --json: progress as JSON lines on stderr, the outcome as one JSON object on stdout.
            """)

    @OptionGroup var migration: MigrationOptions

    @Option(name: .long, help: "Return once 'backfilled' or 'caught-up' instead of syncing until stopped.")
    var until: String?

    // Numbers take `.unconditional` parsing so "-5" is read as a value and refused by validate(),
    // not taken for an option ("Missing value").
    @Option(name: .long, parsing: .unconditional, help: "Backfill connections per shard.")
    var maxConnectionsPerShard = 4

    @Option(name: .long, parsing: .unconditional, help: "Backfill rate limit (change it while running with 'reshard throttle').")
    var maxRowsPerSecond: Int?

    @Option(name: .long, parsing: .unconditional, help: "Pause the backfill while more changes than this wait to be applied.")
    var maxBacklog: Int64 = 500_000

    @Option(
        name: .long, parsing: .unconditional,
        help: ArgumentHelp(
            "Pause the backfill (and slow the catch-up) while a source's streaming replicas lag more than this (30s, 500ms, 2m).",
            discussion: """
                Read on each source from pg_stat_replication, and on the replicas listed under 'replicas:' in the config as the age of \
                the last replayed commit, counted only while the replica has WAL to replay (an idle primary is no lag).
                """,
            valueName: "duration"))
    var maxReplicaLag = "30s"

    @Option(name: .long, parsing: .unconditional, help: "Give up (exit 1) once work has failed on a shard or the metadata database being away for this many seconds in a row.")
    var maxRetry: Double = 300

    @Flag(name: .long, help: "Create secondary indexes before the copy instead of after it.")
    var keepIndexes = false

    @Flag(
        name: .long,
        help: ArgumentHelp(
            "Only copy backfill slices of a migration another 'reshard apply' (the lease holder) runs; exit once all are copied.",
            discussion: """
                Start it on further machines so no one machine relays every row. Slices are claimed in the metadata; a process that \
                dies or stops heartbeating loses its slices to the others. The lease holder keeps the catch-up, verify and cutover. \
                --max-rows-per-second applies per process.
                """))
    var workersOnly = false

    @OptionGroup var allow: AllowOptions

    @OptionGroup var output: OutputOptions

    @OptionGroup var metrics: MetricsOptions

    func validate() throws {
        if workersOnly, until != nil { throw ValidationError("--workers-only copies until the backfill is done: it takes no --until") }
        if let until, !["backfilled", "caught-up"].contains(until) {
            throw ValidationError("--until must be backfilled or caught-up")
        }
        guard maxConnectionsPerShard >= 1 else { throw ValidationError("--max-connections-per-shard must be at least 1") }
        try RateLimit.validate(maxRowsPerSecond)
        // A negative limit is never exceeded... by nothing: it would pause the backfill forever.
        guard maxBacklog >= 1 else { throw ValidationError("--max-backlog must be at least 1, not \(maxBacklog)") }
        guard maxRetry > 0, maxRetry.isFinite else { throw ValidationError("--max-retry must be a positive number of seconds, not \(maxRetry)") }
        guard let lag = DurationText.seconds(maxReplicaLag), lag > 0 else {
            throw ValidationError("--max-replica-lag must be a positive duration like 30s, 500ms or 2m, not '\(maxReplicaLag)'")
        }
    }

    func run() throws {
        TerminationSignal.install()
        // The coordinator's metadata session is opened while the planner reads the shards.
        let metadataSession = workersOnly ? nil : EarlySession(try? migration.metadataOnly().metadata)
        let planningStarted = Date()
        let target = try Self.planning(migration: (try? migration.metadataOnly().name) ?? "", window: maxRetry) {
            try migration.resolve(sampleRows: Self.estimateSampleRows, allowances: allow.allowances)
        }
        var options = ApplyOptions()
        options.goal = until.flatMap(MigrationStateMachine.Goal.init(rawValue:)) ?? .forever
        options.maxConnectionsPerShard = maxConnectionsPerShard
        options.maxRowsPerSecond = maxRowsPerSecond
        options.maxBacklog = maxBacklog
        options.maxReplicationLagSeconds = DurationText.seconds(maxReplicaLag) ?? 30
        options.replicas = target.replicas
        options.keepIndexes = keepIndexes
        options.keysJustChecked = migration.plan == nil
        options.retry.window = maxRetry
        let coordinator = Coordinator(plan: target.plan, shards: target.shards, metadata: target.metadata, options: options)
        coordinator.planningSeconds = Date().timeIntervalSince(planningStarted)
        let progress = ProgressPrinter(json: output.json)
        let endpoint = try metrics.start()
        let figures = ReshardMetrics(migration: target.plan.migration)
        defer { withExtendedLifetime(endpoint) {} }
        let outcome: ApplyOutcome
        do {
            outcome = try workersOnly
                ? coordinator.runWorkersOnly(
                    shouldStop: { TerminationSignal.received }, report: { p in
                        figures.record(p)
                        progress.show(p)
                    }, notice: Console.plain)
                : coordinator.run(
                shouldStop: { TerminationSignal.received },
                report: { p in
                    figures.record(p)
                    progress.show(p)
                }, notice: Console.plain, metadataSession: metadataSession?.take())
        } catch {
            throw Self.failure(error, migration: target.plan.migration)
        }
        if output.json { try Console.json(outcome) } else { Console.out(Self.summary(outcome)) }
        if outcome.goal != .forever && !outcome.reachedGoal { throw ExitCode(ReshardError.Code.stoppedEarly.exitCode) }
    }

    /// Rows sampled per table and source for the slice estimates, a tenth of `plan`'s: apply's
    /// estimates only size its progress line and `status`'s ETA (each slice is copied to its end
    /// whatever it says), and at 1,000,000 rows `plan`'s 100,000-row page sample costs 80 ms per table
    /// before anything is copied, while 10,000 rows put each target's share within about 1%.
    static let estimateSampleRows = 10_000

    /// Plans through a session lost at startup (terminated, its server restarting: the planner
    /// says so with a transient cause) as the rest of `apply` rides through them, each retry an
    /// event, for up to `window` seconds (`--max-retry`); then it fails with exit 1. Bad input
    /// (exit 2) is never retried: it would be refused again.
    static func planning(migration: String, window: TimeInterval, _ plan: () throws -> MigrationTarget) throws -> MigrationTarget {
        var run = RetryPolicy.Run(RetryPolicy(window: window))
        while true {
            do { return try plan() } catch {
                let cause = (error as? ReshardError).flatMap { $0.code == .failed ? $0.underlying : nil } ?? error
                guard let lost = cause as? PostgresError, lost.isTransient else { throw error }
                if TerminationSignal.received { throw error }
                guard let retry = run.failed(lost) else { throw run.gaveUp("plan", lost, shard: lost.endpoint?.label) }
                EventLog.log(
                    migration: migration, level: "warning",
                    String(format: "retrying plan: %@ (attempt %d in %.1fs)", retry.error, retry.failures + 1, retry.delay), shard: retry.shard)
                Thread.sleep(forTimeInterval: retry.delay)
            }
        }
    }

    /// A runtime failure (exit 1) leaves the shim on the sources, logging every write: says so,
    /// and how to go on or remove it. Refusals (exit 2) changed nothing and pass unchanged.
    static func failure(_ error: Error, migration: String) -> Error {
        let message: String
        switch error {
        case let error as ReshardError where error.code == .failed: message = error.description
        case let error as PostgresError where error.code != .connectionFailed && error.code != .invalidConnectionString:
            message = error.summary
        default: return error
        }
        return ReshardError.failed(
            message + "\nmigration \(migration): the sources keep the shim (once installed) and log every write: "
                + "run 'reshard apply' again once fixed to resume, or 'reshard abort' to remove it", underlying: error)
    }

    /// The line printed on stop: where it stopped and how to continue.
    static func summary(_ outcome: ApplyOutcome) -> String {
        let p = outcome.progress
        let rows = RowProgress(copied: p.rowsCopied, estimated: p.rowsEstimated, done: p.tables.allSatisfy(\.done))
        let figures = "\(rows.text) rows copied, backlog \(p.backlog.grouped)"
        let again = "reshard " + CommandLine.arguments.dropFirst().joined(separator: " ")
        if outcome.goal == .forever {
            return "migration \(p.migration): stopped in phase \(p.phase.rawValue) (\(figures)); run '\(again)' to keep the targets in sync"
        }
        if outcome.reachedGoal {
            return "migration \(p.migration): reached \(outcome.goal.rawValue), phase \(p.phase.rawValue) (\(figures))"
        }
        return "migration \(p.migration): stopped in phase \(p.phase.rawValue) before reaching \(outcome.goal.rawValue) (\(figures)); "
            + "run '\(again)' to continue"
    }
}

/// A session to the metadata database whose handshake is made on a thread of its own, beside the
/// planner's (a handshake is a fixed cost of every `apply`, paid before the copy starts). When it
/// cannot be opened, `take` gives nil and the coordinator opens its own, which reports the error.
/// Why `@unchecked Sendable`: every field is read and written under `condition`.
final class EarlySession: @unchecked Sendable {
    private let condition = NSCondition()
    private var opening = true
    private var session: PGConnection?

    init(_ dsn: ConnectionString?) {
        guard let dsn else {
            opening = false
            return
        }
        let thread = Thread { [self] in
            let opened = try? PGConnection.connect(dsn, applicationName: "reshard apply")
            condition.withLock {
                session = opened
                opening = false
                condition.broadcast()
            }
        }
        thread.name = "reshard metadata connect"
        thread.start()
    }

    /// The session, once its handshake ended (nil when it failed); given out once.
    func take() -> PGConnection? {
        condition.withLock {
            while opening { condition.wait() }
            defer { session = nil }
            return session
        }
    }
}
