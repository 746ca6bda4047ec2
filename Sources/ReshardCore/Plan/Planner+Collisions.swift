import Foundation
import PostgresClient
import ReshardRouting

/// Values of the migration's unique key that two sources both hold for one target: typical when
/// each shard numbered its rows with its own sequence. On the target the two rows would be one
/// key, and a re-run batch's `ON CONFLICT DO NOTHING` or the catch-up's upsert would keep one and
/// drop the other, so they are refused, never merged: by `plan` (exactly, or sampled with
/// `--fast`), by `apply` before it copies anything, and during the copy and catch-up by
/// `KeyCollisionGuard`.
enum KeyCollisions {
    /// One line per (target, pair of sources) naming up to `limit` keys in all: the same text from
    /// `plan` and `apply`.
    static func message(_ table: Plan.Table, target: String, sources: (String, String), keys: [[String]]) -> String {
        "table \(table.name): key (\(table.uniqueKey.joined(separator: ", "))) is held by both \(sources.0) and \(sources.1) for target \(target): "
            + keys.map { "(\($0.joined(separator: ", ")))" }.joined(separator: ", ")
            + "; the two rows would become one there (renumber one source's rows, or add a column that tells them apart to the key)"
    }

    /// Checks every pair of sources, in source order, and returns one `message` per (target, pair)
    /// with colliding keys, at most `limit` keys in all. Connections must print values under
    /// `CanonicalText`'s settings (keys travel as text).
    /// - Parameter sampleRows: check only a page sample of about this many keys per source (`plan --fast`).
    static func problems(
        _ table: Plan.Table, function: ShardFunction, sources: [(name: String, connection: PGConnection)], targets: [String],
        sampleRows: Int? = nil, limit: Int = 10
    ) throws -> [String] {
        guard sources.count > 1, !table.uniqueKey.isEmpty else { return [] }
        var problems: [String] = []
        var found = 0
        for a in sources.indices where found < limit {
            for b in sources.indices where b > a && found < limit {
                let hits = try confirm(
                    try find(
                        table, function: function, first: sources[a].connection, second: sources[b].connection, sampleRows: sampleRows,
                        limit: limit - found),
                    table, function: function, on: [sources[a].connection, sources[b].connection])
                found += hits.count
                for target in Set(hits.map(\.target)).sorted() {
                    problems.append(message(
                        table, target: targets[target], sources: (sources[a].name, sources[b].name),
                        keys: hits.filter { $0.target == target }.map(\.key)))
                }
            }
        }
        return problems
    }

    /// Keys `first` holds that `second` also holds with a row of the same target, in key order, at
    /// most `limit`: `first`'s keys are read in chunks of 5,000 in key order with their target
    /// (the server's shard index), and `second` looks each up in its key index. Nothing but the
    /// keys leaves a server; each side's rows are read once.
    static func find(
        _ table: Plan.Table, function: ShardFunction, first: PGConnection, second: PGConnection, sampleRows: Int?, limit: Int
    ) throws -> [(target: Int, key: [String])] {
        let sql = TableSQL(table)
        let count = sql.keyColumns.count
        var sample = ""
        if let sampleRows {
            let total = try first.query("SELECT greatest(reltuples, 1)::float8 FROM pg_class WHERE oid = to_regclass($1)", [sql.name])
                .get(0, 0, as: Double.self)
            let percent = min(100, 100 * Double(sampleRows) / total)
            if percent < 100 { sample = " TABLESAMPLE SYSTEM (\(percent)) REPEATABLE (20261201)" }
        }
        let index = function.sqlShardIndex(quotedColumn: sql.shardKey, type: table.keyType)
        let ordered = sql.keyColumns.joined(separator: ", ")
        let read = { (after: Bool) in
            "SELECT \(sql.keyColumns.map { "\($0)::text" }.joined(separator: ", ")), \(index) FROM \(sql.name)\(sample)"
                + (after ? " WHERE \(sql.keyRow) > \(sql.keyParameters(from: 1))" : "") + " ORDER BY \(ordered) LIMIT 5000"
        }
        var last: [String]?
        var found: [(target: Int, key: [String])] = []
        while found.count < limit {
            let chunk = try first.query(read(last != nil), last ?? [])
            guard chunk.rowCount > 0 else { break }
            let rows = (0..<chunk.rowCount).map { r in (0...count).map { chunk[r, $0] ?? "" } }
            found += try held(rows, table, function: function, on: second, limit: limit)
            if chunk.rowCount < 5000 { break }
            last = Array(rows.last!.prefix(count))
        }
        return Array(found.prefix(limit))
    }
}

