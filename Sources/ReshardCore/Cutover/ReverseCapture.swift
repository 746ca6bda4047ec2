import Foundation
import PostgresClient

/// Reverse capture: after cutover the application writes to the new layout, and the old one must
/// stay current so `rollback` loses nothing. The same shim and catch-up do it with the roles
/// swapped: `Plan.reversed` is the migration seen from the new layout (its sources are the
/// targets, placed back by `source.function` on the old key), and its shim is installed on the
/// targets before the stall. Reshard's own writes there (`reshard.applying = on`, the catch-up)
/// are not logged, so nothing it copies before cutover feeds back.
public enum ReverseCapture {
    /// What the old layout needs for reverse capture to place rows on it; nil when the plan has it.
    public static func missing(_ plan: Plan) -> String? {
        if plan.sourceFunction == nil { return "source.function is not in the config" }
        if let table = plan.tables.first(where: { $0.sourceKey == nil || $0.sourceKeyType == nil }) {
            return "the old layout's key of table \(table.name) is not known"
        }
        return nil
    }

    /// Installs `capture`'s shim on every table of its sources: `plan.reversed()` at cutover (the
    /// targets log for the sources), the plan itself at rollback (it is there since apply). Idempotent.
    /// `names` gives, for one of `capture`'s sources, where its tables are now (`TableLocations`:
    /// on a shared database before cutover the new layout's are in `reshard_build`, after it the
    /// old layout's are in `reshard_old`); the triggers follow the tables through the swap.
    public static func install(capturing capture: Plan, names: (String) -> [QualifiedName], connect: (String) throws -> PGConnection) throws {
        let reversed = capture
        for source in reversed.sources {
            let conn = try connect(source.name)
            for (table, name) in zip(reversed.tables, names(source.name)) {
                try Shim.install(migration: reversed.migration, table: table, named: name, on: conn)
            }
        }
    }

    /// Proves `capture`'s shim logs an application write on every table of its sources: an update
    /// of one row to itself in a savepoint, rolled back, must add an entry to the log. A table with
    /// no row to write there is checked in the catalog (its trigger exists and fires ALWAYS).
    /// Returns a problem naming the table and shard, nil when all is well.
    public static func prove(capturing capture: Plan, names: (String) -> [QualifiedName], connect: (String) throws -> PGConnection) throws -> String? {
        let reversed = capture
        for source in reversed.sources {
            let conn = try connect(source.name)
            for (table, name) in zip(reversed.tables, names(source.name)) {
                let log = Shim.logTable(migration: reversed.migration, table: table)
                let quoted = try conn.quote(name)
                let key = try conn.quoteIdentifier(table.key)
                let logged: Bool? = try conn.transaction { conn in
                    // Passes the fence (which refuses the application here until cutover) but,
                    // unlike reshard.applying, not the shim.
                    try conn.execute("SET LOCAL reshard.probe = on; SET LOCAL lock_timeout = '1s'; SAVEPOINT probe")
                    let before = try conn.query("SELECT count(*) FROM \(log)").get(0, 0, as: Int.self)
                    let updated = try conn.execute("UPDATE \(quoted) SET \(key) = \(key) WHERE ctid = (SELECT ctid FROM \(quoted) LIMIT 1)").affectedRows
                    let after = try conn.query("SELECT count(*) FROM \(log)").get(0, 0, as: Int.self)
                    try conn.execute("ROLLBACK TO SAVEPOINT probe")
                    return updated == 0 ? nil : after > before
                }
                switch logged {
                case true?: continue
                case false?: return "capture does not log writes to \(table.name) on \(source.name)"
                case nil:
                    let trigger = Shim.objectNames(migration: reversed.migration, table: table).trigger
                    let enabled = try conn.query("SELECT tgenabled::text FROM pg_trigger WHERE tgrelid = $1::regclass AND tgname = $2", [quoted, trigger])
                    if enabled.rowCount == 0 || enabled[0, 0] != "A" {
                        return "capture is not installed on \(table.name) on \(source.name)"
                    }
                }
            }
        }
        return nil
    }

    /// Removes the reverse shim from the targets (cleanup).
    /// On a shared database the new layout's tables are in `reshard_build` before cutover and
    /// after rollback: their triggers are dropped under both names (else their functions could not go).
    public static func remove(_ plan: Plan, connect: (String) throws -> PGConnection) throws {
        let reversed = plan.reversed()
        for source in reversed.sources {
            let conn = try connect(source.name)
            if plan.targets.first(where: { $0.name == source.name })?.isShared == true {
                for table in reversed.tables {
                    let built = try conn.quote(TableLocations.name(of: table.name, layout: .new, shared: true, swapped: false))
                    guard try conn.query("SELECT to_regclass($1) IS NOT NULL", [built]).get(0, 0, as: Bool.self) else { continue }
                    let names = Shim.objectNames(migration: reversed.migration, table: table)
                    try conn.transaction { conn in
                        try conn.execute("SET LOCAL lock_timeout = '5s'; SET LOCAL client_min_messages = warning")
                        try conn.execute("DROP TRIGGER IF EXISTS \(names.trigger) ON \(built); DROP TRIGGER IF EXISTS \(names.truncateTrigger) ON \(built)")
                    }
                }
            }
            try Shim.remove(migration: reversed.migration, tables: reversed.tables, on: conn)
        }
    }
}

extension Plan {
    /// The migration seen from the new layout, for reverse capture and `rollback`: the targets are
    /// its sources, the sources its targets, placed by `source.function` on each table's old key.
    /// Only meaningful when `ReverseCapture.missing(self)` is nil.
    public func reversed() -> Plan {
        var plan = self
        plan.migration = migration + "~reverse"
        // Its catch-up runs after cutover (rollback's), when the old tables on shared databases are in reshard_old.
        plan.sharedBuildSchema = Plan.oldSchema
        plan.function = sourceFunction ?? function
        plan.sourceFunction = function
        plan.sources = targets.map { Shard(name: $0.name, endpoint: $0.endpoint, dsn: $0.dsn, sameAsSource: nil) }
        plan.targets = sources.map { source in
            Shard(name: source.name, endpoint: source.endpoint, dsn: source.dsn,
                  sameAsSource: targets.first { $0.sameAsSource == source.name }?.name)
        }
        plan.tables = tables.map { table in
            var reversed = table
            reversed.key = table.sourceKey ?? table.key
            reversed.keyType = table.sourceKeyType ?? table.keyType
            reversed.sourceKey = table.key
            reversed.sourceKeyType = table.keyType
            // The old layout's tables are the sources' own definitions.
            reversed.identityAlways = nil
            reversed.slices = table.slices.map { Slice(source: $0.target, target: $0.source, estimatedRows: $0.estimatedRows,
                                                     estimatedBytes: $0.estimatedBytes, staysInPlace: $0.staysInPlace) }
            return reversed
        }
        return plan
    }
}
