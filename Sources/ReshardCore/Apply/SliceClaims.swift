import Foundation
import PostgresClient

/// Backfill slices shared between processes: the lease holder and any number of
/// `apply --workers-only` processes (on other machines, so no one machine relays every row).
///
/// Before its first batch (and again on every new metadata session) a process claims its slice in
/// the metadata: one `UPDATE` of the slice's row, found `FOR UPDATE SKIP LOCKED` (a process
/// claiming it at the same moment is skipped, not waited for), which succeeds only when the slice
/// is not done and free, already ours, or held by a dead claimer. A claimer is dead when the
/// metadata session it claimed with is gone (the process died: its connections closed, so it is
/// taken over at once) or its heartbeat, refreshed every second for every slice it holds (`tick`),
/// is older than `expirySeconds` (it hangs or lost the network).
///
/// Every batch's checkpoint is written only while the claim is still this process's
/// (`checkpoint`), by the `UPDATE` that writes the checkpoint anyway: that
/// is what stops a process whose slice was taken over, without a round trip of its own per batch,
/// and it never writes its checkpoint over the new holder's. Its last batch may still have
/// committed on the target after the new holder started from the last checkpoint: the new
/// holder's batch then meets those rows and goes through the staging table with `ON CONFLICT DO
/// NOTHING` (`SliceCopier`), so every row ends up copied once in effect.
///
/// Only the lease holder runs the catch-up, verify and cutover; it learns of slices copied
/// elsewhere from the metadata every second (`tick`), which is when their changes start to be
/// applied. `--max-rows-per-second` applies per process.
///
/// Why `@unchecked Sendable`: immutable but for `pending`, touched under `lock`.
final class SliceClaims: @unchecked Sendable {
    let migration: String
    private let lock = NSLock()
    /// The slices `tick` has not yet seen done (nil before its first read of them all): a slice
    /// once done stays done, so a tick reads only these, never every done slice of a big plan.
    private var pending: Set<ApplyState.SliceKey>?
    /// `host pid N run XXXXXXXX`: who holds a claim, for people and for `tick`.
    let worker: String
    let expirySeconds: Double

    init(migration: String, expirySeconds: Double = 10) {
        self.migration = migration
        worker = "\(ProcessInfo.processInfo.hostName) pid \(getpid()) run \(UUID().uuidString.prefix(8).lowercased())"
        self.expirySeconds = expirySeconds
    }

    /// Claims (or keeps) `key` for this process on `meta`; false when another live process holds
    /// it or it is done. On success the in-memory checkpoint is set from the metadata's (a slice
    /// taken over continues where its last holder's checkpoint is).
    ///
    /// A slice the metadata records as done is taken as done here too, with the metadata's
    /// checkpoint: the checkpoint that finished it may have committed while its reply was lost (the
    /// metadata database restarting), and a process that kept it pending would claim it again and
    /// again, refused every time, with the backfill never ending.
    func claim(_ key: ApplyState.SliceKey, on meta: PGConnection, state: ApplyState) throws -> Bool {
        let row = try meta.query(
            """
            WITH free AS (
                SELECT ctid FROM reshard.slices
                WHERE migration = $1 AND table_name = $2 AND source = $3 AND target = $4 AND NOT done
                  AND (claimed_by IS NULL OR claimed_by = $5 OR heartbeat_at < now() - make_interval(secs => $6)
                       OR NOT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = claimed_session))
                FOR UPDATE SKIP LOCKED)
            UPDATE reshard.slices s SET claimed_by = $5, claimed_session = pg_backend_pid(), heartbeat_at = now()
            FROM free WHERE s.ctid = free.ctid
            RETURNING s.rows_copied, array_to_json(s.last_key)::text
            """, [migration, key.table, key.source, key.target, worker, expirySeconds])
        guard row.rowCount == 1 else {
            let done = try meta.query(
                """
                SELECT rows_copied, array_to_json(last_key)::text FROM reshard.slices
                WHERE migration = $1 AND table_name = $2 AND source = $3 AND target = $4 AND done
                """, [migration, key.table, key.source, key.target])
            if done.rowCount == 1 {
                state.setCheckpoint(key, copied: try done.get(0, 0, as: Int64.self), lastKey: Self.decodeKey(done[0, 1]), done: true)
            } else {
                state.addClaimedElsewhere(key)
            }
            return false
        }
        let lastKey = Self.decodeKey(row[0, 1])
        if state.slice(key).lastKey != lastKey { state.setCheckpoint(key, copied: try row.get(0, 0, as: Int64.self), lastKey: lastKey, done: false) }
        return true
    }

