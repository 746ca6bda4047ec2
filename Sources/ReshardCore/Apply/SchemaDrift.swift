import Foundation
import PostgresClient

/// An `ALTER TABLE` on a source while `apply` runs.
///
/// **Detection.** Every catch-up round asks the source for the column list of every migrated table
/// in one catalog query and compares it with the definition in use; so does the backfill before a
/// slice's first batch, then at most once a second per source (`checkRecent`, where a catch-up
/// round's check counts too), and after a batch that failed (a dropped column fails the batch's
/// query: the error then names the change). A catalog query rather than an event trigger on `ddl_command_end`: creating an event
/// trigger takes a superuser, which managed PostgreSQL does not give, and reshard needs nothing
/// beyond owning the tables; the query costs microseconds beside a round.
///
/// **Columns added** nullable or with a constant default (not generated, not identity) are
/// carried over once every source has them (the application migrates its shards one by one;
/// until then rows are copied without the column). The column is added to every target's copy
/// (`plan.builtName`), then, with no catch-up round running, the column lists in use switch to
/// include it (`current`), and every source logs again the keys of its rows whose value is not
/// the default: rows written before the switch went out without the column, and the catch-up now
/// re-reads them. A batch still copying with the old list is covered the same way.
///
/// **Anything else** (a column dropped, a type or nullability changed, the table gone) stops
/// `apply` with exit 1 naming the table, the source and the change. Nothing is lost: the shim
/// keeps logging every write. Once the targets are changed to match (`plan` checks them), `apply`
/// accepts the new definition (`acceptChanged`) and goes on.
///
/// Why `@unchecked Sendable`: every field is read and written under `lock`.
final class SchemaDrift: @unchecked Sendable {
    private let plan: Plan
    private let lock = NSCondition()
    private var tables: [String: Plan.Table]
    private var version = 0
    /// Catch-up rounds under way: the switch of column lists waits for them.
    private var rounds = 0
    private var switching = false
    /// Per table, the columns each source has added so far (nullable or constant default).
    private var added: [String: [String: [AddedColumn]]] = [:]
    /// One source check at a time carries out a switch.
    private let checking = NSLock()
    /// Per source, when the latest check that found nothing to stop on began.
    private var matchedAt: [String: Date] = [:]

    struct AddedColumn: Equatable {
        var column: TableSchema.Column
        /// The default as the server prints it (`pg_get_expr`), nil for none.
        var defaultExpression: String?
    }

    init(plan: Plan) {
        self.plan = plan
        tables = Dictionary(uniqueKeysWithValues: plan.tables.map { ($0.name.description, $0) })
    }

    /// `table` as currently defined: the plan's, plus the columns carried over since.
    func current(_ table: Plan.Table) -> Plan.Table { lock.withLock { tables[table.name.description] ?? table } }

    /// Whether the column lists changed since `seen` (which is updated): sessions that prepared
    /// statements or temp tables for the old lists must be replaced.
    func changed(since seen: inout Int) -> Bool {
        lock.withLock {
            defer { seen = version }
            return seen != version
        }
    }

    /// Runs one catch-up round, unless the column lists changed since `seen` (nil then: the
    /// caller replaces its sessions first). A switch waits for the rounds under way.
    func round<T>(seen: Int, _ body: () throws -> T) rethrows -> T? {
        let go = lock.withLock {
            while switching { lock.wait() }
            guard version == seen else { return false }
            rounds += 1
            return true
        }
        guard go else { return nil }
        defer {
            lock.withLock {
                rounds -= 1
                lock.broadcast()
            }
        }
        return try body()
    }

    // MARK: detection

    /// `name:type:notnull[:generated]`, the fingerprint's column text, as the catalog query builds it.
    static func columnText(_ columns: [TableSchema.Column]) -> String {
        columns.map { "\($0.name):\($0.type):\($0.notNull)\($0.isGenerated ? ":generated" : "")" }.joined(separator: ";")
    }

