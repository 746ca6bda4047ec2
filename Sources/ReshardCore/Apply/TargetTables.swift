import PostgresClient

/// Creates a table on a target as the application expects it after cutover, from its definition
/// on a source: the user types its columns use (enums, domains, composite types, created when
/// missing), columns with their collations, defaults (also `nextval`, the sequence created with the
/// source's options), identity columns as they were (ALWAYS stays ALWAYS: the copy's COPY and the
/// catch-up's `OVERRIDING SYSTEM VALUE` write the source's values), generated columns, NOT NULL,
/// primary key, unique, check and exclusion constraints, the unique index carrying the
/// migration's key when no constraint does, storage parameters, comments, owner, grants, row-level
/// security and its policies (`+Privileges`). Secondary indexes come later (`createIndexes`),
/// because building them once after the bulk copy is much faster than maintaining them during it,
/// and so do the table's own triggers, created disabled (`createTriggers`, `+Triggers`): a BEFORE
/// ROW trigger, even a disabled one, makes `COPY FROM` insert row by row; foreign keys between the
/// migration's tables later still (`addForeignKeys`, `+Constraints`).
public enum TargetTables {
    /// Whether the table exists on `target` (under `name`, `Plan.builtName(of:on:)`, when given).
    public static func exists(_ table: Plan.Table, named name: QualifiedName? = nil, on target: PGConnection) throws -> Bool {
        try target.query("SELECT to_regclass($1) IS NOT NULL", [try target.quote(name ?? table.name)]).get(0, 0, as: Bool.self)
    }

    /// Creates the table on `target` under `name` (default: its own) if it is missing. Returns
    /// whether it created it. `warn` receives what could not be carried over (an owner or grantee
    /// role missing on the target).
    @discardableResult
    public static func create(
        _ table: Plan.Table, named name: QualifiedName? = nil, from source: PGConnection, on target: PGConnection, withIndexes: Bool,
        warn: (String) -> Void = { _ in }
    ) throws -> Bool {
        let name = name ?? table.name
        if try exists(table, named: name, on: target) { return false }
        let quoted = try source.quote(table.name)
        let sequences = try sequenceUses(table, on: source)
        let columns = try source.query(
            """
            SELECT a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attidentity,
                   CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, d.adrelid) END,
                   CASE WHEN a.attgenerated <> '' THEN pg_get_expr(d.adbin, d.adrelid) END,
                   CASE WHEN a.attcollation <> 0 AND a.attcollation <> t.typcollation THEN format('%I.%I', cn.nspname, co.collname) END
            FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            JOIN pg_type t ON t.oid = a.atttypid
            LEFT JOIN pg_collation co ON co.oid = a.attcollation LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
            WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
            """, [quoted])
        var parts: [String] = []
        for row in 0..<columns.rowCount {
            let column = columns[row, 0]!
            var line = "\(try target.quoteIdentifier(column)) \(columns[row, 1]!)"
            // format_type does not print collations: a column's own one (a case-insensitive ICU
            // collation, say) is carried over explicitly.
            if let collation = columns[row, 6] { line += " COLLATE \(collation)" }
            if let generated = columns[row, 5] {
                line += " GENERATED ALWAYS AS (\(generated)) STORED"
            } else if let identity = columns[row, 3], identity != "" {
                let sequence = sequences.first { $0.column == column && $0.isIdentity }
                line += " GENERATED \(identity == "a" ? "ALWAYS" : "BY DEFAULT") AS IDENTITY"
                if let sequence {
                    // The identity's sequence lives in the table's schema (it moves with the table at the swap).
                    let sequenceName = QualifiedName(schema: name == table.name ? sequence.sequence.schema : name.schema, sequence.sequence.name)
                    line += " (SEQUENCE NAME \(try target.quote(sequenceName)) \(sequence.options))"
                }
            } else if let def = columns[row, 4] {
                line += " DEFAULT \(def)"
            }
            if columns[row, 2] == "t" { line += " NOT NULL" }
            parts.append(line)
        }
        let constraints = try source.query(
            """
            SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
            WHERE conrelid = to_regclass($1) AND contype IN ('p', 'u', 'c', 'x') ORDER BY contype DESC, conname
            """, [quoted])
        for row in 0..<constraints.rowCount {
            parts.append("CONSTRAINT \(try target.quoteIdentifier(constraints[row, 0]!)) \(constraints[row, 1]!)")
        }
        let storage = try source.query(
            "SELECT array_to_string(reloptions, ', '), relpersistence = 'u' FROM pg_class WHERE oid = to_regclass($1)", [quoted])
        let with = storage[0, 0].map { " WITH (\($0))" } ?? ""
        // An unlogged table moves (`--allow-unlogged`) into an unlogged one.
        let unlogged = storage[0, 1] == "t" ? "UNLOGGED " : ""
        let keyIndex = try keyIndexDefinition(table, on: source)
        let collations = try collationDefinitions(table, on: source)
        let types = try typeDefinitions(table, from: source, on: target)
        let defaultSequences = try sequences.filter { !$0.isIdentity }.filter { try !exists(sequence: $0.sequence, on: target) }
        let extras = try privileges(table, named: name, from: source, on: target, warn: warn)
        try target.transaction { conn in
            try conn.execute("SET LOCAL client_min_messages = warning")
            for statement in collations + types { try conn.execute(statement) }
            if let schema = name.schema { try conn.execute("CREATE SCHEMA IF NOT EXISTS \(try conn.quoteIdentifier(schema))") }
            for sequence in defaultSequences {
                if let schema = sequence.sequence.schema { try conn.execute("CREATE SCHEMA IF NOT EXISTS \(try conn.quoteIdentifier(schema))") }
                try conn.execute("CREATE SEQUENCE IF NOT EXISTS \(try conn.quote(sequence.sequence)) \(sequence.options)")
            }
            try conn.execute("CREATE \(unlogged)TABLE IF NOT EXISTS \(try conn.quote(name)) (\n  \(parts.joined(separator: ",\n  "))\n)\(with)")
            // A sequence created here for a column it belongs to (`serial`) is owned by it, as on the
            // source, when the table has its own name: PostgreSQL keeps an owned sequence in its
            // table's schema, so under another name the swap re-owns it (`SwapSQL`).
            for sequence in defaultSequences where sequence.ownedByColumn && name == table.name {
                try conn.execute("ALTER SEQUENCE \(try conn.quote(sequence.sequence)) OWNED BY \(try conn.quote(name)).\(try conn.quoteIdentifier(sequence.column))")
            }
            if let keyIndex { try conn.execute(idempotent(try retarget(keyIndex, of: table, to: name, source: source, target: conn))) }
            for statement in extras { try conn.execute(statement) }
        }
        if withIndexes { try createIndexes(table, named: name, from: source, on: target) }
        return true
    }

