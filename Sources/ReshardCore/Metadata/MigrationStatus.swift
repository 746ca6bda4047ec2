import Foundation
import PostgresClient

/// A migration's state as the metadata records it: what `reshard status` shows. Reading it needs
/// only the metadata database, so it works while `apply` runs elsewhere or after it died.
///
/// The figures are only as fresh as the coordinator that wrote them: every one carries the time
/// its row was written, and when no coordinator is alive the status says so instead of letting a
/// stored "in-sync, 0 waiting" pass for the present (writes since are not applied). `readLiveBacklog`
/// counts the changelogs on the sources instead (`status --live`).
public struct MigrationStatus: Sendable, Codable {
    public struct Lease: Sendable, Codable {
        public var host: String
        public var pid: Int
        public var since: String
        public var heartbeatAt: String
        /// Whether the holder's session (and so the coordinator) is still alive.
        public var alive: Bool
        public var heartbeatAgeSeconds: Double
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
        /// When this slice's row was last written, and how long ago.
        public var updatedAt: String
        public var ageSeconds: Double
    }

    public struct CatchUp: Sendable, Codable {
        public var source: String
        public var backlog: Int64
        /// Age of the oldest change not yet applied, when the coordinator last looked.
        public var oldestChangeAgeSeconds: Double?
        public var appliedTotal: Int64
        public var updatedAt: String
        public var ageSeconds: Double
        /// The backlog was counted on the source just now (`status --live`), not read from the metadata.
        public var live = false
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
    public var ageSeconds: Double
    /// Whether a coordinator holds the apply lease now (its figures are current).
    public var coordinatorRunning: Bool
    public var lastError: String?
    public var lastErrorAt: String?
    public var lease: Lease?
    public var slices: [Slice]
    public var catchUp: [CatchUp]
    public var rowsCopied: Int64
    public var estimatedRows: Int64
    public var backlog: Int64
    /// Whether `backlog` was counted on the sources just now.
    public var backlogLive = false
    public var verification: [Verification] = []
    /// Per target: whether it is a source's database and where its tables are built.
    public var targets: [Plan.Placement] = []
    /// Rate limit, pause, retries and changelog trend (`MigrationStatus+Runtime.swift`).
    public var runtime: Runtime?
    /// Epoch, cutover and rollback steps, what cleanup removes (`SwitchStatus`); nil before any switch.
    public var switching: SwitchStatus? = nil

    /// Every slice copied (the staying rows' local copies too): the copy is complete whatever the estimates said.
    public var copyDone: Bool { slices.allSatisfy(\.done) }

    /// Whether the metadata knows the migration (`status --watch` waits until it does).
    public static func isRegistered(migration: String, on meta: PGConnection) throws -> Bool {
        try PhaseStore.read(migration, on: meta) != nil
    }

    /// The plan the migration was registered with (its tables name the changelogs).
    public static func registeredPlan(migration: String, on meta: PGConnection) throws -> Plan {
        let row = try meta.query("SELECT plan::text FROM reshard.migrations WHERE name = $1", [migration])
        guard row.rowCount == 1 else { throw ReshardError.refused("migration \(migration) is not registered") }
        return try JSONDecoder().decode(Plan.self, from: Data((row[0, 0] ?? "{}").utf8))
    }

    /// Replaces the stored backlog by the changelog rows waiting on each source now. A source
    /// whose changelog is gone (aborted, never prepared) counts 0.
    public mutating func readLiveBacklog(plan: Plan, shards: [String: ConnectionString]) throws {
        backlog = 0
        for source in plan.sources {
            guard let dsn = shards[source.name] else {
                throw ReshardError.badInput("no connection string for source \(source.name) of migration \(migration)")
            }
            let conn = try PGConnection.connect(dsn, applicationName: "reshard status", settings: ["default_transaction_read_only": "on"])
            var parts: [String] = []
            for table in plan.tables {
                let log = Shim.logTable(migration: plan.migration, table: table)
                if try conn.query("SELECT to_regclass($1) IS NOT NULL", [log]).get(0, 0, as: Bool.self) {
                    parts.append("SELECT count(*) AS n, min(at) AS at FROM \(log)")
                }
            }
            var count: Int64 = 0, oldestAge: Double?
            if !parts.isEmpty {
                let result = try conn.query(
                    "SELECT coalesce(sum(n), 0)::bigint, extract(epoch FROM now() - min(at))::float8 FROM (\(parts.joined(separator: " UNION ALL "))) logs")
                count = try result.get(0, 0)
                oldestAge = try result.get(0, 1)
            }
            if let index = catchUp.firstIndex(where: { $0.source == source.name }) {
                catchUp[index].backlog = count
                catchUp[index].oldestChangeAgeSeconds = oldestAge
                catchUp[index].live = true
            } else {
                catchUp.append(CatchUp(
                    source: source.name, backlog: count, oldestChangeAgeSeconds: oldestAge, appliedTotal: 0, updatedAt: "-",
                    ageSeconds: 0, live: true))
            }
            backlog += count
        }
        backlogLive = true
    }

