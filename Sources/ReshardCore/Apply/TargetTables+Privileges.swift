import PostgresClient

/// What the application sees of a table besides its columns: comments, owner, grants and
/// row-level security, carried over when the table is created on a target.
extension TargetTables {
    /// Statements for `name` on `target`, in order: comments on the table and its columns, `OWNER
    /// TO` the source's owner, the source's grants, `ENABLE ROW LEVEL SECURITY` and the policies.
    /// A role the target lacks (an owner or a grantee) cannot be given anything: `warn` names it
    /// and the rest goes on. `FORCE ROW LEVEL SECURITY` waits for the cutover (`enableTriggers`):
    /// it would apply the policies to reshard's own writes as the owner.
    static func privileges(
        _ table: Plan.Table, named name: QualifiedName, from source: PGConnection, on target: PGConnection, warn: (String) -> Void
    ) throws -> [String] {
        let quoted = try target.quote(name)
        let relation = try source.query(
            "SELECT obj_description(oid, 'pg_class'), pg_get_userbyid(relowner), relrowsecurity FROM pg_class WHERE oid = to_regclass($1)",
            [try source.quote(table.name)])
        var statements: [String] = []
        if let comment = relation[0, 0] { statements.append("COMMENT ON TABLE \(quoted) IS \(SQLText.literal(comment))") }
        let comments = try source.query(
            """
            SELECT attname, col_description(attrelid, attnum) FROM pg_attribute
            WHERE attrelid = to_regclass($1) AND attnum > 0 AND NOT attisdropped AND col_description(attrelid, attnum) IS NOT NULL ORDER BY attnum
            """, [try source.quote(table.name)])
        for r in 0..<comments.rowCount {
            statements.append("COMMENT ON COLUMN \(quoted).\(try target.quoteIdentifier(comments[r, 0]!)) IS \(SQLText.literal(comments[r, 1]!))")
        }
        func roleExists(_ role: String) throws -> Bool {
            try target.query("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)", [role]).get(0, 0, as: Bool.self)
        }
        let owner = relation[0, 1]!
        let mayOwn = try target.query(
            "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1) AND pg_has_role(current_user, (SELECT oid FROM pg_roles WHERE rolname = $1), 'MEMBER')",
            [owner])
        if try mayOwn.get(0, 0, as: Bool.self) {
            statements.append("ALTER TABLE \(quoted) OWNER TO \(try target.quoteIdentifier(owner))")
        } else {
            warn("table \(table.name) on \(target.endpoint.label ?? "\(target.endpoint)"): owner \(owner) does not exist there or reshard's role is not a member of it; the table keeps reshard's role as its owner")
        }
        let grants = try source.query(
            """
            SELECT CASE WHEN g.grantee = 0 THEN NULL ELSE pg_get_userbyid(g.grantee) END, g.privilege_type, g.is_grantable
            FROM pg_class c, aclexplode(c.relacl) g
            WHERE c.oid = to_regclass($1) AND g.grantee <> c.relowner ORDER BY 1 NULLS FIRST, 2
            """, [try source.quote(table.name)])
        for r in 0..<grants.rowCount {
            let grantee: String
            if let role = grants[r, 0] {
                guard try roleExists(role) else {
                    warn("table \(table.name) on \(target.endpoint.label ?? "\(target.endpoint)"): role \(role) does not exist there; its \(grants[r, 1]!) grant is not carried over")
                    continue
                }
                grantee = try target.quoteIdentifier(role)
            } else {
                grantee = "PUBLIC"
            }
            statements.append("GRANT \(grants[r, 1]!) ON \(quoted) TO \(grantee)\(grants[r, 2] == "t" ? " WITH GRANT OPTION" : "")")
        }
        if relation[0, 2] == "t" { statements.append("ALTER TABLE \(quoted) ENABLE ROW LEVEL SECURITY") }
        let policies = try source.query(
            """
            SELECT polname, polpermissive, CASE polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE' WHEN 'd' THEN 'DELETE' ELSE 'ALL' END,
                   (SELECT string_agg(CASE WHEN r = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(r)) END, ', ') FROM unnest(polroles) r),
                   pg_get_expr(polqual, polrelid), pg_get_expr(polwithcheck, polrelid)
            FROM pg_policy WHERE polrelid = to_regclass($1) ORDER BY polname
            """, [try source.quote(table.name)])
        for r in 0..<policies.rowCount {
            var policy = "CREATE POLICY \(try target.quoteIdentifier(policies[r, 0]!)) ON \(quoted) AS \(policies[r, 1] == "t" ? "PERMISSIVE" : "RESTRICTIVE") FOR \(policies[r, 2]!) TO \(policies[r, 3] ?? "PUBLIC")"
            if let using = policies[r, 4] { policy += " USING (\(using))" }
            if let check = policies[r, 5] { policy += " WITH CHECK (\(check))" }
            statements.append(policy)
        }
        return statements
    }
}