    private static func decodeKey(_ json: String?) -> [String]? {
        json.flatMap { try? JSONDecoder().decode([String].self, from: Data($0.utf8)) }
    }

    /// Writes a batch's checkpoint (committed on the target) and refreshes the heartbeat, only
    /// while `key` is still claimed by this process (`worker` names one run of one process). False
    /// when the claim was taken over: nothing is written, and the slice is left to its new holder.
    func checkpoint(_ key: ApplyState.SliceKey, on meta: PGConnection, state: ApplyState, rows: Int, lastKey: [String]?, done: Bool) throws -> Bool {
        let updated = try meta.query(
            """
            UPDATE reshard.slices SET rows_copied = rows_copied + $5, last_key = $6::text[], done = $7,
                started_at = coalesce(started_at, now()), updated_at = now(), heartbeat_at = now()
            WHERE migration = $1 AND table_name = $2 AND source = $3 AND target = $4
              AND claimed_by = $8
            """, [migration, key.table, key.source, key.target, rows, lastKey, done, worker]).affectedRows
        guard updated == 1 else {
            state.addClaimedElsewhere(key)
            return false
        }
        if done, Self.losesCheckpointReply(key) {
            throw PostgresError(
                code: .connectionLost, message: "the checkpoint's reply was lost (RESHARD_TEST_LOSE_CHECKPOINT_REPLY)", endpoint: meta.endpoint)
        }
        return true
    }

    /// For tests only: with `RESHARD_TEST_LOSE_CHECKPOINT_REPLY=<table>`, the checkpoint that
    /// finishes the first slice of that table is committed, yet this process sees the connection
    /// lost (as when the metadata database restarts before the reply reaches it). Once per process.
    private static let plantedLostReply = ProcessInfo.processInfo.environment["RESHARD_TEST_LOSE_CHECKPOINT_REPLY"]
    private static let plantedLock = NSLock()
    nonisolated(unsafe) private static var plantedDone = false

    private static func losesCheckpointReply(_ key: ApplyState.SliceKey) -> Bool {
        guard let table = plantedLostReply, table == key.table || "public.\(key.table)" == table else { return false }
        return plantedLock.withLock {
            defer { plantedDone = true }
            return !plantedDone
        }
    }

    /// Once a second on the control loop: the heartbeat of every claim this process holds, and
    /// the checkpoints of the slices other processes copy, and of every slice the metadata
    /// records as done (one of ours whose finishing checkpoint's reply was lost, too). Reads only
    /// the slices not yet seen done (all of them the first time).
    func tick(_ meta: PGConnection, state: ApplyState) throws {
        try meta.query(
            "UPDATE reshard.slices SET heartbeat_at = now() WHERE migration = $1 AND claimed_by = $2 AND NOT done", [migration, worker])
        let known = lock.withLock { pending }
        if let known, known.isEmpty {
            state.setClaimedElsewhere([])
            return
        }
        let among = try known.map { keys in
            String(decoding: try JSONEncoder().encode(keys.map { [$0.table, $0.source, $0.target] }), as: UTF8.self)
        }
        let rows = try meta.query(
            """
            SELECT table_name, source, target, rows_copied, array_to_json(last_key)::text, done,
                   NOT done AND claimed_by IS NOT NULL AND heartbeat_at >= now() - make_interval(secs => $3)
                   AND EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = claimed_session),
                   claimed_by IS DISTINCT FROM $2 OR done
            FROM reshard.slices WHERE migration = $1
              AND ($4::json IS NULL OR (table_name, source, target) IN (SELECT e->>0, e->>1, e->>2 FROM json_array_elements($4::json) e))
            """, [migration, worker, expirySeconds, among])
        var elsewhere: Set<ApplyState.SliceKey> = []
        var stillPending: Set<ApplyState.SliceKey> = []
        for r in 0..<rows.rowCount {
            let key = ApplyState.SliceKey(table: rows[r, 0]!, source: rows[r, 1]!, target: rows[r, 2]!)
            if rows[r, 5] != "t" { stillPending.insert(key) }
            if rows[r, 6] == "t" { elsewhere.insert(key) }
            guard rows[r, 7] == "t", !state.slice(key).running else { continue }
            state.setCheckpoint(
                key, copied: try rows.get(r, 3, as: Int64.self),
                lastKey: rows[r, 4].flatMap { try? JSONDecoder().decode([String].self, from: Data($0.utf8)) }, done: rows[r, 5] == "t")
        }
        lock.withLock { pending = stillPending }
        state.setClaimedElsewhere(elsewhere)
    }