extension KeyCollisions {
    /// Of `rows` (key values, then the target), those `conn` holds with a row of that target, in
    /// order, at most `limit`: one index lookup per key (a LATERAL with LIMIT 1, so the planner
    /// never turns it into a hash join that reads the whole table for every chunk).
    static func held(_ rows: [[String]], _ table: Plan.Table, function: ShardFunction, on conn: PGConnection, limit: Int) throws
        -> [(target: Int, key: [String])]
    {
        guard !rows.isEmpty else { return [] }
        let sql = TableSQL(table)
        let count = sql.keyColumns.count
        let names = (0..<count).map { "k\($0)" }
        let arrays = (1...count + 1).map { "$\($0)::text[]" }.joined(separator: ", ")
        let matches = zip(sql.keyColumns, sql.keyTypes).enumerated().map { "x.\($1.0) = v.k\($0)::\($1.1)" }.joined(separator: " AND ")
        let theirIndex = function.sqlShardIndex(quotedColumn: "x.\(sql.shardKey)", type: table.keyType)
        let hits = try conn.query(
            """
            SELECT \(names.map { "v.\($0)" }.joined(separator: ", ")), v.t FROM unnest(\(arrays)) WITH ORDINALITY AS v(\(names.joined(separator: ", ")), t, i)
            CROSS JOIN LATERAL (SELECT 1 FROM \(sql.name) x WHERE \(matches) AND \(theirIndex) = v.t::int LIMIT 1) m ORDER BY v.i LIMIT \(limit)
            """, (0...count).map { c in rows.map { $0[c] } })
        return try (0..<hits.rowCount).map { r in (try hits.get(r, count, as: Int.self), (0..<count).map { hits[r, $0] ?? "" }) }
    }

    /// The keys of `found` that every one of `sources` still holds for the same target after
    /// `KeyCollisionGuard.graceSeconds`: the application moving a row between sources (insert on
    /// one, delete on the other) holds its key on both for a moment, which is not a collision.
    static func confirm(
        _ found: [(target: Int, key: [String])], _ table: Plan.Table, function: ShardFunction, on sources: [PGConnection]
    ) throws -> [(target: Int, key: [String])] {
        var remaining = found
        let deadline = Date().addingTimeInterval(KeyCollisionGuard.graceSeconds)
        while !remaining.isEmpty && Date() < deadline {
            Thread.sleep(forTimeInterval: 0.5)
            for conn in sources {
                remaining = try held(remaining.map { $0.key + [String($0.target)] }, table, function: function, on: conn, limit: remaining.count)
            }
        }
        return remaining
    }
}

extension Planner {
    /// `KeyCollisions` for `plan`: exact, or sampled with `fastChecks`. Once the migration is under
    /// way the rows are not read again here (every resumed apply plans again); the copy and the
    /// catch-up stop on a collision themselves (`KeyCollisionGuard`).
    func keyCollisionProblems(_ table: Plan.Table, sources: [Connected], underWay: Bool) throws -> [String] {
        guard sources.count > 1, !underWay else { return [] }
        let canonical = CanonicalText.settings.sorted { $0.key < $1.key }
            .map { "SET \(SQLText.identifier($0.key)) TO \(SQLText.literal($0.value))" }.joined(separator: "; ")
        for source in sources { try source.connection.execute(canonical) }
        return try KeyCollisions.problems(
            table, function: config.function, sources: sources.map { ($0.shard.name, $0.connection) },
            targets: config.targets.map(\.name), sampleRows: fastChecks ? sampleRows : nil)
    }
}
