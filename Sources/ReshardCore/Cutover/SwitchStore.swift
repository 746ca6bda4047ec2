import Foundation
import PostgresClient
import ReshardRouting

/// The metadata of switches between layouts (`reshard.switches`, `reshard.switch_steps`): each
/// step is recorded before it is taken and marked finished after, and the epoch applications
/// route by is the last published switch's.
public struct SwitchStore {
    public let migration: String
    public let meta: PGConnection

    public init(migration: String, meta: PGConnection) {
        self.migration = migration
        self.meta = meta
    }

    /// The epoch applications route by now: the current epoch of the shard map (`ShardMapStore`,
    /// which `apply` starts at 1 with the old layout).
    public func currentEpoch() throws -> Int64 {
        try ShardMapStore.current(migration: migration, on: meta)?.epoch ?? 1
    }

    /// The last attempt, when it has not finished (its coordinator died).
    public func unfinished() throws -> (attempt: Int, fromEpoch: Int64, toEpoch: Int64, state: CutoverStateMachine.Unfinished)? {
        let row = try meta.query(
            """
            SELECT s.attempt, s.direction, s.published_at IS NOT NULL, s.from_epoch, s.to_epoch
            FROM reshard.switches s WHERE s.migration = $1 AND s.outcome IS NULL ORDER BY attempt DESC LIMIT 1
            """, [migration])
        guard row.rowCount == 1 else { return nil }
        let steps = CutoverStateMachine.Step.allCases
        // The furthest step recorded (several shards record the same step).
        let all = try meta.query("SELECT DISTINCT step FROM reshard.switch_steps WHERE migration = $1 AND attempt = $2",
                                 [migration, try row.get(0, 0, as: Int.self)])
        let reached = (0..<all.rowCount).compactMap { all[$0, 0].flatMap(CutoverStateMachine.Step.init(rawValue:)) }
            .max { steps.firstIndex(of: $0)! < steps.firstIndex(of: $1)! }
        return (try row.get(0, 0, as: Int.self), try row.get(0, 3, as: Int64.self), try row.get(0, 4, as: Int64.self),
                .init(direction: CutoverStateMachine.Direction(rawValue: row[0, 1] ?? "") ?? .cutover,
                      published: row[0, 2] == "t", reached: reached))
    }

    /// Records a new attempt (with the phase change it starts, in one transaction); returns its number.
    public func begin(_ direction: CutoverStateMachine.Direction, from: Int64, to: Int64,
                      transition: MigrationStateMachine.Transition?) throws -> Int {
        try meta.transaction { conn in
            if let transition { try PhaseStore.write(transition, migration: migration, on: conn) }
            let attempt = try conn.query(
                """
                INSERT INTO reshard.switches (migration, attempt, direction, from_epoch, to_epoch)
                SELECT $1, coalesce(max(attempt), 0) + 1, $2, $3, $4 FROM reshard.switches WHERE migration = $1 RETURNING attempt
                """, [migration, direction.rawValue, from, to]
            ).get(0, 0, as: Int.self)
            try EventLog.record(migration: migration, "\(direction.rawValue) attempt \(attempt) started: epoch \(from) -> \(to)", on: conn)
            return attempt
        }
    }

    /// Records that `step` (on `shard`) is about to be taken.
    public func starting(_ step: CutoverStateMachine.Step, attempt: Int, shard: String = "") throws {
        try meta.query(
            """
            INSERT INTO reshard.switch_steps (migration, attempt, step, shard) VALUES ($1, $2, $3, $4)
            ON CONFLICT (migration, attempt, step, shard) DO UPDATE SET started_at = clock_timestamp(), finished_at = NULL, error = NULL
            """, [migration, attempt, step.rawValue, shard])
    }

    /// Records, in one statement, that every step of `steps` (in order) may be taken from now on:
    /// the stall's steps, written before the barrier, so no metadata round trip is left inside
    /// the stall for recovery's sake. Recovery reads them as reached (`CutoverStateMachine.undo`
    /// then restores the fence and sets the targets' triggers back, both idempotent, and swaps
    /// back only what the catalog shows swapped), which is what a coordinator that died anywhere
    /// in the stall needs. Their start times are a microsecond apart, so they list in order;
    /// `finished(_:attempt:at:took:detail:)` sets each one's real timing, `forget` drops the steps
    /// an undone attempt never took.
    public func starting(_ steps: [CutoverStateMachine.Step], attempt: Int) throws {
        try meta.query(
            """
            INSERT INTO reshard.switch_steps (migration, attempt, step, shard, started_at)
            SELECT $1, $2, s.step, '', clock_timestamp() + make_interval(secs => s.n * 0.000001)
            FROM unnest($3::text[]) WITH ORDINALITY AS s (step, n)
            ON CONFLICT (migration, attempt, step, shard) DO UPDATE SET started_at = excluded.started_at, finished_at = NULL, error = NULL
            """, [migration, attempt, "{" + steps.map(\.rawValue).joined(separator: ",") + "}"])
    }

