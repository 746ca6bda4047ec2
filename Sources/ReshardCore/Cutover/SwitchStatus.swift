import Foundation
import PostgresClient

/// What `status` shows of cutover and rollback: the epoch applications route by, the last
/// switch's steps with their timings, the reverse backlog (with `--live`), and what cleanup removes.
public struct SwitchStatus: Sendable, Codable {
    public struct Step: Sendable, Codable {
        public var step: String
        public var shard: String?
        public var milliseconds: Double?
        public var detail: String?
        public var error: String?
    }

    public struct Attempt: Sendable, Codable {
        public var attempt: Int
        public var direction: String
        public var fromEpoch: Int64
        public var toEpoch: Int64
        public var startedAt: String
        public var outcome: String?
        public var stallMilliseconds: Double?
        public var error: String?
        public var steps: [Step]
    }

    public var epoch: Int64
    /// `old` or `new`: the layout serving the epoch.
    public var serving: String
    public var last: Attempt?
    /// Changes on the new layout not yet applied to the old one, counted on the targets (`status --live`).
    public var reverseBacklog: Int64?
    public var cleanupWillRemove: [String]

    /// nil before the metadata has switches (older schema) or when the migration never switched.
    public static func read(migration: String, phase: MigrationPhase?, from meta: PGConnection) throws -> SwitchStatus? {
        guard try meta.query("SELECT to_regclass('reshard.switches') IS NOT NULL").get(0, 0, as: Bool.self) else { return nil }
        let store = SwitchStore(migration: migration, meta: meta)
        let last = try meta.query(
            """
            SELECT attempt, direction, from_epoch, to_epoch, started_at::text, outcome, stall_ms, error
            FROM reshard.switches WHERE migration = $1 ORDER BY attempt DESC LIMIT 1
            """, [migration])
        guard last.rowCount == 1 else { return nil }
        let attempt = try last.get(0, 0, as: Int.self)
        let steps = try meta.query(
            """
            SELECT step, nullif(shard, ''), (extract(epoch FROM finished_at - started_at) * 1000)::float8, detail, error
            FROM reshard.switch_steps WHERE migration = $1 AND attempt = $2 ORDER BY started_at
            """, [migration, attempt])
        let served = try meta.query(
            "SELECT direction FROM reshard.switches WHERE migration = $1 AND published_at IS NOT NULL ORDER BY attempt DESC LIMIT 1", [migration])
        let plan = try MigrationStatus.registeredPlan(migration: migration, on: meta)
        return SwitchStatus(
            epoch: try store.currentEpoch(), serving: served.rowCount == 1 && served[0, 0] == "cutover" ? "new" : "old",
            last: Attempt(
                attempt: attempt, direction: last[0, 1]!, fromEpoch: try last.get(0, 2), toEpoch: try last.get(0, 3), startedAt: last[0, 4]!,
                outcome: last[0, 5], stallMilliseconds: try last.get(0, 6), error: last[0, 7],
                steps: try (0..<steps.rowCount).map {
                    Step(step: steps[$0, 0]!, shard: steps[$0, 1], milliseconds: try steps.get($0, 2), detail: steps[$0, 3], error: steps[$0, 4])
                }),
            reverseBacklog: nil,
            cleanupWillRemove: phase == .cutOver ? MigrationCleanup.willRemove(plan, dropSources: false) : [])
    }

    /// Counts the reverse changelogs on the targets now.
    public mutating func readReverseBacklog(plan: Plan, shards: [String: ConnectionString]) throws {
        let reversed = plan.reversed()
        var total: Int64 = 0
        for source in reversed.sources {
            guard let dsn = shards[source.name] else { continue }
            let conn = try PGConnection.connect(dsn, applicationName: "reshard status", settings: ["default_transaction_read_only": "on"])
            for table in reversed.tables {
                let log = Shim.logTable(migration: reversed.migration, table: table)
                guard try conn.query("SELECT to_regclass($1) IS NOT NULL", [log]).get(0, 0, as: Bool.self) else { continue }
                total += try conn.query("SELECT count(*) FROM \(log)").get(0, 0, as: Int64.self)
            }
        }
        reverseBacklog = total
    }

    public var lines: [String] {
        var lines = ["epoch \(epoch): the \(serving) layout serves"]
        if let last {
            let outcome = last.outcome ?? "unfinished"
            lines.append("last switch: \(last.direction) attempt \(last.attempt), epoch \(last.fromEpoch) -> \(last.toEpoch), \(outcome)"
                + (last.stallMilliseconds.map { String(format: ", writes stalled %.0f ms", $0) } ?? "") + (last.error.map { ": \($0)" } ?? ""))
            for step in last.steps {
                lines.append("  \(step.step)\(step.shard.map { " \($0)" } ?? ""): "
                    + (step.milliseconds.map { String(format: "%.1f ms", $0) } ?? "not finished") + (step.error.map { " (\($0))" } ?? ""))
            }
        }
        if let reverseBacklog { lines.append("reverse changelog: \(reverseBacklog.grouped) waiting (applied to the old layout by rollback)") }
        for item in cleanupWillRemove { lines.append("cleanup will remove \(item)") }
        return lines
    }
}