    static let columnsQuery = """
        SELECT (SELECT string_agg(format('%s:%s:%s%s', a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull::text,
                                         CASE WHEN a.attgenerated <> '' THEN ':generated' ELSE '' END), ';' ORDER BY a.attnum)
                FROM pg_attribute a WHERE a.attrelid = to_regclass(t.name) AND a.attnum > 0 AND NOT a.attisdropped)
        FROM unnest($1::text[]) WITH ORDINALITY AS t(name, i) ORDER BY t.i
        """

    /// Compares `source`'s tables with the definitions in use (one catalog query); carries added
    /// columns over once every source has them, and throws a `failed` error naming the table and
    /// the change for anything else. `connect` reaches any shard; `log` records an event.
    func check(_ source: String, on conn: PGConnection, connect: (String) throws -> PGConnection, log: (String) -> Void) throws {
        let began = Date()
        try compare(source, on: conn, connect: connect, log: log)
        lock.withLock { matchedAt[source] = max(matchedAt[source] ?? .distantPast, began) }
    }

    /// The backfill's check before a batch: `check`, unless a check of `source` that began less
    /// than `seconds` ago found nothing to stop on. A catch-up round or another batch checks the
    /// same source all the time, so a batch rarely pays the catalog query itself.
    func checkRecent(
        _ source: String, within seconds: Double = 1, on conn: PGConnection, connect: (String) throws -> PGConnection, log: (String) -> Void
    ) throws {
        if let at = lock.withLock({ matchedAt[source] }), Date().timeIntervalSince(at) < seconds { return }
        try check(source, on: conn, connect: connect, log: log)
    }

    private func compare(_ source: String, on conn: PGConnection, connect: (String) throws -> PGConnection, log: (String) -> Void) throws {
        let names = try plan.tables.map { try conn.quote($0.name) }
        let result = try conn.query(Self.columnsQuery, [names])
        var drifted: [Plan.Table] = []
        for (i, table) in plan.tables.enumerated() {
            let now = current(table)
            let seen = lock.withLock { added[now.name.description]?[source] ?? [] }
            if result[i, 0] != Self.columnText(now.columns + seen.map(\.column)) { drifted.append(now) }
        }
        guard !drifted.isEmpty else { return }
        try checking.withLock {
            for table in drifted { try examine(current(table), on: source, conn, connect: connect, log: log) }
        }
    }

    private func examine(
        _ table: Plan.Table, on source: String, _ conn: PGConnection, connect: (String) throws -> PGConnection, log: (String) -> Void
    ) throws {
        guard let schema = try TableSchema.read(table.name, on: conn) else {
            throw drift(table, source, ["the table no longer exists"])
        }
        var changes: [String] = []
        for column in table.columns {
            guard let now = schema.column(column.name) else {
                changes.append("column \(column.name) was dropped")
                continue
            }
            if now.type != column.type { changes.append("column \(column.name) changed type from \(column.type) to \(now.type)") }
            if now.notNull != column.notNull { changes.append("column \(column.name) is now \(now.notNull ? "NOT NULL" : "nullable")") }
            if now.isGenerated != column.isGenerated { changes.append("column \(column.name) changed generation") }
        }
        let new = schema.columns.filter { column in !table.columns.contains { $0.name == column.name } }
        let defaults = try Self.defaults(of: table, columns: new.map(\.name), on: conn)
        var addable: [AddedColumn] = []
        for column in new {
            let expression = defaults[column.name] ?? nil
            if column.isGenerated || column.identity != nil {
                changes.append("column \(column.name) was added as a generated or identity column")
            } else if let expression, !Self.isConstant(expression) {
                changes.append("column \(column.name) was added with the non-constant default \(expression)")
            } else if column.notNull && expression == nil {
                changes.append("column \(column.name) was added NOT NULL without a default")
            } else {
                addable.append(AddedColumn(column: column, defaultExpression: expression))
            }
        }
        guard changes.isEmpty else { throw drift(table, source, changes) }
        let key = table.name.description
        let (everywhere, known): (Bool, Bool) = lock.withLock {
            let known = added[key]?[source] == addable
            added[key, default: [:]][source] = addable
            return (plan.sources.allSatisfy { added[key]?[$0.name] == addable }, known)
        }
        if addable.isEmpty || (known && !everywhere) { return }
        log("table \(table.name) on source \(source): column(s) \(addable.map(\.column.name).joined(separator: ", ")) added"
            + (everywhere ? "" : "; carried over once every source has them"))
        guard everywhere, !addable.isEmpty else { return }
        try carryOver(addable, of: table, connect: connect, log: log)
    }