    /// Builds the source's secondary indexes (those not backing a constraint) on `target`'s table `name` (default: its own).
    public static func createIndexes(_ table: Plan.Table, named name: QualifiedName? = nil, from source: PGConnection, on target: PGConnection) throws {
        for definition in try secondaryIndexes(table, on: source) {
            try target.execute(idempotent(try retarget(definition, of: table, to: name ?? table.name, source: source, target: target)))
        }
    }

    /// The definitions of the source's secondary indexes of `table` (those not backing a constraint).
    static func secondaryIndexes(_ table: Plan.Table, on source: PGConnection) throws -> [String] {
        let indexes = try source.query(
            """
            SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i
            WHERE i.indrelid = to_regclass($1)
              AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
            """, [try source.quote(table.name)])
        return (0..<indexes.rowCount).compactMap { indexes[$0, 0] }
    }

    /// The unique index that carries the migration's key when no constraint does (a plain
    /// `CREATE UNIQUE INDEX`): it is built with the table, not deferred, because the catch-up's
    /// `ON CONFLICT (key)` and a re-run batch need it from the first row on.
    static func keyIndexDefinition(_ table: Plan.Table, on source: PGConnection) throws -> String? {
        let rows = try source.query(
            """
            SELECT pg_get_indexdef(i.indexrelid) FROM pg_index i
            WHERE i.indrelid = to_regclass($1) AND i.indisunique AND i.indisvalid AND i.indpred IS NULL AND i.indexprs IS NULL
              AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
              AND (SELECT array_agg(a.attname::text ORDER BY k.ord)
                   FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                   JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                   WHERE k.ord <= i.indnkeyatts) = $2::text[]
            ORDER BY i.indexrelid LIMIT 1
            """, [try source.quote(table.name), table.uniqueKey])
        return rows.rowCount == 0 ? nil : rows[0, 0]
    }

    /// `CREATE COLLATION IF NOT EXISTS` for the collations the table's columns use outside
    /// `pg_catalog` (which every server has), with their schemas: a target may lack them.
    static func collationDefinitions(_ table: Plan.Table, on source: PGConnection) throws -> [String] {
        let rows = try source.query(
            """
            SELECT DISTINCT format('CREATE SCHEMA IF NOT EXISTS %I', n.nspname),
                   format('CREATE COLLATION IF NOT EXISTS %I.%I (%s, deterministic = %s)', n.nspname, c.collname,
                          CASE c.collprovider
                            WHEN 'i' THEN format('provider = icu, locale = %L', coalesce(to_jsonb(c) ->> 'colliculocale', to_jsonb(c) ->> 'colllocale'))
                            ELSE format('provider = libc, lc_collate = %L, lc_ctype = %L', c.collcollate, c.collctype) END,
                          CASE WHEN c.collisdeterministic THEN 'true' ELSE 'false' END)
            FROM pg_attribute a JOIN pg_collation c ON c.oid = a.attcollation JOIN pg_namespace n ON n.oid = c.collnamespace
            WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped AND n.nspname <> 'pg_catalog'
            """, [try source.quote(table.name)])
        return (0..<rows.rowCount).flatMap { [rows[$0, 0]!, rows[$0, 1]!] }
    }

    /// An index definition of the source's table rewritten to name `name` instead (an index lives
    /// in its table's schema, so its own name needs no change). `pg_get_indexdef` writes the table
    /// schema-qualified, as `format('%I.%I')` does.
    static func retarget(_ definition: String, of table: Plan.Table, to name: QualifiedName, source: PGConnection, target: PGConnection) throws -> String {
        if name == table.name { return definition }
        let qualified = try source.query(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)",
            [try source.quote(table.name)]).get(0, 0, as: String.self)
        let marker = " ON \(qualified) USING "
        guard definition.contains(marker) else {
            throw ReshardError.failed("table \(table.name): cannot rename the index definition \(definition) for \(name)")
        }
        return definition.replacingOccurrences(of: marker, with: " ON \(try target.quote(name)) USING ")
    }

    /// `CREATE [UNIQUE] INDEX IF NOT EXISTS ...`, so building an index again is harmless.
    static func idempotent(_ definition: String) -> String {
        definition.replacingOccurrences(of: "CREATE INDEX ", with: "CREATE INDEX IF NOT EXISTS ")
            .replacingOccurrences(of: "CREATE UNIQUE INDEX ", with: "CREATE UNIQUE INDEX IF NOT EXISTS ")
    }
}
