import Foundation
import PostgresClient
import ReshardCore

extension TableModel {
    /// Reads a table's model from a source's catalog (read-only).
    public static func read(
        _ table: QualifiedName, shardKey: String, placementKey: String? = nil, on conn: PGConnection
    ) throws -> TableModel {
        let quoted = try conn.quote(table)
        guard let oid = try conn.query("SELECT to_regclass($1)::oid", [quoted])[0, 0] else {
            throw ReshardError.badInput("table \(table) does not exist on \(conn.endpoint.label ?? "\(conn.endpoint)")")
        }
        let rows = try conn.query(
            """
            SELECT a.attname, CASE WHEN t.typtype = 'e' THEN 'enum' ELSE coalesce(b.typname, t.typname) END,
                   a.atttypmod, a.attnotnull, a.atthasdef, a.attgenerated <> '',
                   CASE a.attidentity WHEN 'a' THEN 'always' WHEN 'd' THEN 'by default' END,
                   CASE WHEN t.typtype = 'e' THEN (SELECT array_agg(enumlabel ORDER BY enumsortorder) FROM pg_enum WHERE enumtypid = t.oid)::text END
            FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid
            LEFT JOIN pg_type b ON t.typtype = 'd' AND b.oid = t.typbasetype
            WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum
            """, [oid])
        var columns: [Column] = []
        for r in 0..<rows.rowCount {
            let base = rows[r, 1]!
            let typmod = try rows.get(r, 2, as: Int.self)
            var column = Column(
                name: rows[r, 0]!, baseType: base, notNull: try rows.get(r, 3, as: Bool.self), hasDefault: try rows.get(r, 4, as: Bool.self),
                isGenerated: try rows.get(r, 5, as: Bool.self), identity: rows[r, 6])
            if ["varchar", "bpchar"].contains(base), typmod > 4 { column.length = typmod - 4 }
            if base == "numeric", typmod > 4 {
                column.precision = ((typmod - 4) >> 16) & 0xffff
                column.scale = (typmod - 4) & 0xffff
            }
            if let labels = rows[r, 7] { column.enumLabels = parseTextArray(labels) }
            columns.append(column)
        }
        let schema = try TableSchema.read(table, on: conn)
        let unique = try UniqueIndex.read(table, on: conn).filter { $0.predicate == nil && !$0.hasExpressions }.map(\.columns)
        let fkRows = try conn.query(
            """
            SELECT format('%I.%I', n.nspname, p.relname), n.nspname, p.relname,
                   (SELECT array_agg(a.attname ORDER BY k.ord) FROM unnest(c.conkey) WITH ORDINALITY k(attnum, ord)
                      JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum)::text,
                   (SELECT array_agg(a.attname ORDER BY k.ord) FROM unnest(c.confkey) WITH ORDINALITY k(attnum, ord)
                      JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum)::text
            FROM pg_constraint c JOIN pg_class p ON p.oid = c.confrelid JOIN pg_namespace n ON n.oid = p.relnamespace
            WHERE c.conrelid = $1::oid AND c.contype = 'f' ORDER BY c.conname
            """, [oid])
        let tableSchemaName = try conn.query("SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = $1::oid", [oid])[0, 0]
        var foreignKeys: [ForeignKey] = []
        for r in 0..<fkRows.rowCount {
            // The parent is named as the config names tables: without a schema when it sits in the table's.
            let parentSchema = fkRows[r, 1]!
            let parent = table.schema == nil && parentSchema == tableSchemaName ? QualifiedName(fkRows[r, 2]!) : QualifiedName(schema: parentSchema, fkRows[r, 2]!)
            foreignKeys.append(ForeignKey(columns: parseTextArray(fkRows[r, 3]!), parent: parent, parentColumns: parseTextArray(fkRows[r, 4]!)))
        }
        let checks = try conn.query("SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = $1::oid AND contype = 'c'", [oid])
        for r in 0..<checks.rowCount { applyBounds(from: checks[r, 0]!, to: &columns) }
        return TableModel(
            name: table, columns: columns, uniqueKey: schema?.uniqueKey ?? [], uniqueSets: unique, foreignKeys: foreignKeys,
            shardKey: shardKey, placementKey: placementKey)
    }

    /// Reads the bounds of comparisons like `(qty >= 0)` or `(price < (100)::numeric)` in a CHECK,
    /// as inclusive bounds on integer-like columns. Anything else is left to the loader (rows a
    /// constraint refuses are skipped).
    static func applyBounds(from definition: String, to columns: inout [Column]) {
        guard definition.range(of: " OR ", options: .caseInsensitive) == nil else { return }
        let pattern = #"\(+"?([A-Za-z_][A-Za-z0-9_]*)"?\s*(>=|<=|>|<)\s*\(*'?(-?[0-9]+(?:\.[0-9]+)?)'?\)*"#
        guard let regex = try? NSRegularExpression(pattern: pattern) else { return }
        let text = definition as NSString
        for match in regex.matches(in: definition, range: NSRange(location: 0, length: text.length)) {
            let name = text.substring(with: match.range(at: 1)), op = text.substring(with: match.range(at: 2))
            guard let value = Double(text.substring(with: match.range(at: 3))), let i = columns.firstIndex(where: { $0.name == name })
            else { continue }
            switch op {
            case ">=": columns[i].minimum = max(columns[i].minimum ?? value, value)
            case ">": columns[i].minimum = max(columns[i].minimum ?? value + 1, value + 1)
            case "<=": columns[i].maximum = min(columns[i].maximum ?? value, value)
            default: columns[i].maximum = min(columns[i].maximum ?? value - 1, value - 1)
            }
        }
    }
}

/// `{a,"b c"}` (a text[] as PostgreSQL prints it) -> ["a", "b c"].
func parseTextArray(_ text: String) -> [String] {
    var items: [String] = []
    var current = "", quoted = false, escaped = false, inQuotes = false
    for c in text.dropFirst().dropLast() {
        if escaped { current.append(c); escaped = false; continue }
        switch c {
        case "\\" where inQuotes: escaped = true
        case "\"": inQuotes.toggle(); quoted = true
        case "," where !inQuotes:
            items.append(current)
            current = ""
            quoted = false
        default: current.append(c)
        }
    }
    if !current.isEmpty || quoted { items.append(current) }
    return items
}
