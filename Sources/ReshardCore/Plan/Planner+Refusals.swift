import PostgresClient

/// What cannot be carried over to the new layout, refused by `plan` (exit 2) naming the object:
/// views, materialized views and rules over a moving table (they reference it by OID, so after
/// the swap they would still read the old table), foreign keys between a moving table and one
/// outside the migration (on a target the other table is not there; at the swap the key would
/// follow the old table), partitioned tables and partitions, and unlogged or temporary tables
/// (a crash empties an unlogged table, so its copy could not be trusted). Two options say how to
/// treat what a user may accept: `--ignore-foreign-keys-outside` (such keys are not carried
/// over) and `--allow-unlogged` (the copy is unlogged too).
extension Planner {
    public struct Allowances: Sendable, Equatable {
        /// Foreign keys to or from tables outside the migration are left out on the targets.
        public var foreignKeysOutside = false
        /// Unlogged tables move, into unlogged tables.
        public var unlogged = false
        public init(foreignKeysOutside: Bool = false, unlogged: Bool = false) {
            self.foreignKeysOutside = foreignKeysOutside
            self.unlogged = unlogged
        }
    }

    func refusals(_ table: ReshardConfig.Table, on source: Connected) throws -> [String] {
        let conn = source.connection
        let quoted = try conn.quote(table.name)
        let here = "table \(table.name) on source \(source.shard.name)"
        let relation = try conn.query(
            "SELECT relkind::text, relpersistence::text, relispartition FROM pg_class WHERE oid = to_regclass($1)", [quoted])
        guard relation.rowCount == 1 else { return [] }
        var problems: [String] = []
        if relation[0, 0] == "p" {
            problems.append("\(here) is partitioned: reshard cannot move partitioned tables (move its partitions' rows into a plain table first)")
        }
        if relation[0, 2] == "t" {
            let parent = try conn.query("SELECT inhparent::regclass::text FROM pg_inherits WHERE inhrelid = to_regclass($1)", [quoted])
            problems.append("\(here) is a partition of \(parent[0, 0] ?? "another table"): reshard cannot move partitions")
        }
        if relation[0, 1] == "t" { problems.append("\(here) is a temporary table: it exists only in one session") }
        if relation[0, 1] == "u" && !allowances.unlogged {
            problems.append("\(here) is unlogged: a crash empties it, so its copy cannot be trusted (--allow-unlogged moves it into an unlogged table anyway)")
        }
        for dependent in try Self.dependents(of: quoted, on: conn) {
            problems.append(
                "\(here): \(dependent.kind) \(dependent.name) reads it; after the cutover it would still read the old table (drop it before the migration and create it again after)")
        }
        guard !allowances.foreignKeysOutside else { return problems }
        let moving = try config.tables.compactMap { try conn.query("SELECT to_regclass($1)::oid::text", [try conn.quote($0.name)])[0, 0] }
        for key in try Self.outsideForeignKeys(of: quoted, moving: moving, on: conn) {
            let outside = key.inbound ? "from \(key.outside)" : "to \(key.outside)"
            problems.append(
                "\(here): foreign key \(key.name) \(outside), a table outside the migration, cannot be carried over (add that table to the migration, or --ignore-foreign-keys-outside to leave the key out on the targets)")
        }
        return problems
    }

    /// The views, materialized views and rules that read the table `quoted` on `conn` (kind, name):
    /// they reference it by OID, so at a swap they follow it. Also `CutoverChecks`, for one
    /// created after `plan`.
    static func dependents(of quoted: String, on conn: PGConnection) throws -> [(kind: String, name: String)] {
        let rows = try conn.query(
            """
            SELECT DISTINCT CASE c.relkind WHEN 'm' THEN 'materialized view' ELSE 'view' END, c.oid::regclass::text
            FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid JOIN pg_class c ON c.oid = r.ev_class
            WHERE d.classid = 'pg_rewrite'::regclass AND d.refclassid = 'pg_class'::regclass AND d.refobjid = to_regclass($1)
              AND c.oid <> d.refobjid
            UNION ALL
            SELECT 'rule', r.rulename::text FROM pg_rewrite r WHERE r.ev_class = to_regclass($1) AND r.rulename <> '_RETURN'
            ORDER BY 1, 2
            """, [quoted])
        return (0..<rows.rowCount).map { (rows[$0, 0]!, rows[$0, 1]!) }
    }

    /// The foreign keys between the table `quoted` and one outside `moving` (the moving tables'
    /// OIDs): the key's name, the outside table, and whether the key is the outside table's
    /// (`inbound`: it references the moving table, and at a swap it would follow the old one).
    static func outsideForeignKeys(of quoted: String, moving: [String], on conn: PGConnection) throws -> [(name: String, outside: String, inbound: Bool)] {
        let keys = try conn.query(
            """
            SELECT conname, conrelid::regclass::text, confrelid::regclass::text, conrelid = to_regclass($1)
            FROM pg_constraint
            WHERE contype = 'f' AND (conrelid = to_regclass($1) OR confrelid = to_regclass($1))
              AND NOT (conrelid::text = ANY($2::text[]) AND confrelid::text = ANY($2::text[]))
            ORDER BY conname
            """, [quoted, moving])
        return (0..<keys.rowCount).map { r in
            let inbound = keys[r, 3] != "t"
            return (keys[r, 0]!, inbound ? keys[r, 1]! : keys[r, 2]!, inbound)
        }
    }
}
