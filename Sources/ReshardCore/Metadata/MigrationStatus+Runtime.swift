import Foundation
import PostgresClient

/// What the coordinator's runtime stores for `status` (schema version 8): the rate limit in force
/// and where it came from, why the backfill is paused, the work being retried, and whether each
/// changelog grows or drains.
extension MigrationStatus {
    public struct Runtime: Sendable, Codable {
        public struct Retry: Sendable, Codable {
            /// What is retried: `copy users s0 -> t1`, `catch-up s1`, `prepare`, `metadata`.
            public var work: String
            public var shard: String?
            public var failures: Int
            public var since: String
            public var lastError: String
        }

        public struct Trend: Sendable, Codable {
            public var source: String
            /// Changes per second written on the source and applied to the targets.
            public var producedPerSecond: Double
            public var appliedPerSecond: Double
            /// Seconds until the changelog is empty at the current rates, when it drains.
            public var etaSeconds: Double?
            public var fallingBehind: Bool
        }

        public var maxRowsPerSecond: Int?
        /// `apply --max-rows-per-second` or `reshard throttle`.
        public var maxRowsPerSecondSource: String?
        public var maxRowsPerSecondSetAt: String?
        public var pausedReason: String?
        public var pausedSince: String?
        public var retries: [Retry]
        public var trends: [Trend]
    }

    static func readRuntime(migration: String, backlogs: [String: Int64], from meta: PGConnection) throws -> Runtime? {
        guard try meta.query("SELECT to_regclass('reshard.retries') IS NOT NULL").get(0, 0, as: Bool.self) else { return nil }
        let row = try meta.query(
            """
            SELECT max_rows_per_second, max_rows_per_second_source, max_rows_per_second_at::text, paused_reason, paused_since::text
            FROM reshard.migrations WHERE name = $1
            """, [migration])
        guard row.rowCount == 1 else { return nil }
        var runtime = Runtime(
            maxRowsPerSecond: row[0, 0].flatMap { Int($0) }, maxRowsPerSecondSource: row[0, 1], maxRowsPerSecondSetAt: row[0, 2],
            pausedReason: row[0, 3], pausedSince: row[0, 4], retries: [], trends: [])
        let retries = try meta.query(
            "SELECT work, shard, failures, since::text, last_error FROM reshard.retries WHERE migration = $1 ORDER BY since, work", [migration])
        for r in 0..<retries.rowCount {
            runtime.retries.append(.init(
                work: retries[r, 0]!, shard: retries[r, 1], failures: try retries.get(r, 2), since: retries[r, 3]!, lastError: retries[r, 4]!))
        }
        let trends = try meta.query(
            """
            SELECT source, produced_per_second, applied_per_second FROM reshard.catchup
            WHERE migration = $1 AND produced_per_second IS NOT NULL AND applied_per_second IS NOT NULL ORDER BY source
            """, [migration])
        for r in 0..<trends.rowCount {
            let source = trends[r, 0]!
            let produced: Double = try trends.get(r, 1), applied: Double = try trends.get(r, 2)
            runtime.trends.append(Runtime.trend(source: source, produced: produced, applied: applied, backlog: backlogs[source] ?? 0))
        }
        return runtime
    }

    var runtimeLines: [String] {
        guard let runtime else { return [] }
        var lines: [String] = []
        if let limit = runtime.maxRowsPerSecond {
            let source = runtime.maxRowsPerSecondSource.map { ", set by \($0)\(runtime.maxRowsPerSecondSetAt.map { " at \($0)" } ?? "")" } ?? ""
            lines.append("backfill limit: \(Int64(limit).grouped) rows/s\(source)")
        }
        if let reason = runtime.pausedReason {
            lines.append("backfill paused\(runtime.pausedSince.map { " since \($0)" } ?? ""): \(reason)")
        }
        for retry in runtime.retries {
            lines.append("retrying \(retry.work): \(retry.lastError) (\(Runtime.ordinal(retry.failures + 1)) attempt, since \(retry.since))")
        }
        for trend in runtime.trends where trend.producedPerSecond > 0 || trend.appliedPerSecond > 0 {
            lines.append("changelog \(trend.source): \(trend.text)")
        }
        return lines
    }
}

extension MigrationStatus.Runtime {
    /// A changelog falls behind while it grows (more produced than applied, and not empty); it
    /// drains, with an ETA, while more is applied than produced.
    public static func trend(source: String, produced: Double, applied: Double, backlog: Int64) -> Trend {
        let behind = backlog > 0 && produced > applied
        let eta = backlog > 0 && applied > produced ? Double(backlog) / (applied - produced) : nil
        return Trend(source: source, producedPerSecond: produced, appliedPerSecond: applied, etaSeconds: eta, fallingBehind: behind)
    }

    static func ordinal(_ n: Int) -> String {
        let suffix = (11...13).contains(n % 100) ? "th" : [1: "st", 2: "nd", 3: "rd"][n % 10] ?? "th"
        return "\(n)\(suffix)"
    }
}

extension MigrationStatus.Runtime.Trend {
    /// `falling behind: 7,000 changes/s produced, 1,200 applied` or `draining: ..., in sync in ~42s`.
    public var text: String {
        let rates = "\(Int64(producedPerSecond.rounded()).grouped) changes/s produced, \(Int64(appliedPerSecond.rounded()).grouped) applied"
        if fallingBehind { return "falling behind: \(rates)" }
        if let etaSeconds { return "draining: \(rates), in sync in ~\(Int(etaSeconds.rounded()))s" }
        return "keeping up: \(rates)"
    }
}