    public static func read(migration: String, from meta: PGConnection) throws -> MigrationStatus {
        guard try meta.query("SELECT to_regclass('reshard.slices') IS NOT NULL").get(0, 0, as: Bool.self) else {
            throw ReshardError.refused("migration \(migration) is not registered (the metadata database has no reshard schema yet)")
        }
        let row = try meta.query(
            """
            SELECT phase, date_trunc('second', updated_at)::text, last_error, last_error_at::text,
                   extract(epoch FROM now() - updated_at)::float8
            FROM reshard.migrations WHERE name = $1
            """, [migration])
        guard row.rowCount == 1 else { throw ReshardError.refused("migration \(migration) is not registered; run 'reshard apply' first") }
        _ = try MigrationPhase.recorded(row[0, 0]!, migration: migration)
        let lease = try meta.query(
            """
            SELECT holder_host, holder_pid, date_trunc('second', acquired_at)::text, date_trunc('second', heartbeat_at)::text,
                   \(MetadataLock.apply.isHeldSQL(migrationParameter: 1)), extract(epoch FROM now() - heartbeat_at)::float8
            FROM reshard.leases WHERE migration = $1
            """, [migration])
        let slices = try meta.query(
            """
            SELECT table_name, source, target, rows_copied, estimated_rows, done, stays_in_place,
                   CASE WHEN updated_at > started_at THEN rows_copied / extract(epoch FROM updated_at - started_at) END::float8,
                   date_trunc('second', updated_at)::text, extract(epoch FROM now() - updated_at)::float8
            FROM reshard.slices WHERE migration = $1 ORDER BY table_name, source, target
            """, [migration])
        let catchUp = try meta.query(
            """
            SELECT source, backlog, extract(epoch FROM now() - oldest_change_at)::float8, applied_total,
                   date_trunc('second', updated_at)::text, extract(epoch FROM now() - updated_at)::float8
            FROM reshard.catchup WHERE migration = $1 ORDER BY source
            """, [migration])
        var status = MigrationStatus(
            migration: migration, phase: row[0, 0]!, updatedAt: row[0, 1]!, ageSeconds: try row.get(0, 4),
            coordinatorRunning: false, lastError: row[0, 2], lastErrorAt: row[0, 3], lease: nil, slices: [], catchUp: [], rowsCopied: 0, estimatedRows: 0, backlog: 0)
        if lease.rowCount == 1 {
            status.lease = Lease(
                host: lease[0, 0]!, pid: try lease.get(0, 1), since: lease[0, 2]!, heartbeatAt: lease[0, 3]!,
                alive: try lease.get(0, 4), heartbeatAgeSeconds: try lease.get(0, 5))
            status.coordinatorRunning = status.lease!.alive
        }
        for r in 0..<slices.rowCount {
            let copied: Int64 = try slices.get(r, 3), estimated: Int64 = try slices.get(r, 4)
            let done: Bool = try slices.get(r, 5)
            let rate: Double? = try slices.get(r, 7)
            let eta = rate.flatMap { $0 > 0 && !done ? Double(max(estimated - copied, 0)) / $0 : nil }
            status.slices.append(Slice(
                table: slices[r, 0]!, source: slices[r, 1]!, target: slices[r, 2]!, rowsCopied: copied, estimatedRows: estimated,
                done: done, staysInPlace: try slices.get(r, 6), rowsPerSecond: rate, etaSeconds: eta, updatedAt: slices[r, 8]!,
                ageSeconds: try slices.get(r, 9)))
            // The rows that stay count too: they are copied into the table built beside the live one.
            status.rowsCopied += copied
            status.estimatedRows += estimated
        }
        for r in 0..<catchUp.rowCount {
            let backlog: Int64 = try catchUp.get(r, 1)
            status.catchUp.append(CatchUp(
                source: catchUp[r, 0]!, backlog: backlog, oldestChangeAgeSeconds: backlog > 0 ? try catchUp.get(r, 2) : nil,
                appliedTotal: try catchUp.get(r, 3), updatedAt: catchUp[r, 4]!, ageSeconds: try catchUp.get(r, 5)))
            status.backlog += backlog
        }
        status.targets = try registeredPlan(migration: migration, on: meta).placements
        status.runtime = try readRuntime(
            migration: migration, backlogs: Dictionary(status.catchUp.map { ($0.source, $0.backlog) }) { $1 }, from: meta)
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
        status.switching = try SwitchStatus.read(migration: migration, phase: MigrationPhase(rawValue: status.phase), from: meta)
        return status
    }