    /// Gives up this process's claims (a clean stop), so others take them over at once.
    func releaseAll(_ meta: PGConnection) throws {
        try meta.query(
            "UPDATE reshard.slices SET claimed_by = NULL, claimed_session = NULL WHERE migration = $1 AND claimed_by = $2 AND NOT done",
            [migration, worker])
    }
}

extension Coordinator {
    /// `apply --workers-only`: copies backfill slices of a migration the lease holder runs, until
    /// every slice is copied (exit 0) or a stop. Takes no lease, installs nothing, applies no
    /// change: it waits for the lease holder to have installed the shim (phase `backfilling`),
    /// then claims slices like the lease holder's own backfill workers (`SliceClaims`).
    public func runWorkersOnly(shouldStop: () -> Bool, report: (ApplyProgress) -> Void, notice: (String) -> Void) throws -> ApplyOutcome {
        let meta = try PGConnection.connect(metadataDSN, applicationName: "reshard apply --workers-only")
        _ = try MetadataSchema.current.apply(to: meta)
        var waiting = false
        var phase = MigrationPhase.planned
        while true {
            let row = try meta.query("SELECT phase, plan::text FROM reshard.migrations WHERE name = $1", [plan.migration])
            guard row.rowCount == 1 else {
                throw ReshardError.refused("migration \(plan.migration) is not registered: start 'reshard apply' (the lease holder) first")
            }
            phase = try MigrationPhase.recorded(row[0, 0] ?? "", migration: plan.migration)
            if phase != .planned && phase != .prepared {
                try checkStillMatches(try JSONDecoder().decode(Plan.self, from: Data((row[0, 1] ?? "{}").utf8)))
                break
            }
            if !waiting { notice("migration \(plan.migration): waiting for the lease holder to install the shim (phase \(phase.rawValue))") }
            waiting = true
            if shouldStop() { return ApplyOutcome(goal: .backfilled, reachedGoal: false, progress: progress(phase, rate: 0)) }
            usleep(500_000)
        }
        try loadCheckpoints(meta)
        try EventLog.record(migration: plan.migration, level: "info", "backfill worker \(sliceClaims.worker) started", on: meta)
        let stored = try readLimit(meta)
        state.setRateLimit(options.maxRowsPerSecond ?? stored)
        if phase == .backfilling { startBackfill() }
        defer {
            stopWorkers()
            try? sliceClaims.releaseAll(meta)
        }
        var stopped = false
        while state.pendingSlices > 0 {
            if let failure = state.firstFailure { throw failure }
            if shouldStop() {
                stopped = true
                break
            }
            try sliceClaims.tick(meta, state: state)
            // The lease holder decides the pause (backlog, replica lag); this process follows it.
            let paused = try meta.query("SELECT paused_reason FROM reshard.migrations WHERE name = $1", [plan.migration])
            state.setPaused(paused.rowCount == 1 ? paused[0, 0] : nil)
            for event in state.takeEvents() {
                try EventLog.record(migration: plan.migration, level: event.level, event.message, shard: event.shard, on: meta)
            }
            report(progress(.backfilling, rate: 0))
            state.wait(1)
        }
        stopWorkers()
        if let failure = state.firstFailure { throw failure }
        try EventLog.record(migration: plan.migration, level: "info", "backfill worker \(sliceClaims.worker) done", on: meta)
        return ApplyOutcome(goal: .backfilled, reachedGoal: !stopped, progress: progress(.backfilling, rate: 0))
    }
}
