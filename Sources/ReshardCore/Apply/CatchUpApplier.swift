import ReshardRouting
import Foundation
import PostgresClient

/// Applies one source's changelog to the targets.
///
/// Each table's log is a queue, not a stream: each round reads entries still there, applies
/// them, and deletes exactly the entries it applied (by `ctid`). A transaction that commits late
/// (its ids are lower than entries already applied) simply shows up in a later round, so no
/// change is lost to id order. Applying is idempotent and order-safe: for each key the current
/// row is re-read from the source and upserted on the target it now belongs to, and the row is
/// deleted where the entry says it was (matching the old shard key too, so a row that moved to
/// another source and back to the same target is never deleted by a stale entry).
///
/// Entries of a table are only applied once the table's slices from this source are copied:
/// until then the backfill will read the row anyway, and applying early could be overwritten by
/// a batch read before the change.
struct CatchUpApplier {
    let plan: Plan
    let source: PGConnection
    /// Target connections by index; nil for a target that is this source's own database.
    let targets: [PGConnection?]
    var batchLimit = 5000

    /// An applier for `source`, connected to it and to every target that is not its own database.
    static func connecting(plan: Plan, source: String, connect: (String) throws -> PGConnection) throws -> CatchUpApplier {
        CatchUpApplier(
            plan: plan, source: try connect(source), targets: try plan.targets.map { $0.sameAsSource == source ? nil : try connect($0.name) })
    }

    struct Entry: Decodable {
        let ctid: String
        let pk: [String]
        let shardKey: String
    }

    struct Round {
        /// Entries applied (and removed).
        var applied: Int
        /// Whether the round read everything that was there.
        var drained: Bool
    }

    /// Applies one round of entries for `tables` (those already copied from this source).
    func applyRound(tables: [Plan.Table]) throws -> Round {
        guard !tables.isEmpty else { return Round(applied: 0, drained: false) }
        var applied = 0
        var drained = true
        let decoder = JSONDecoder()
        for table in tables {
            let log = Shim.logTable(migration: plan.migration, table: table)
            let result = try source.query(
                "SELECT json_build_object('ctid', ctid::text, 'pk', pk, 'shardKey', shard_key)::text FROM \(log) LIMIT \(batchLimit)")
            let entries = try (0..<result.rowCount).map { try decoder.decode(Entry.self, from: Data(result[$0, 0]!.utf8)) }
            guard !entries.isEmpty else { continue }
            try apply(entries, table: table)
            try source.query("DELETE FROM \(log) WHERE ctid = ANY($1::tid[])", [entries.map(\.ctid)])
            applied += entries.count
            if entries.count >= batchLimit { drained = false }
        }
        return Round(applied: applied, drained: drained)
    }

    private func apply(_ entries: [Entry], table: Plan.Table) throws {
        var seen = Set<[String]>()
        let keys = entries.map(\.pk).filter { seen.insert($0).inserted }
        let sql = TableSQL(table)
        let currentRows = "SELECT \(sql.writableColumns) FROM \(sql.name) WHERE \(sql.keyRow) IN (\(sql.keyList(keys)))"
        for (index, target) in targets.enumerated() {
            guard let target else { continue }
            // Where each entry says the row was, for this target.
            let leaving = try entries.filter { entry in
                guard let key = ShardKey(text: entry.shardKey, type: table.keyType) else { return false }
                return try plan.function.shard(for: key) == index
            }
            let select = "\(currentRows) AND \(sql.shardFilter(plan.function, target: index))"
            try target.transaction { conn in
                try conn.execute(
                    "SET LOCAL reshard.applying = on; CREATE TEMP TABLE reshard_staging (LIKE \(sql.name)) ON COMMIT DROP")
                if !leaving.isEmpty {
                    let keyType = table.columns.first { $0.name == table.key }?.type ?? "text"
                    let rows = leaving.map { "(\(sql.keyLiteral($0.pk).dropFirst().dropLast()), \(SQLText.literal($0.shardKey))::\(keyType))" }
                    try conn.execute(
                        "DELETE FROM \(sql.name) WHERE (\(sql.keyColumns.joined(separator: ", ")), \(sql.shardKey)) IN (\(rows.joined(separator: ", ")))")
                }
                _ = try PGConnection.relayCopy(
                    from: source, "COPY (\(select)) TO STDOUT (FORMAT binary)", to: conn,
                    "COPY reshard_staging (\(sql.writableColumns)) FROM STDIN (FORMAT binary)")
                try conn.execute("\(sql.insertFromStaging("reshard_staging")) \(sql.onKeyConflictUpdate)")
            }
        }
    }

    /// How many entries wait, and since when, for `status`.
    func backlog() throws -> (count: Int64, oldest: String?) {
        let parts = plan.tables.map { "SELECT count(*) AS n, min(at) AS at FROM \(Shim.logTable(migration: plan.migration, table: $0))" }
        let result = try source.query("SELECT coalesce(sum(n), 0)::bigint, min(at)::text FROM (\(parts.joined(separator: " UNION ALL "))) logs")
        return (try result.get(0, 0, as: Int64.self), result[0, 1])
    }
}
