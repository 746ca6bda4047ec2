import PostgresClient

/// Foreign keys between the migration's tables (`plan` refuses one to or from a table outside
/// it). They are not created with the table: the copy and the catch-up write each table on its
/// own, in no order across tables (a post may arrive before its user, a user's delete before its
/// posts'), so an enforced key, even NOT VALID, would stop them. The cutover adds them once
/// reshard no longer writes (the fence is up, the catch-up drained): `ADD ... NOT VALID`, which
/// takes a short lock, then `VALIDATE CONSTRAINT`, which checks the rows without blocking writes.
extension TargetTables {
    /// Adds the source's foreign keys of `table` whose referenced table is one of `plan`'s, on
    /// `target` between the names `name(_:)` gives (`plan.builtName(of:on:)`), and validates them
    /// (a key NOT VALID on the source stays so). Idempotent: a key already there is only validated.
    /// `sourceNames`: the tables' names on the source (default their own; on a shared database
    /// after the swap the old layout's are in `reshard_old`).
    public static func addForeignKeys(
        _ table: Plan.Table, of plan: Plan, names name: (Plan.Table) -> QualifiedName, sourceNames: ((Plan.Table) -> QualifiedName)? = nil,
        from source: PGConnection, on target: PGConnection, validate: Bool = true
    ) throws {
        let sourceName = sourceNames ?? { $0.name }
        let keys = try source.query(
            """
            SELECT conname, pg_get_constraintdef(oid), confrelid::regclass::text, confrelid::text, convalidated FROM pg_constraint
            WHERE conrelid = to_regclass($1) AND contype = 'f' ORDER BY conname
            """, [try source.quote(sourceName(table))])
        let quoted = try target.quote(name(table))
        for r in 0..<keys.rowCount {
            let constraint = try target.quoteIdentifier(keys[r, 0]!)
            guard let parent = try plan.tables.first(where: {
                try source.query("SELECT to_regclass($1)::oid::text", [try source.quote(sourceName($0))])[0, 0] == keys[r, 3]
            }) else { continue }
            let exists = try target.query(
                "SELECT EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = to_regclass($1) AND conname = $2)", [quoted, keys[r, 0]!])
            if try !exists.get(0, 0, as: Bool.self) {
                let definition = keys[r, 1]!.replacingOccurrences(of: " NOT VALID", with: "")
                let marker = "REFERENCES \(keys[r, 2]!)("
                guard definition.contains(marker) else {
                    throw ReshardError.failed("table \(table.name): cannot carry over foreign key \(keys[r, 0]!): \(definition)")
                }
                let retargeted = definition.replacingOccurrences(of: marker, with: "REFERENCES \(try target.quote(name(parent)))(")
                try target.execute("ALTER TABLE \(quoted) ADD CONSTRAINT \(constraint) \(retargeted) NOT VALID")
            }
            if validate, keys[r, 4] == "t" { try target.execute("ALTER TABLE \(quoted) VALIDATE CONSTRAINT \(constraint)") }
        }
    }
}
