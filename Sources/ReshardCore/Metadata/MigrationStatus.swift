import Foundation
import PostgresClient

/// A migration's state as the metadata records it: what `reshard status` shows. Reading it needs
/// only the metadata database, so it works while `apply` runs elsewhere or after it died.
public struct MigrationStatus: Sendable, Codable {
    public struct Lease: Sendable, Codable {
        public var host: String
        public var pid: Int
        public var since: String
        public var heartbeatAt: String
        /// Whether the holder's session (and so the coordinator) is still alive.
        public var alive: Bool
    }

    public struct Slice: Sendable, Codable {
        public var table: String
        public var source: String
        public var target: String
        public var rowsCopied: Int64
        public var estimatedRows: Int64
        public var done: Bool
        public var staysInPlace: Bool
        public var rowsPerSecond: Double?
        public var etaSeconds: Double?
    }

    public struct CatchUp: Sendable, Codable {
        public var source: String
        public var backlog: Int64
        /// Age of the oldest change not yet applied, when the coordinator last looked.
        public var oldestChangeAgeSeconds: Double?
        public var appliedTotal: Int64
        public var updatedAt: String
    }

    /// Each table's last verification (`reshard verify`).
    public struct Verification: Sendable, Codable {
        public var table: String
        /// running, identical or different.
        public var outcome: String
        public var startedAt: String
        public var finishedAt: String?
        public var chunksDone: Int
        public var chunksTotal: Int
        public var sourceRows: Int64
        public var targetRows: Int64
        public var differences: Int64
    }

    public var migration: String
    public var phase: String
    public var updatedAt: String
    public var lastError: String?
    public var lastErrorAt: String?
    public var lease: Lease?
    public var slices: [Slice]
    public var catchUp: [CatchUp]
    public var rowsCopied: Int64
    public var estimatedRows: Int64
    public var backlog: Int64
    public var verification: [Verification] = []

