import PostgresClient

/// The table's own triggers (not reshard's: capture, fence, those calling `reshard_shim`) on a
/// target: created disabled once the copy is done (`createTriggers`, from `apply`'s finishing of
/// the targets), so they fire neither for the copy nor for the catch-up (an audit trigger would
/// log every copied row as a new write), and enabled as they are on the source at cutover
/// (`enableTriggers`). Not created with the table: PostgreSQL's `COPY FROM` inserts row by row
/// into a table with any BEFORE ROW trigger, a disabled one too (it looks only at the trigger's
/// kind), which slows the copy. A trigger function the target lacks is created from the source's
/// definition (`pg_get_functiondef`).
extension TargetTables {
    /// The source's triggers of `table` (its table `sourceName` there, default its own name: on a
    /// shared database after the swap the old layout's is in `reshard_old`): name, definition,
    /// `tgenabled` (O, A, R, D), function oid.
    private static func sourceTriggers(_ table: Plan.Table, named sourceName: QualifiedName? = nil, on source: PGConnection) throws -> [(name: String, definition: String, enabled: String, function: String)] {
        let rows = try source.query(
            """
            SELECT tgname, pg_get_triggerdef(oid), tgenabled::text, tgfoid::text FROM pg_trigger
            WHERE tgrelid = to_regclass($1) AND NOT tgisinternal
              AND NOT EXISTS (SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE p.oid = tgfoid AND n.nspname = $2)
            ORDER BY tgname
            """, [try source.quote(sourceName ?? table.name), Shim.schema])
        return (0..<rows.rowCount).map { (rows[$0, 0]!, rows[$0, 1]!, rows[$0, 2]!, rows[$0, 3]!) }
    }

    /// Whether the source's `table` has triggers of its own (for `createTriggers`).
    static func hasTriggers(_ table: Plan.Table, on source: PGConnection) throws -> Bool {
        try !sourceTriggers(table, on: source).isEmpty
    }

    /// Creates the source's triggers of `table` on `target`'s table `name` (default its own),
    /// disabled, each with its disabling in one transaction, so no write ever finds one enabled.
    /// Idempotent: a trigger already there (by name) is left as it is.
    public static func createTriggers(_ table: Plan.Table, named name: QualifiedName? = nil, from source: PGConnection, on target: PGConnection) throws {
        let name = name ?? table.name
        let present = try target.query("SELECT tgname FROM pg_trigger WHERE tgrelid = to_regclass($1) AND NOT tgisinternal", [try target.quote(name)])
        let statements = try triggerDefinitions(table, named: name, from: source, on: target, skipping: Set((0..<present.rowCount).compactMap { present[$0, 0] }))
        guard !statements.isEmpty else { return }
        try target.transaction { conn in
            try conn.execute("SET LOCAL client_min_messages = warning")
            for statement in statements { try conn.execute(statement) }
        }
    }

    /// The statements creating the source's triggers of `table` (but those named in `skipping`)
    /// on `target`'s `name`, disabled, with the functions the target lacks.
    static func triggerDefinitions(
        _ table: Plan.Table, named name: QualifiedName, sourceNamed sourceName: QualifiedName? = nil, from source: PGConnection, on target: PGConnection,
        skipping: Set<String> = []
    ) throws -> [String] {
        let triggers = try sourceTriggers(table, named: sourceName, on: source).filter { !skipping.contains($0.name) }
        guard !triggers.isEmpty else { return [] }
        let qualified = try source.query(
            "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1)",
            [try source.quote(sourceName ?? table.name)]).get(0, 0, as: String.self)
        var statements: [String] = []
        var functions: Set<String> = []
        for trigger in triggers {
            if functions.insert(trigger.function).inserted {
                let function = try source.query("SELECT $1::oid::regprocedure::text, pg_get_functiondef($1::oid)", [trigger.function])
                if try target.query("SELECT to_regprocedure($1) IS NULL", [function[0, 0]!]).get(0, 0, as: Bool.self) {
                    statements.append(function[0, 1]!)
                }
            }
            let marker = " ON \(qualified) "
            guard trigger.definition.contains(marker) else {
                throw ReshardError.failed("table \(table.name): cannot carry over trigger \(trigger.name): \(trigger.definition)")
            }
            statements.append(trigger.definition.replacingOccurrences(of: marker, with: " ON \(try target.quote(name)) "))
            statements.append("ALTER TABLE \(try target.quote(name)) DISABLE TRIGGER \(try target.quoteIdentifier(trigger.name))")
        }
        return statements
    }

    /// For the cutover, once reshard no longer writes the table: enables the table's own triggers
    /// on `target`'s `name` (default its own) as they are on the source (`ENABLE`, `ENABLE ALWAYS`,
    /// `ENABLE REPLICA`, or left disabled), and forces row-level security when the source does.
    /// `sourceName`: the table's name on the source (default its own).
    public static func enableTriggers(
        _ table: Plan.Table, named name: QualifiedName? = nil, sourceNamed sourceName: QualifiedName? = nil, from source: PGConnection, on target: PGConnection
    ) throws {
        let quoted = try target.quote(name ?? table.name)
        try target.transaction { conn in
            for trigger in try sourceTriggers(table, named: sourceName, on: source) where trigger.enabled != "D" {
                let how = ["A": "ALWAYS ", "R": "REPLICA "][trigger.enabled] ?? ""
                try conn.execute("ALTER TABLE \(quoted) ENABLE \(how)TRIGGER \(try conn.quoteIdentifier(trigger.name))")
            }
            let force = try source.query("SELECT relforcerowsecurity FROM pg_class WHERE oid = to_regclass($1)", [try source.quote(sourceName ?? table.name)])
            if force.rowCount == 1, force[0, 0] == "t" { try conn.execute("ALTER TABLE \(quoted) FORCE ROW LEVEL SECURITY") }
        }
    }
}
