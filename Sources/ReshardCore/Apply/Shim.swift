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
/// catch-up also removes the row from where it was. A TRUNCATE records every row's key before the
/// rows go (a scan of the table), so the catch-up deletes them on the targets. Writes made by
/// reshard itself (sessions with `reshard.applying = on`) are not recorded, so copying into a
/// source that is also a target does not feed back.
///
/// The triggers are `ENABLE ALWAYS` (sessions with `session_replication_role = replica` fire them
/// too), and their functions are SECURITY DEFINER, so an application role with nothing but table
/// grants can still write: installing them takes the table's owner (`Planner` checks it).
public enum Shim {
    public static let schema = "reshard_shim"

    /// Installs the changelog and the trigger on one table. Idempotent. CREATE TRIGGER waits for
    /// writers already in flight, which is what guarantees no write is missed; `lock_timeout`
    /// keeps it from queueing other writers behind it for long, and it is retried.
    /// `named`: where the table is on this database when not under its own name (the new layout's
    /// table built in `reshard_build` on a shared database, `TableLocations`); the trigger follows
    /// the table when a swap renames it.
    public static func install(
        migration: String, table: Plan.Table, named: QualifiedName? = nil, on connection: PGConnection, lockTimeoutMilliseconds: Int = 2000,
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
        let quotedTable = try connection.quote(named ?? table.name)
        func columns(_ row: String?) throws -> String {
            try table.uniqueKey.map { "\(row.map { "\($0)." } ?? "")\(try connection.quoteIdentifier($0))::pg_catalog.text" }
                .joined(separator: ", ")
        }
        let key = try connection.quoteIdentifier(table.key)
        let values = { (row: String) throws -> String in "(ARRAY[\(try columns(row))], \(row).\(key)::pg_catalog.text)" }
        let insert = "INSERT INTO \(schema).\(names.log) (pk, shard_key) VALUES"
        let keyColumns = try (table.uniqueKey + [table.key]).map { try connection.quoteIdentifier($0) }
        let oldRow = keyColumns.map { "OLD.\($0)" }.joined(separator: ", ")
        let newRow = keyColumns.map { "NEW.\($0)" }.joined(separator: ", ")
        let rowBody = """
            BEGIN
              IF pg_catalog.current_setting('reshard.applying', true) = 'on' THEN RETURN NULL; END IF;
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
        // TRUNCATE fires no row triggers: before the rows go, every key is logged as a change,
        // and the catch-up, which finds the rows gone, deletes them on the targets. The table is
        // the trigger's own (TG_RELID), wherever a swap at cutover moved it.
        let truncateInsert = "INSERT INTO \(schema).\(names.log) (pk, shard_key) SELECT ARRAY[\(try columns(nil))], \(key)::pg_catalog.text FROM ONLY "
        let truncateBody = """
            BEGIN
              IF pg_catalog.current_setting('reshard.applying', true) = 'on' THEN RETURN NULL; END IF;
              EXECUTE pg_catalog.format(\(try connection.quoteLiteral(truncateInsert.replacingOccurrences(of: "%", with: "%%") + "%s")), TG_RELID::pg_catalog.regclass);
              RETURN NULL;
            END
            """
        var attempt = 0
        while true {
            do {
                try connection.transaction { conn in
                    try conn.execute("SET LOCAL lock_timeout = '\(lockTimeoutMilliseconds)ms'")
                    let pin = Self.pinsTextSettings(table)
                    try conn.execute(Self.captureFunction("\(schema).\(names.function)", body: rowBody, pinningText: pin))
                    try conn.execute(Self.captureFunction("\(schema).\(names.truncateFunction)", body: truncateBody, pinningText: pin))
                    for (trigger, definition) in [
                        (names.trigger, "AFTER INSERT OR UPDATE OR DELETE ON \(quotedTable) FOR EACH ROW EXECUTE FUNCTION \(schema).\(names.function)()"),
                        (names.truncateTrigger, "BEFORE TRUNCATE ON \(quotedTable) FOR EACH STATEMENT EXECUTE FUNCTION \(schema).\(names.truncateFunction)()"),
                    ] {
                        let enabled = try conn.query(
                            "SELECT tgenabled::text FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname = $2", [quotedTable, trigger])
                        if enabled.rowCount == 0 { try conn.execute("CREATE TRIGGER \(trigger) \(definition)") }
                        // ALWAYS: sessions with session_replication_role = replica (bulk loaders,
                        // replication tools) fire it too; an ordinary trigger they would skip.
                        if enabled.rowCount == 0 || enabled[0, 0] != "A" {
                            try conn.execute("ALTER TABLE \(quotedTable) ENABLE ALWAYS TRIGGER \(trigger)")
                        }
                    }
                }
                return
            } catch let error as PostgresError where error.sqlState == "55P03" && attempt < attempts {
                attempt += 1
                usleep(UInt32(min(200_000 * attempt, 2_000_000)))
            }
        }
    }

    /// `CREATE OR REPLACE FUNCTION` for a capture trigger. It runs on every application write, as
    /// whichever role writes: SECURITY DEFINER lets that role log into the shim's schema without
    /// any grant on it, with `search_path` pinned (everything in the body is schema-qualified) so a
    /// writer cannot substitute objects of its own. With `pinningText`, `CanonicalText`'s settings,
    /// which apply only while the function runs, make the logged key text the same whatever the
    /// writer's session says (DateStyle, TimeZone, extra_float_digits), so the catch-up reads back
    /// the same keys.
    static func captureFunction(_ name: String, body: String, pinningText: Bool) -> String {
        var tag = "reshard"
        while body.contains("$\(tag)$") { tag += "_" }
        return """
            CREATE OR REPLACE FUNCTION \(name)() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
            SET search_path = pg_catalog, pg_temp\(pinningText ? " " + CanonicalText.functionSetClauses : "")
            AS $\(tag)$
            \(body)
            $\(tag)$
            """
    }

    /// Whether the logged key text could depend on the writer's session: some key column (unique
    /// key or shard key) has a type whose text form follows DateStyle, TimeZone,
    /// extra_float_digits or bytea_output. Integers, text, uuid, boolean and numeric print the same
    /// in every session, and pinning settings costs every write (a GUC save and restore per
    /// setting per row), so the common keys go without.
    static func pinsTextSettings(_ table: Plan.Table) -> Bool {
        let sessionIndependent = ["smallint", "integer", "bigint", "text", "uuid", "boolean", "name"]
        let prefixes = ["numeric", "character varying", "character("]
        return (table.uniqueKey + [table.key]).contains { column in
            let type = table.columns.first { $0.name == column }?.type ?? ""
            return !sessionIndependent.contains(type) && !prefixes.contains { type.hasPrefix($0) }
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
                    let quoted = try conn.quote(table.name)
                    try conn.execute("DROP TRIGGER IF EXISTS \(names.trigger) ON \(quoted); DROP TRIGGER IF EXISTS \(names.truncateTrigger) ON \(quoted)")
                }
                try conn.execute(
                    "DROP FUNCTION IF EXISTS \(schema).\(names.function)(); DROP FUNCTION IF EXISTS \(schema).\(names.truncateFunction)(); DROP TABLE IF EXISTS \(schema).\(names.log)")
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
    static func objectNames(migration: String, table: Plan.Table) -> (
        function: String, trigger: String, truncateFunction: String, truncateTrigger: String, log: String
    ) {
        let id = fnv1a64Hex("\(migration)\u{0}\(table.name.schema ?? "")\u{0}\(table.name.name)")
        return ("capture_\(id)", "reshard_capture_\(id)", "capture_truncate_\(id)", "reshard_capture_truncate_\(id)", "log_\(id)")
    }
}
