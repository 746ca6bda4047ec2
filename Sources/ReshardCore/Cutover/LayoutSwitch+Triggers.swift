import PostgresClient

/// The application's own triggers on the new layout's tables. They are created disabled
/// (`TargetTables.triggerDefinitions`) because the copy and the catch-up write the targets as
/// the application already did on the sources: a trigger firing there would act twice. Once the
/// catch-up is drained behind the fence nothing of reshard's writes the targets any more, so the
/// cutover enables them as the source has them before the new layout serves; a rollback (or an
/// undone cutover) disables them again, since the catch-up feeds the targets again afterwards.
extension LayoutSwitch {
    /// Enables (`true`) or disables the application's triggers of every migrated table on every
    /// target, as the first source has them (`TargetTables.enableTriggers`). Idempotent.
    static func setTargetTriggers(enabled: Bool, plan: Plan, connect: (String) throws -> PGConnection) throws -> Int {
        guard let reference = plan.sources.first else { return 0 }
        let source = try connect(reference.name)
        var tables = 0
        for target in plan.targets {
            let conn = try connect(target.name)
            for table in plan.tables {
                let name = plan.builtName(of: table, on: target)
                guard try TargetTables.exists(table, named: name, on: conn) else { continue }
                if enabled {
                    try TargetTables.enableTriggers(table, named: name, from: source, on: conn)
                } else {
                    try disableTriggers(named: name, on: conn)
                }
                tables += 1
            }
        }
        return tables
    }

    /// Cutover: adds the foreign keys between the migrated tables on every target
    /// (`TargetTables.addForeignKeys`), now that the catch-up, which writes the tables in no order
    /// across them, is drained. Inside the stall they are added NOT VALID (a catalog change; new
    /// writes are checked from then on); `validate` scans the existing rows, which takes as long as
    /// the table is big, so the cutover does it after the release, when writes flow again
    /// (VALIDATE takes SHARE UPDATE EXCLUSIVE, which does not block them). Rollback (`adding`
    /// false): drops them again on the targets, since the catch-up feeds them again afterwards.
    /// Idempotent both ways.
    static func setTargetForeignKeys(adding: Bool, validate: Bool = false, plan: Plan, connect: (String) throws -> PGConnection) throws -> Int {
        guard let reference = plan.sources.first else { return 0 }
        let source = try connect(reference.name)
        var count = 0
        for target in plan.targets {
            let conn = try connect(target.name)
            for table in plan.tables where try TargetTables.exists(table, named: plan.builtName(of: table, on: target), on: conn) {
                if adding {
                    try TargetTables.addForeignKeys(
                        table, of: plan, names: { plan.builtName(of: $0, on: target) }, from: source, on: conn, validate: validate)
                    continue
                }
                let quoted = try conn.quote(plan.builtName(of: table, on: target))
                let keys = try source.query(
                    "SELECT conname FROM pg_constraint WHERE conrelid = to_regclass($1) AND contype = 'f' ORDER BY conname", [try source.quote(table.name)])
                for r in 0..<keys.rowCount {
                    try conn.execute("ALTER TABLE \(quoted) DROP CONSTRAINT IF EXISTS \(try conn.quoteIdentifier(keys[r, 0]!))")
                    count += 1
                }
            }
        }
        return count
    }

    /// Disables every trigger of the table's that is neither internal nor reshard's own (the
    /// capture and fence triggers stay as they are) and lifts a forced row-level security.
    private static func disableTriggers(named name: QualifiedName, on conn: PGConnection) throws {
        let quoted = try conn.quote(name)
        try conn.transaction { conn in
            let triggers = try conn.query(
                "SELECT tgname FROM pg_trigger WHERE tgrelid = to_regclass($1) AND NOT tgisinternal AND tgname NOT LIKE 'reshard%' AND tgenabled <> 'D' ORDER BY tgname",
                [quoted])
            for r in 0..<triggers.rowCount {
                try conn.execute("ALTER TABLE \(quoted) DISABLE TRIGGER \(try conn.quoteIdentifier(triggers[r, 0]!))")
            }
            let forced = try conn.query("SELECT relforcerowsecurity FROM pg_class WHERE oid = to_regclass($1)", [quoted])
            if forced.rowCount == 1, forced[0, 0] == "t" { try conn.execute("ALTER TABLE \(quoted) NO FORCE ROW LEVEL SECURITY") }
        }
    }
}