    private func drift(_ table: Plan.Table, _ source: String, _ changes: [String]) -> ReshardError {
        ReshardError.failed(
            "table \(table.name) changed on source \(source) during the migration: \(changes.joined(separator: "; ")). "
                + "Nothing is lost (the shim keeps logging every write): change the target tables to match, then run 'reshard apply' again",
            shard: source)
    }

    /// Adds the columns to every target's copy, switches the column lists, and has every source
    /// log again the rows whose value of them is not the default.
    private func carryOver(
        _ columns: [AddedColumn], of table: Plan.Table, connect: (String) throws -> PGConnection, log: (String) -> Void
    ) throws {
        for target in plan.targets {
            let name = plan.builtName(of: table, on: target)
            let conn = try connect(target.name)
            let quoted = try conn.quote(name)
            // A target that is a source's database and has no copy of its own (its copies are in
            // the live table): the application added the column there itself.
            if target.isShared, try !conn.query("SELECT to_regclass($1) IS NOT NULL", [quoted]).get(0, 0, as: Bool.self) { continue }
            let clauses = columns.map { added in
                "ADD COLUMN IF NOT EXISTS \(SQLText.identifier(added.column.name)) \(added.column.type)"
                    + (added.column.collation.map { " COLLATE \($0)" } ?? "") + (added.defaultExpression.map { " DEFAULT \($0)" } ?? "")
            }
            try Self.withLockTimeout(conn) { try $0.execute("ALTER TABLE \(quoted) \(clauses.joined(separator: ", "))") }
        }
        var updated = table
        updated.columns += columns.map(\.column)
        updated.fingerprint = TableSchema(columns: updated.columns, uniqueKey: table.uniqueKey, uniqueKeyIsPrimary: false).fingerprint
        lock.withLock {
            switching = true
            while rounds > 0 { lock.wait() }
            tables[table.name.description] = updated
            version += 1
            added[table.name.description] = nil
        }
        defer {
            lock.withLock {
                switching = false
                lock.broadcast()
            }
        }
        var rows = 0
        for source in plan.sources {
            rows += try Self.relog(updated, where: Self.differsFromDefault(columns), migration: plan.migration, on: try connect(source.name))
        }
        log("table \(table.name): column(s) \(columns.map(\.column.name).joined(separator: ", ")) added to the targets and copied from now on; \(rows) row(s) re-read")
    }

    // MARK: restart

    /// On a restart after the table changed (its fingerprint differs from the registered one):
    /// accepts the new definition when every target's copy has the sources' columns now, and has
    /// the sources log again the rows whose values in columns the registered definition lacked
    /// may not have been copied. Throws a refusal naming the differences otherwise.
    func acceptChanged(_ table: Plan.Table, registered: Plan.Table, connect: (String) throws -> PGConnection) throws {
        guard registered.uniqueKey == table.uniqueKey, registered.key == table.key else {
            throw ReshardError.refused("table \(table.name) changed its unique key since migration \(plan.migration) started")
        }
        var problems: [String] = []
        let expected = TableSchema(columns: table.columns, uniqueKey: table.uniqueKey, uniqueKeyIsPrimary: false)
        for target in plan.targets {
            let name = plan.builtName(of: table, on: target)
            guard let schema = try TableSchema.read(name, on: try connect(target.name)) else { continue }
            let here = name == table.name ? "target \(target.name)" : "target \(target.name) (\(name))"
            problems += schema.differences(from: expected, here: here, there: "the sources").map { "table \(table.name): \($0)" }
        }
        guard problems.isEmpty else {
            throw ReshardError.refused(
                "table \(table.name) changed since migration \(plan.migration) started, and the targets do not match yet: "
                    + problems.joined(separator: "; "))
        }
        let new = table.columns.filter { column in !registered.columns.contains { $0.name == column.name } && !column.isGenerated }
        guard !new.isEmpty else { return }
        for source in plan.sources {
            let conn = try connect(source.name)
            let defaults = try Self.defaults(of: table, columns: new.map(\.name), on: conn)
            let columns = new.map { AddedColumn(column: $0, defaultExpression: defaults[$0.name] ?? nil) }
            // A default that is not a constant may differ on every server: every row is re-read.
            let condition = columns.allSatisfy { $0.defaultExpression.map(Self.isConstant) ?? true } ? Self.differsFromDefault(columns) : "true"
            _ = try Self.relog(table, where: condition, migration: plan.migration, on: conn)
        }
    }

