import PostgresClient

/// The user types a table's columns use, created on a target that lacks them: enums (labels in
/// their order), domains (base type, collation, default, NOT NULL, constraints) and composite
/// types, each after the types it is made of (a domain over an enum, an array of a domain).
/// A type the target already has is left as it is.
extension TargetTables {
    static func typeDefinitions(_ table: Plan.Table, from source: PGConnection, on target: PGConnection) throws -> [String] {
        let columns = try source.query(
            "SELECT DISTINCT a.atttypid::text FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped",
            [try source.quote(table.name)])
        var statements: [String] = []
        var seen: Set<String> = []
        for row in 0..<columns.rowCount { try addType(columns[row, 0]!, from: source, on: target, into: &statements, seen: &seen) }
        return statements
    }

    /// Appends what `oid` needs, then `oid` itself, unless it is built in, already handled or on the target.
    private static func addType(_ oid: String, from source: PGConnection, on target: PGConnection, into statements: inout [String], seen: inout Set<String>) throws {
        guard seen.insert(oid).inserted else { return }
        let info = try source.query(
            """
            SELECT t.typtype::text, t.typelem::text, t.typbasetype::text, t.typrelid::text, n.nspname, t.typname,
                   format_type(t.typbasetype, t.typtypmod), t.typnotnull, t.typdefault,
                   CASE WHEN t.typcollation <> 0 AND t.typcollation <> bt.typcollation THEN format('%I.%I', cn.nspname, co.collname) END,
                   t.typcategory = 'A' AND t.typelem <> 0
            FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace LEFT JOIN pg_type bt ON bt.oid = t.typbasetype
            LEFT JOIN pg_collation co ON co.oid = t.typcollation LEFT JOIN pg_namespace cn ON cn.oid = co.collnamespace
            WHERE t.oid = $1::oid
            """, [oid])
        guard info.rowCount == 1 else { return }
        if info[0, 10] == "t" { return try addType(info[0, 1]!, from: source, on: target, into: &statements, seen: &seen) }
        let schema = info[0, 4]!
        guard !["pg_catalog", "information_schema"].contains(schema) else { return }
        let name = try target.quote(QualifiedName(schema: schema, info[0, 5]!))
        let kind = info[0, 0]!
        guard ["e", "d", "c"].contains(kind) else { return }
        if kind == "d" { try addType(info[0, 2]!, from: source, on: target, into: &statements, seen: &seen) }
        var attributes: [(String, String)] = []
        if kind == "c" {
            let rows = try source.query(
                "SELECT attname, format_type(atttypid, atttypmod), atttypid::text FROM pg_attribute WHERE attrelid = $1::oid AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
                [info[0, 3]!])
            for r in 0..<rows.rowCount {
                try addType(rows[r, 2]!, from: source, on: target, into: &statements, seen: &seen)
                attributes.append((try target.quoteIdentifier(rows[r, 0]!), rows[r, 1]!))
            }
        }
        if try target.query("SELECT to_regtype($1) IS NOT NULL", [name]).get(0, 0, as: Bool.self) { return }
        statements.append("CREATE SCHEMA IF NOT EXISTS \(try target.quoteIdentifier(schema))")
        switch kind {
        case "e":
            let labels = try source.query("SELECT enumlabel FROM pg_enum WHERE enumtypid = $1::oid ORDER BY enumsortorder", [oid])
            statements.append("CREATE TYPE \(name) AS ENUM (\((0..<labels.rowCount).map { SQLText.literal(labels[$0, 0]!) }.joined(separator: ", ")))")
        case "d":
            var definition = "CREATE DOMAIN \(name) AS \(info[0, 6]!)"
            if let collation = info[0, 9] { definition += " COLLATE \(collation)" }
            if let def = info[0, 8] { definition += " DEFAULT \(def)" }
            if info[0, 7] == "t" { definition += " NOT NULL" }
            let checks = try source.query(
                "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE contypid = $1::oid AND contype = 'c' ORDER BY conname", [oid])
            for r in 0..<checks.rowCount { definition += " CONSTRAINT \(try target.quoteIdentifier(checks[r, 0]!)) \(checks[r, 1]!)" }
            statements.append(definition)
        default:
            statements.append("CREATE TYPE \(name) AS (\(attributes.map { "\($0) \($1)" }.joined(separator: ", ")))")
        }
    }
}
