import Foundation
import PostgresClient

/// Applies one source's changelog to the targets.
///
/// The changelog is a queue, not a stream: each round reads the oldest entries still there,
/// applies them, and deletes exactly the entries it applied. A transaction that commits late
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
    let sourceName: String
    let source: PGConnection
    /// Target connections by index; nil for a target that is this source's own database.
    let targets: [PGConnection?]
    var batchLimit = 5000

    struct Entry: Decodable {
        let id: Int64
        let table: String
        let pk: [String]
        let shardKey: String
    }

    struct Round {
        /// Entries applied (and removed).
        var applied: Int
        /// Whether the round read everything that was there.
        var drained: Bool
    }

    /// Applies one round of entries for `tables` (by their description, as recorded).
    func applyRound(tables: [Plan.Table]) throws -> Round {
        guard !tables.isEmpty else { return Round(applied: 0, drained: false) }
        let names = tables.map(\.name.description)
        let result = try source.query(
            """
            SELECT json_build_object('id', id, 'table', table_name, 'pk', pk, 'shardKey', shard_key)::text
            FROM \(Shim.schema).changelog WHERE migration = $1 AND table_name = ANY($2::text[]) ORDER BY id LIMIT \(batchLimit)
            """, [plan.migration, names])
        let decoder = JSONDecoder()
        let entries = try (0..<result.rowCount).map { try decoder.decode(Entry.self, from: Data(result[$0, 0]!.utf8)) }
        guard !entries.isEmpty else { return Round(applied: 0, drained: true) }
        for table in tables {
            let mine = entries.filter { $0.table == table.name.description }
            if !mine.isEmpty { try apply(mine, table: table) }
        }
        try source.query("DELETE FROM \(Shim.schema).changelog WHERE id = ANY($1::bigint[])", [entries.map { String($0.id) }])
        return Round(applied: entries.count, drained: entries.count < batchLimit)
    }

    private func apply(_ entries: [Entry], table: Plan.Table) throws {
        var seen = Set<[String]>()
        let keys = entries.map(\.pk).filter { seen.insert($0).inserted }
        for (index, target) in targets.enumerated() {
            guard let target else { continue }
            // Where each entry says the row was, for this target.
            let leaving = try entries.filter { entry in
                guard let key = ShardKey(text: entry.shardKey, type: table.keyType) else { return false }
                return try plan.function.shard(for: key) == index
            }
            let src = try TableSQL(table, on: source)
            let dst = try TableSQL(table, on: target)
            let select = "SELECT \(src.columns) FROM \(src.name) WHERE \(src.keyRow) IN (\(try src.keyList(keys))) AND \(src.shardFilter(plan.function, target: index))"
            try target.transaction { conn in
                try conn.execute(
                    "SET LOCAL reshard.applying = on; CREATE TEMP TABLE reshard_staging (LIKE \(dst.name)) ON COMMIT DROP")
                if !leaving.isEmpty {
                    let keyType = table.columns.first { $0.name == table.key }?.type ?? "text"
                    let rows = try leaving.map { "(\(try dst.keyLiteral($0.pk).dropFirst().dropLast()), \(try conn.quoteLiteral($0.shardKey))::\(keyType))" }
                    try conn.execute(
                        "DELETE FROM \(dst.name) WHERE (\(dst.keyColumns.joined(separator: ", ")), \(dst.shardKey)) IN (\(rows.joined(separator: ", ")))")
                }
                _ = try PGConnection.relayCopy(
                    from: source, "COPY (\(select)) TO STDOUT (FORMAT binary)", to: conn,
                    "COPY reshard_staging (\(dst.columns)) FROM STDIN (FORMAT binary)")
                try conn.execute(
                    "INSERT INTO \(dst.name) (\(dst.columns)) SELECT \(dst.columns) FROM reshard_staging ON CONFLICT \(dst.conflictTarget) DO \(try dst.updateSet)")
            }
        }
    }

    /// How many entries wait, and since when, for `status`.
    func backlog() throws -> (count: Int64, oldest: String?) {
        let result = try source.query(
            "SELECT count(*), min(at)::text FROM \(Shim.schema).changelog WHERE migration = $1", [plan.migration])
        return (try result.get(0, 0, as: Int64.self), result[0, 1])
    }
}