    // MARK: SQL

    /// The default expression of each named column (nil for none).
    static func defaults(of table: Plan.Table, columns: [String], on conn: PGConnection) throws -> [String: String?] {
        guard !columns.isEmpty else { return [:] }
        let rows = try conn.query(
            """
            SELECT a.attname, pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a
            LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE a.attrelid = to_regclass($1) AND a.attname = ANY($2::text[])
            """, [try conn.quote(table.name), columns])
        var result: [String: String?] = [:]
        for r in 0..<rows.rowCount { result[rows[r, 0]!] = rows[r, 1] }
        return result
    }

    /// Whether a default as `pg_get_expr` prints it is a constant (`'x'::text`, `42`, `true`,
    /// `NULL::integer`): the same value on every server and row, so it can be given to the
    /// targets as it is. Anything calling a function (`now()`, `nextval(...)`) is not.
    static func isConstant(_ expression: String) -> Bool {
        let patterns = [#"^'([^']|'')*'(::[A-Za-z_][A-Za-z0-9_ ."]*(\[\])?)?$"#, #"^-?[0-9]+(\.[0-9]+)?$"#, #"^(true|false)$"#, #"^NULL(::[A-Za-z_][A-Za-z0-9_ ."]*)?$"#]
        return patterns.contains { expression.range(of: $0, options: .regularExpression) != nil }
    }

    /// True for a row whose value in one of `columns` is not what the target's default gives it.
    static func differsFromDefault(_ columns: [AddedColumn]) -> String {
        columns.map { "\(SQLText.identifier($0.column.name)) IS DISTINCT FROM \($0.defaultExpression ?? "NULL")" }.joined(separator: " OR ")
    }

    /// Logs the keys of `table`'s rows matching `condition` into its changelog, as the shim does,
    /// so the catch-up re-reads them. Returns how many.
    static func relog(_ table: Plan.Table, where condition: String, migration: String, on conn: PGConnection) throws -> Int {
        let keys = try table.uniqueKey.map { "\(try conn.quoteIdentifier($0))::pg_catalog.text" }.joined(separator: ", ")
        return try conn.query(
            """
            INSERT INTO \(Shim.logTable(migration: migration, table: table)) (pk, shard_key)
            SELECT ARRAY[\(keys)], \(try conn.quoteIdentifier(table.key))::pg_catalog.text FROM ONLY \(try conn.quote(table.name)) WHERE \(condition)
            """).affectedRows
    }

    /// DDL on a table the application may be using: waits at most 2 s for its lock at a time (so
    /// it never queues the application's writers for long), up to 30 times.
    static func withLockTimeout(_ conn: PGConnection, _ body: (PGConnection) throws -> Void) throws {
        var attempt = 0
        while true {
            do {
                try conn.transaction { c in
                    try c.execute("SET LOCAL lock_timeout = '2s'")
                    try body(c)
                }
                return
            } catch let error as PostgresError where error.sqlState == "55P03" && attempt < 30 {
                attempt += 1
                usleep(UInt32(min(200_000 * attempt, 2_000_000)))
            }
        }
    }
}
