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
    /// `locations`: where the tables are at that moment (on a shared database the new layout's
    /// are in `reshard_build` until the swap, under their own names after it).
    static func setTargetTriggers(enabled: Bool, plan: Plan, locations: TableLocations, connect: (String) throws -> PGConnection) throws -> Int {
        guard let reference = Self.referenceSource(plan) else { return 0 }
        let source = try connect(reference.name)
        let referenceNames = locations.names(.old, on: reference.name)
        var tables = 0
        for target in plan.targets {
            let conn = try connect(target.name)
            for (t, (table, name)) in zip(plan.tables, locations.names(.new, on: target.name)).enumerated() {
                guard try TargetTables.exists(table, named: name, on: conn) else { continue }
                if enabled {
                    try TargetTables.enableTriggers(table, named: name, sourceNamed: referenceNames[t], from: source, on: conn)
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
    static func setTargetForeignKeys(
        adding: Bool, validate: Bool = false, plan: Plan, locations: TableLocations, connect: (String) throws -> PGConnection
    ) throws -> Int {
        guard let reference = Self.referenceSource(plan) else { return 0 }
        let source = try connect(reference.name)
        let referenceNames = locations.names(.old, on: reference.name)
        var count = 0
        for target in plan.targets {
            let conn = try connect(target.name)
            let names = locations.names(.new, on: target.name)
            // Keyed by table: an unknown one is a bug to hear of, not the first table's name.
            let byTable = Dictionary(uniqueKeysWithValues: zip(plan.tables.map(\.name), zip(names, referenceNames)))
            let name = { (table: Plan.Table) in byTable[table.name]!.0 }
            let sourceName = { (table: Plan.Table) in byTable[table.name]!.1 }
            for (t, table) in plan.tables.enumerated() where try TargetTables.exists(table, named: names[t], on: conn) {
                if adding {
                    try TargetTables.addForeignKeys(table, of: plan, names: name, sourceNames: sourceName, from: source, on: conn, validate: validate)
                    continue
                }
                let quoted = try conn.quote(names[t])
                let keys = try source.query(
                    "SELECT conname FROM pg_constraint WHERE conrelid = to_regclass($1) AND contype = 'f' ORDER BY conname", [try source.quote(referenceNames[t])])
                for r in 0..<keys.rowCount {
                    try conn.execute("ALTER TABLE \(quoted) DROP CONSTRAINT IF EXISTS \(try conn.quoteIdentifier(keys[r, 0]!))")
                    count += 1
                }
            }
        }
        return count
    }

    /// The source whose tables say how the application's triggers and keys are: one that is not
    /// a target's database when there is one (its table always has its own name and state). When
    /// every source is shared (doubling) it is read where `locations` puts the old layout's
    /// tables: after the swap the live name is the new layout's table (its triggers are the ones
    /// this sets, its keys the ones the cutover added).
    static func referenceSource(_ plan: Plan) -> Plan.Shard? {
        plan.sources.first { source in !plan.targets.contains { $0.sameAsSource == source.name } } ?? plan.sources.first
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
