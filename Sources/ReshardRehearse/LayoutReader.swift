import Foundation
import PostgresClient
import ReshardCore
import ReshardRouting

/// Reads what a layout holds, with SQL of its own (not reshard's verify): every row's unique key
/// and text, per shard, for the ledger checker; and what reshard left behind on a database.
enum LayoutReader {
    /// Rows of `tables` on each of `shards`. `name(table, shard)` says which relation holds the
    /// layout's copy there (a built table on a shared target), and `keep` may leave out rows a
    /// shard holds for another layout (a shared database's own rows leaving it).
    static func observations(
        tables: [TableModel], shards: [ConnectionString], name: (TableModel, Int, PGConnection) throws -> QualifiedName,
        keep: (TableModel, Int, String) -> Bool = { _, _, _ in true }
    ) throws -> [LedgerCheck.Observation] {
        var observations: [LedgerCheck.Observation] = []
        for (s, dsn) in shards.enumerated() {
            let conn = try PGConnection.connect(dsn, applicationName: "rehearse checker", settings: LedgerWorkload.settings)
            for table in tables {
                let relation = try name(table, s, conn)
                let keys = try table.uniqueKey.map { try conn.quoteIdentifier($0) }.joined(separator: ", ")
                let all = try table.columns.map { try conn.quoteIdentifier($0.name) }.joined(separator: ", ")
                let result = try conn.query(
                    "SELECT ROW(\(keys))::text, ROW(\(all))::text, \(try conn.quoteIdentifier(table.shardKey))::text FROM \(try conn.quote(relation))")
                for r in 0..<result.rowCount where keep(table, s, result[r, 2] ?? "") {
                    observations.append(.init(key: Ledger.Key(table: table.name, key: result[r, 0]!), shard: s, row: result[r, 1]!))
                }
            }
        }
        return observations
    }

    /// Whether `relation` exists on `conn`.
    static func exists(_ relation: QualifiedName, on conn: PGConnection) throws -> Bool {
        try conn.query("SELECT to_regclass($1) IS NOT NULL", [try conn.quote(relation)]).get(0, 0, as: Bool.self)
    }

    /// reshard's schemas, triggers and functions still on a database, as phrases.
    static func leftovers(on dsn: ConnectionString, name: String) throws -> [String] {
        let conn = try PGConnection.connect(dsn, applicationName: "rehearse checker")
        let result = try conn.query(
            """
            SELECT 'schema ' || nspname FROM pg_namespace WHERE nspname LIKE 'reshard%'
            UNION ALL SELECT format('trigger %s on %s', tgname, tgrelid::regclass) FROM pg_trigger WHERE NOT tgisinternal AND tgname LIKE 'reshard%'
            UNION ALL SELECT format('function %s.%s', n.nspname, p.proname) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
              WHERE p.proname LIKE 'reshard%' OR n.nspname LIKE 'reshard%'
            ORDER BY 1
            """)
        return (0..<result.rowCount).map { "\(name): \(result[$0, 0]!)" }
    }

    /// Seconds since the oldest change not yet applied was written, over the sources' changelogs
    /// (0 when they are empty), or nil when it cannot be read now.
    static func oldestChangeAge(_ conns: [PGConnection]) -> Double? {
        var oldest: Double = 0
        for conn in conns {
            do {
                let tables = try conn.query(
                    "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'reshard_shim' AND c.relkind = 'r'")
                guard tables.rowCount > 0 else { continue }
                let parts = (0..<tables.rowCount).map { "SELECT min(at) AS at FROM \(tables[$0, 0]!)" }
                let age = try conn.query(
                    "SELECT coalesce(extract(epoch FROM clock_timestamp() - min(at)), 0)::float8 FROM (\(parts.joined(separator: " UNION ALL "))) l")
                oldest = max(oldest, try age.get(0, 0, as: Double.self))
            } catch {
                return nil
            }
        }
        return oldest
    }
}