    public var text: String {
        let running = coordinatorRunning
        var lines = ["migration \(migration): phase \(phase)\(running || !Self.isActive(phase) ? "" : " when the coordinator stopped") (recorded \(Self.at(updatedAt, ageSeconds)))"]
        if let lease {
            if lease.alive {
                lines.append("coordinator: \(lease.host) pid \(lease.pid) running since \(lease.since) (heartbeat \(Self.ago(lease.heartbeatAgeSeconds)))")
            } else {
                lines.append("coordinator not running since \(lease.heartbeatAt) (last: \(lease.host) pid \(lease.pid), started \(lease.since))")
            }
        } else {
            lines.append("coordinator not running (never started)")
        }
        if !running && Self.isActive(phase) {
            lines.append(
                "  the figures below are as the coordinator left them: writes since are not applied"
                    + (backlogLive ? " (the changelog figures are counted now)" : " ('reshard status --live' counts the changelog now)"))
        }
        let newest = slices.min(by: { $0.ageSeconds < $1.ageSeconds })
        let total = RowProgress(copied: rowsCopied, estimated: estimatedRows, done: copyDone)
        lines.append("rows copied: \(total.text) (\(String(format: "%.0f%%", total.fraction * 100)))" + (newest.map { " as of \(Self.at($0.updatedAt, $0.ageSeconds))" } ?? ""))
        for s in slices {
            let rows = RowProgress(copied: s.rowsCopied, estimated: s.estimatedRows, done: s.done)
            let rate = s.done ? "" : s.rowsPerSecond.map { String(format: ", %.0f rows/s", $0) } ?? ""
            let eta = s.done ? "" : s.etaSeconds.map { String(format: ", eta %.0fs", $0) } ?? ""
            let local = s.staysInPlace ? " (staying rows, copied on the server)" : ""
            lines.append(
                "  \(s.table) \(s.source) -> \(s.target)\(local): \(rows.text)\(s.done ? " done" : "")\(rate)\(eta) (as of \(Self.at(s.updatedAt, s.ageSeconds)))")
        }
        lines += targets.map(\.text)
        for c in catchUp {
            let age = c.oldestChangeAgeSeconds.map { String(format: ", oldest %.1fs old", $0) } ?? ""
            let when = c.live ? "counted on the source now" : "as of \(Self.at(c.updatedAt, c.ageSeconds))"
            lines.append("changelog \(c.source): \(c.backlog.grouped) waiting\(age), \(c.appliedTotal.grouped) applied (\(when))")
        }
        for v in verification {
            let when = v.finishedAt.map { "at \($0)" } ?? "\(v.chunksDone)/\(v.chunksTotal) chunks, started \(v.startedAt)"
            let figures = "\(v.sourceRows.grouped) source rows, \(v.targetRows.grouped) target rows, \(v.differences.grouped) difference(s)"
            lines.append("verify \(v.table): \(v.outcome) \(when) (\(figures))")
        }
        lines += runtimeLines
        if let lastError { lines.append("last error (\(lastErrorAt ?? "?")): \(lastError)") }
        lines += switching?.lines ?? []
        return lines.joined(separator: "\n")
    }
}

extension MigrationStatus {
    /// Phases in which a coordinator (`apply`) is expected to be keeping the targets caught up.
    static func isActive(_ phase: String) -> Bool {
        [MigrationPhase.prepared, .backfilling, .catchingUp, .inSync, .rolledBack].map(\.rawValue).contains(phase)
    }

    /// `2026-12-01 19:10:01+00, 35s ago`
    static func at(_ time: String, _ age: Double) -> String { "\(time), \(ago(age))" }

    static func ago(_ seconds: Double) -> String {
        let s = max(0, Int(seconds.rounded()))
        let span = s >= 3600 ? "\(s / 3600)h\(s % 3600 / 60)m" : s >= 60 ? "\(s / 60)m\(s % 60)s" : "\(s)s"
        return "\(span) ago"
    }
}
