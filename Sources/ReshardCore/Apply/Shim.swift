import Foundation
import PostgresClient

/// The dual-write shim: a row trigger on every source table that records, inside the writing
/// transaction, the unique key and shard key of each row written, in a log table of its own
/// (`reshard_shim.log_<id>`) on the same source. Nothing committed on a source can escape it, and
/// it needs no logical decoding, so it works on managed PostgreSQL as it is.
///
/// The log is a bare heap: no index, no sequence, no name columns. Each write pays one small heap
/// insert, which keeps the shim's cost on the application's writes low; the catch-up reads it
/// as a queue and deletes what it applied by `ctid` (log rows are never updated).
///
/// An UPDATE that changes the unique key or the shard key records the old values too, so the
/// catch-up also removes the row from where it was. Writes made by reshard itself (sessions with
/// `reshard.applying = on`) are not recorded, so copying into a source that is also a target
/// does not feed back.
public enum Shim {
    public static let schema = "reshard_shim"

    /// Installs the changelog and the trigger on one table. Idempotent. CREATE TRIGGER waits for
    /// writers already in flight, which is what guarantees no write is missed; `lock_timeout`
    /// keeps it from queueing other writers behind it for long, and it is retried.
    public static func install(
        migration: String, table: Plan.Table, on connection: PGConnection, lockTimeoutMilliseconds: Int = 2000,
        attempts: Int = 30
    ) throws {
        let names = objectNames(migration: migration, table: table)
        try connection.transaction { conn in
            try conn.execute(
                """
                SET LOCAL client_min_messages = warning;
                CREATE SCHEMA IF NOT EXISTS \(schema);
                CREATE TABLE IF NOT EXISTS \(schema).\(names.log) (
                    pk        text[] NOT NULL,
                    shard_key text NOT NULL,
                    at        timestamptz NOT NULL DEFAULT clock_timestamp()
                ) WITH (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 10000);
                """)
        }
        let quotedTable = try connection.quote(table.name)
        func columns(_ row: String) throws -> String {
            try table.uniqueKey.map { "\(row).\(try connection.quoteIdentifier($0))::text" }.joined(separator: ", ")
        }
        let key = try connection.quoteIdentifier(table.key)
        let values = { (row: String) throws -> String in "(ARRAY[\(try columns(row))], \(row).\(key)::text)" }
        let insert = "INSERT INTO \(schema).\(names.log) (pk, shard_key) VALUES"
        let keyColumns = try (table.uniqueKey + [table.key]).map { try connection.quoteIdentifier($0) }
        let oldRow = keyColumns.map { "OLD.\($0)" }.joined(separator: ", ")
        let newRow = keyColumns.map { "NEW.\($0)" }.joined(separator: ", ")
        var body = """
            BEGIN
              IF current_setting('reshard.applying', true) = 'on' THEN RETURN NULL; END IF;
              IF TG_OP = 'INSERT' OR TG_OP = 'UPDATE' THEN
                \(insert) \(try values("NEW"));
              END IF;
              IF TG_OP = 'DELETE' THEN
                \(insert) \(try values("OLD"));
              ELSIF TG_OP = 'UPDATE' THEN
                IF ROW(\(oldRow)) IS DISTINCT FROM ROW(\(newRow)) THEN
                  \(insert) \(try values("OLD"));
                END IF;
              END IF;
              RETURN NULL;
            END
            """
        var tag = "reshard"
        while body.contains("$\(tag)$") { tag += "_" }
        body = "$\(tag)$\n\(body)\n$\(tag)$"
        var attempt = 0
        while true {
            do {
                try connection.transaction { conn in
                    try conn.execute("SET LOCAL lock_timeout = '\(lockTimeoutMilliseconds)ms'")
                    try conn.execute(
                        "CREATE OR REPLACE FUNCTION \(schema).\(names.function)() RETURNS trigger LANGUAGE plpgsql AS \(body)")
                    let exists = try conn.query(
                        "SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname = $2", [quotedTable, names.trigger])
                    if exists.rowCount == 0 {
                        try conn.execute(
                            "CREATE TRIGGER \(names.trigger) AFTER INSERT OR UPDATE OR DELETE ON \(quotedTable) FOR EACH ROW EXECUTE FUNCTION \(schema).\(names.function)()")
                    }
                }
                return
            } catch let error as PostgresError where error.sqlState == "55P03" && attempt < attempts {
                attempt += 1
                usleep(UInt32(min(200_000 * attempt, 2_000_000)))
            }
        }
    }

    /// Removes the triggers, functions and logs of this migration; drops the shim schema when no
    /// other migration uses it. Idempotent.
    public static func remove(migration: String, tables: [Plan.Table], on connection: PGConnection) throws {
        for table in tables {
            let names = objectNames(migration: migration, table: table)
            try connection.transaction { conn in
                try conn.execute("SET LOCAL lock_timeout = '5s'; SET LOCAL client_min_messages = warning")
                if try conn.query("SELECT to_regclass($1) IS NOT NULL", [try conn.quote(table.name)]).get(0, 0, as: Bool.self) {
                    try conn.execute("DROP TRIGGER IF EXISTS \(names.trigger) ON \(try conn.quote(table.name))")
                }
                try conn.execute("DROP FUNCTION IF EXISTS \(schema).\(names.function)(); DROP TABLE IF EXISTS \(schema).\(names.log)")
            }
        }
        guard try connection.query("SELECT to_regnamespace($1) IS NOT NULL", [schema]).get(0, 0, as: Bool.self) else { return }
        let others = try connection.query("SELECT count(*) FROM pg_class WHERE relnamespace = $1::regnamespace", [schema])
        if try others.get(0, 0, as: Int.self) == 0 {
            try connection.execute("SET client_min_messages = warning; DROP SCHEMA IF EXISTS \(schema); RESET client_min_messages")
        }
    }

    /// The log table of one (migration, table), schema-qualified; safe unquoted.
    public static func logTable(migration: String, table: Plan.Table) -> String {
        "\(schema).\(objectNames(migration: migration, table: table).log)"
    }

    /// Short, fixed names per (migration, table), safe as unquoted identifiers.
    static func objectNames(migration: String, table: Plan.Table) -> (function: String, trigger: String, log: String) {
        let id = fnv1a64Hex("\(migration)\u{0}\(table.name.schema ?? "")\u{0}\(table.name.name)")
        return ("capture_\(id)", "reshard_capture_\(id)", "log_\(id)")
    }
}