    /// Marks a step recorded by `starting(_:attempt:)` finished, with its timing measured by the
    /// coordinator: it started `at` seconds after the record was written and took `took` seconds.
    public func finished(_ step: CutoverStateMachine.Step, attempt: Int, at: Double, took: Double, detail: String?) throws {
        try meta.query(
            """
            UPDATE reshard.switch_steps SET started_at = started_at + make_interval(secs => $4::float8),
                finished_at = started_at + make_interval(secs => $4::float8 + $5::float8), detail = $6
            WHERE migration = $1 AND attempt = $2 AND step = $3 AND shard = ''
            """, [migration, attempt, step.rawValue, at, took, detail])
    }

    /// Drops the records of steps recorded ahead (`starting(_:attempt:)`) that an undone attempt never took.
    public func forget(_ steps: [CutoverStateMachine.Step], attempt: Int) throws {
        guard !steps.isEmpty else { return }
        try meta.query(
            "DELETE FROM reshard.switch_steps WHERE migration = $1 AND attempt = $2 AND shard = '' AND step = ANY ($3::text[]) AND finished_at IS NULL",
            [migration, attempt, "{" + steps.map(\.rawValue).joined(separator: ",") + "}"])
    }

    public func finished(_ step: CutoverStateMachine.Step, attempt: Int, shard: String = "", detail: String? = nil, error: String? = nil) throws {
        try meta.query(
            """
            UPDATE reshard.switch_steps SET finished_at = clock_timestamp(), detail = $5, error = $6
            WHERE migration = $1 AND attempt = $2 AND step = $3 AND shard = $4
            """, [migration, attempt, step.rawValue, shard, detail, error])
    }

    /// Publishes the attempt's layout as the shard map's next epoch (`ShardMapStore`) and marks the
    /// attempt published, in one transaction: the point of no return. Refuses, publishing nothing,
    /// when the map's next epoch is not the attempt's (someone else published meanwhile).
    public func publish(attempt: Int, map: ShardMap, epoch: Int64) throws {
        try meta.transaction { conn in
            let published = try ShardMapStore.publish(map, on: conn)
            guard published.epoch == epoch else {
                throw ReshardError.failed("migration \(migration): the shard map's next epoch is \(published.epoch), not \(epoch) (published by another reshard?)")
            }
            try conn.query("UPDATE reshard.switches SET published_at = clock_timestamp() WHERE migration = $1 AND attempt = $2",
                           [migration, attempt])
            try conn.query("SELECT pg_catalog.pg_notify($1, $2)", [Self.channel, migration])
        }
    }

    /// Where the switch's announcements go (`FenceSQLState.announcementChannel`).
    public static let channel = FenceSQLState.announcementChannel

    /// Announces on `channel` that the fence changed (released, or restored by an undo).
    public func announce() throws {
        try meta.query("SELECT pg_catalog.pg_notify($1, $2)", [Self.channel, migration])
    }

    /// Ends an attempt with its outcome and the phase change that goes with it, in one transaction.
    public func end(attempt: Int, outcome: String, stallMilliseconds: Double?, error: String?,
                    transition: MigrationStateMachine.Transition?) throws {
        try meta.transaction { conn in
            if let transition { try PhaseStore.write(transition, migration: migration, on: conn) }
            try conn.query(
                """
                UPDATE reshard.switches SET finished_at = clock_timestamp(), outcome = $3, stall_ms = coalesce($4, stall_ms),
                    error = coalesce($5, error)
                WHERE migration = $1 AND attempt = $2
                """, [migration, attempt, outcome, stallMilliseconds, error])
            let what = outcome == "done" ? "finished" : "undone"
            try EventLog.record(
                migration: migration, level: error == nil ? "info" : "warning",
                "switch attempt \(attempt) \(what)" + (stallMilliseconds.map { String(format: ", writes stalled %.0f ms", $0) } ?? "")
                    + (error.map { ": \($0)" } ?? ""), on: conn)
        }
    }
}
