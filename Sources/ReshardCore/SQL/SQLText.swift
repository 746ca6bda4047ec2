import PostgresClient

/// Quoting for SQL text built without a connection. reshard speaks UTF-8 only (the planner
/// refuses other server encodings), where PostgreSQL's rules are simple and fixed: an identifier
/// is double-quoted with `"` doubled; a literal is single-quoted with `'` doubled, and written as
/// an `E'...'` literal with `\` doubled when it holds a backslash, which reads the same whatever
/// `standard_conforming_strings` says. That is what libpq's `PQescapeIdentifier` and
/// `PQescapeLiteral` produce for UTF-8 text, so SQL can be built once per table and tested as text.
public enum SQLText {
    /// `we"ird` -> `"we""ird"`
    public static func identifier(_ name: String) -> String {
        "\"" + name.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    /// `public.users` -> `"public"."users"`
    public static func name(_ name: QualifiedName) -> String {
        (name.schema.map { identifier($0) + "." } ?? "") + identifier(name.name)
    }

    /// `it's` -> `'it''s'`; `a\b` -> ` E'a\\b'`
    public static func literal(_ value: String) -> String {
        let doubled = value.replacingOccurrences(of: "'", with: "''")
        guard doubled.contains("\\") else { return "'\(doubled)'" }
        return " E'" + doubled.replacingOccurrences(of: "\\", with: "\\\\") + "'"
    }
}