    public static func read(migration: String, from meta: PGConnection) throws -> MigrationStatus {
        guard try meta.query("SELECT to_regclass('reshard.slices') IS NOT NULL").get(0, 0, as: Bool.self) else {
            throw ReshardError.refused("migration \(migration) is not registered (the metadata database has no reshard schema yet)")
        }
        let row = try meta.query(
            "SELECT phase, updated_at::text, last_error, last_error_at::text FROM reshard.migrations WHERE name = $1", [migration])
        guard row.rowCount == 1 else { throw ReshardError.refused("migration \(migration) is not registered; run 'reshard apply' first") }
        _ = try MigrationPhase.recorded(row[0, 0]!, migration: migration)
        let lease = try meta.query(
            """
            SELECT holder_host, holder_pid, acquired_at::text, heartbeat_at::text,
                   \(MetadataLock.apply.isHeldSQL(migrationParameter: 1))
            FROM reshard.leases WHERE migration = $1
            """, [migration])
        let slices = try meta.query(
            """
            SELECT table_name, source, target, rows_copied, estimated_rows, done, stays_in_place,
                   CASE WHEN updated_at > started_at THEN rows_copied / extract(epoch FROM updated_at - started_at) END::float8
            FROM reshard.slices WHERE migration = $1 ORDER BY table_name, source, target
            """, [migration])
        let catchUp = try meta.query(
            """
            SELECT source, backlog, extract(epoch FROM now() - oldest_change_at)::float8, applied_total, updated_at::text
            FROM reshard.catchup WHERE migration = $1 ORDER BY source
            """, [migration])
        var status = MigrationStatus(
            migration: migration, phase: row[0, 0]!, updatedAt: row[0, 1]!, lastError: row[0, 2], lastErrorAt: row[0, 3],
            lease: nil, slices: [], catchUp: [], rowsCopied: 0, estimatedRows: 0, backlog: 0)
        if lease.rowCount == 1 {
            status.lease = Lease(
                host: lease[0, 0]!, pid: try lease.get(0, 1), since: lease[0, 2]!, heartbeatAt: lease[0, 3]!,
                alive: try lease.get(0, 4))
        }
        for r in 0..<slices.rowCount {
            let copied: Int64 = try slices.get(r, 3), estimated: Int64 = try slices.get(r, 4)
            let done: Bool = try slices.get(r, 5)
            let rate: Double? = try slices.get(r, 7)
            let eta = rate.flatMap { $0 > 0 && !done ? Double(max(estimated - copied, 0)) / $0 : nil }
            status.slices.append(Slice(
                table: slices[r, 0]!, source: slices[r, 1]!, target: slices[r, 2]!, rowsCopied: copied, estimatedRows: estimated,
                done: done, staysInPlace: try slices.get(r, 6), rowsPerSecond: rate, etaSeconds: eta))
            if !(try slices.get(r, 6, as: Bool.self)) {
                status.rowsCopied += copied
                status.estimatedRows += estimated
            }
        }
        for r in 0..<catchUp.rowCount {
            let backlog: Int64 = try catchUp.get(r, 1)
            status.catchUp.append(CatchUp(
                source: catchUp[r, 0]!, backlog: backlog, oldestChangeAgeSeconds: backlog > 0 ? try catchUp.get(r, 2) : nil,
                appliedTotal: try catchUp.get(r, 3), updatedAt: catchUp[r, 4]!))
            status.backlog += backlog
        }
        if try meta.query("SELECT to_regclass('reshard.verify_tables') IS NOT NULL").get(0, 0, as: Bool.self) {
            let verified = try meta.query(
                """
                SELECT t.table_name, t.outcome, t.started_at::text, t.finished_at::text,
                       (SELECT count(*) FILTER (WHERE done) FROM reshard.verify_chunks c
                        WHERE c.migration = t.migration AND c.table_name = t.table_name)::int,
                       t.chunks_total, t.source_rows, t.target_rows, t.differences
                FROM reshard.verify_tables t WHERE t.migration = $1 ORDER BY t.table_name
                """, [migration])
            for r in 0..<verified.rowCount {
                status.verification.append(Verification(
                    table: verified[r, 0]!, outcome: verified[r, 1]!, startedAt: verified[r, 2]!, finishedAt: verified[r, 3],
                    chunksDone: try verified.get(r, 4), chunksTotal: try verified.get(r, 5), sourceRows: try verified.get(r, 6),
                    targetRows: try verified.get(r, 7), differences: try verified.get(r, 8)))
            }
        }
        return status
    }

    public var text: String {
        var lines = ["migration \(migration): phase \(phase) (updated \(updatedAt))"]
        if let lease {
            lines.append("coordinator: \(lease.host) pid \(lease.pid) since \(lease.since), \(lease.alive ? "running" : "not running")")
        }
        lines.append("rows copied: \(rowsCopied) of ~\(estimatedRows)")
        for s in slices where !s.staysInPlace {
            let rate = s.rowsPerSecond.map { String(format: ", %.0f rows/s", $0) } ?? ""
            let eta = s.etaSeconds.map { String(format: ", eta %.0fs", $0) } ?? ""
            lines.append("  \(s.table) \(s.source) -> \(s.target): \(s.rowsCopied)/\(s.estimatedRows)\(s.done ? " done" : "")\(rate)\(eta)")
        }
        for c in catchUp {
            let age = c.oldestChangeAgeSeconds.map { String(format: ", oldest %.1fs old", $0) } ?? ""
            lines.append("changelog \(c.source): \(c.backlog) waiting\(age), \(c.appliedTotal) applied")
        }
        for v in verification {
            let when = v.finishedAt.map { "at \($0)" } ?? "\(v.chunksDone)/\(v.chunksTotal) chunks, started \(v.startedAt)"
            let figures = "\(v.sourceRows.grouped) source rows, \(v.targetRows.grouped) target rows, \(v.differences.grouped) difference(s)"
            lines.append("verify \(v.table): \(v.outcome) \(when) (\(figures))")
        }
        if let lastError { lines.append("last error (\(lastErrorAt ?? "?")): \(lastError)") }
        return lines.joined(separator: "\n")
    }
}
