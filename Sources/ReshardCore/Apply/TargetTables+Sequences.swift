import PostgresClient

/// The sequences a table's columns draw from: identity columns' own, `serial` ones owned by a
/// column, and others a default calls (`nextval('global_id')`).
extension TargetTables {
    public struct SequenceUse: Sendable, Equatable {
        public var column: String
        /// Schema-qualified, as on the server asked.
        public var sequence: QualifiedName
        /// The column is an identity column and this is its own sequence (each table has its own).
        public var isIdentity: Bool
        /// The sequence is owned by the column (`serial`, or identity).
        public var ownedByColumn: Bool
        /// `[AS type] INCREMENT BY ... MINVALUE ... MAXVALUE ... START WITH ... CACHE ... [NO] CYCLE`
        /// (no `AS` for an identity, whose type is its column's).
        var options: String
    }

    /// The sequences of `table` (under `name`, default its own) on `conn`: what the cutover
    /// advances past every value any source handed out before the application writes to the new
    /// layout. Identity columns of a table built under another name have a sequence of their own
    /// there; `serial` and other defaults call the sequence named in the default.
    public static func sequences(of table: Plan.Table, named name: QualifiedName? = nil, on conn: PGConnection) throws -> [SequenceUse] {
        try sequenceUses(table, named: name, on: conn)
    }

    static func sequenceUses(_ table: Plan.Table, named name: QualifiedName? = nil, on conn: PGConnection) throws -> [SequenceUse] {
        let options = """
            n.nspname, s.relname, format_type(q.seqtypid, NULL), q.seqincrement, q.seqmin, q.seqmax, q.seqstart, q.seqcache, q.seqcycle
            FROM pg_class s JOIN pg_namespace n ON n.oid = s.relnamespace JOIN pg_sequence q ON q.seqrelid = s.oid
            """
        let rows = try conn.query(
            """
            SELECT a.attname, d.deptype = 'i', true, \(options)
              JOIN pg_depend d ON d.classid = 'pg_class'::regclass AND d.objid = s.oid AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i')
              JOIN pg_attribute a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
            WHERE d.refobjid = to_regclass($1)
            UNION ALL
            SELECT a.attname, false, false, \(options)
              JOIN pg_depend d ON d.refobjid = s.oid AND d.refclassid = 'pg_class'::regclass AND d.classid = 'pg_attrdef'::regclass
              JOIN pg_attrdef ad ON ad.oid = d.objid JOIN pg_attribute a ON a.attrelid = ad.adrelid AND a.attnum = ad.adnum
            WHERE ad.adrelid = to_regclass($1)
              AND NOT EXISTS (SELECT 1 FROM pg_depend o WHERE o.classid = 'pg_class'::regclass AND o.objid = s.oid
                              AND o.refobjid = ad.adrelid AND o.refobjsubid = ad.adnum AND o.deptype IN ('a', 'i'))
            ORDER BY 1, 4, 5
            """, [try conn.quote(name ?? table.name)])
        return try (0..<rows.rowCount).map { r in
            let identity = try rows.get(r, 1, as: Bool.self)
            let type = identity ? "" : "AS \(rows[r, 5]!) "
            let cycle = rows[r, 11] == "t" ? "CYCLE" : "NO CYCLE"
            return SequenceUse(
                column: rows[r, 0]!, sequence: QualifiedName(schema: rows[r, 3]!, rows[r, 4]!), isIdentity: identity,
                ownedByColumn: try rows.get(r, 2, as: Bool.self),
                options: "\(type)INCREMENT BY \(rows[r, 6]!) MINVALUE \(rows[r, 7]!) MAXVALUE \(rows[r, 8]!) START WITH \(rows[r, 9]!) CACHE \(rows[r, 10]!) \(cycle)")
        }
    }

    static func exists(sequence: QualifiedName, on conn: PGConnection) throws -> Bool {
        try conn.query("SELECT to_regclass($1) IS NOT NULL", [try conn.quote(sequence)]).get(0, 0, as: Bool.self)
    }
}
