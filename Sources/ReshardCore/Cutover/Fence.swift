import Foundation
import PostgresClient
import ReshardRouting

/// The write fence: which layout of a migration takes the application's writes, enforced by the
/// databases themselves, so an application that still routes by an old shard map gets an error
/// (`FenceSQLState.staleEpoch`, naming the epoch to reload) instead of writing into a table
/// nobody reads anymore.
///
/// **Installed when `apply` starts, never at cutover.** DDL queues behind long transactions and
/// autovacuum; flipping the fence is a `setval`, which takes no table lock and never waits.
///
/// **Where the state lives: a sequence.** One per (migration, database), `reshard_shim.fence_<id>`,
/// holding `epoch * 4 + serving` (`Serving`). A sequence's tuple is updated in place and read
/// without MVCC, so a REPEATABLE READ or SERIALIZABLE writer whose snapshot predates the flip still
/// sees it (a one-row table read with the writer's snapshot would not), and `setval` needs no
/// commit to be seen. Because it is not transactional either, an undone cutover sets it back
/// explicitly.
///
/// **The check.** A BEFORE statement trigger (INSERT, UPDATE, DELETE, TRUNCATE) on every migrated
/// table of every source and target, with the table's layout as its argument (`old` on the
/// sources' live tables, `new` on the targets' tables and the tables built on shared databases):
/// one sequence read per statement, not per row. The function is a plain plpgsql function, run
/// as the writer (no `SECURITY DEFINER`, no `SET search_path`): those cost a GUC save and restore
/// and a non-inlinable call on every write (17% of pgbench's single-row write throughput). It reads
/// the state with `pg_sequence_last_value` and `current_setting` as plpgsql simple expressions
/// (no SPI query), so the state sequence is readable by PUBLIC (the state is no secret), and every
/// name and operator in it is schema-qualified (`OPERATOR(pg_catalog.=)`): a writer's
/// `search_path` cannot substitute one. A write that passes costs two assignments and one `IF`
/// (sessions declaring the current epoch, as `ReshardRouter`'s do, included); everything else
/// (refusals, reshard's own sessions, a declared epoch newer than the fence's or malformed) is
/// decided after it. A `WHEN` clause on the trigger was tried and costs more:
/// the executor parses and compiles it for every statement. Reshard's own sessions
/// (`reshard.applying = on`) pass: they keep the layout that does not serve current. On the new
/// layout a row trigger, whose `WHEN` clause the executor evaluates without calling any function
/// unless it is false, refuses a key the new map gives another shard (`FenceSQLState.misrouted`)
/// until `cleanup`.
///
/// **The declared epoch.** A session may say which epoch it routes by (`reshard.epoch`;
/// `ReshardRouter` sets it on its sessions after every map reload). A write from a session that
/// declares an epoch older than the fence's is refused (`FenceSQLState.staleEpoch`) on either
/// layout: on a database that is a shard of both layouts the layout check alone would let a
/// stale client write. A session that declares nothing is judged by the table's layout only.
///
/// A flag alone is not a barrier: a transaction that wrote before the flip and commits after the
/// drain would escape both layouts. `CutoverBarrier` flips it while holding `EXCLUSIVE` locks,
/// which wait for every writer in flight.
public enum Fence {
    /// Which layout takes the application's writes on a database, the low two bits of the state.
    public enum Serving: Int64, Sendable, CaseIterable {
        /// Neither: the barrier is held, the switch is under way.
        case none = 0
        /// The old layout (the sources) serves; the new layout's tables are fenced.
        case old = 1
        /// The new layout (the targets) serves; the old layout's tables are fenced.
        case new = 2
    }

    /// A fence state: the epoch applications must route by, and which layout serves it.
    public struct State: Sendable, Equatable, CustomStringConvertible {
        public var epoch: Int64
        public var serving: Serving
        public init(epoch: Int64, serving: Serving) {
            self.epoch = epoch
            self.serving = serving
        }
        public init(raw: Int64) {
            epoch = raw / 4
            serving = Serving(rawValue: raw % 4) ?? .none
        }
        public var raw: Int64 { epoch * 4 + serving.rawValue }
        public var description: String { "epoch \(epoch), \(serving) layout serves" }
    }

    /// The layout a table on some database belongs to.
    public enum Layout: String, Sendable {
        case old, new
    }

    /// The state installs start with: the old layout serves epoch 1 (the one `apply` publishes, `ShardMapStore.publishInitial`).
    public static let initial = State(epoch: 1, serving: .old)

    static func id(_ migration: String) -> String { fnv1a64Hex("fence\u{0}\(migration)") }
    /// The state sequence, schema-qualified; safe unquoted.
    public static func sequence(_ migration: String) -> String { "\(Shim.schema).fence_\(id(migration))" }
    static func fenceFunction(_ migration: String) -> String { "\(Shim.schema).fence_\(id(migration))" }
    static func misroutedFunction(_ migration: String) -> String { "\(Shim.schema).misrouted_\(id(migration))" }
    static func trigger(_ migration: String) -> String { "reshard_fence_\(id(migration))" }
    static func misroutedTrigger(_ migration: String) -> String { "reshard_misrouted_\(id(migration))" }

    /// The setting in which a session declares the epoch it routes by (`ReshardRouter` sets it).
    public static let declaredEpochSetting = FenceSQLState.declaredEpochSetting

    /// Creates the state sequence and the fence functions on one database. Idempotent; an existing
    /// state is kept.
    public static func installState(migration: String, on conn: PGConnection) throws {
        let sequence = sequence(migration)
        let literal = try conn.quoteLiteral(migration)
        // OPERATOR(...) binds as any other operator, left to right: every expression is parenthesised.
        let op = { (o: String) in "OPERATOR(pg_catalog.\(o))" }
        try conn.execute(
            """
            SET client_min_messages = warning; CREATE SCHEMA IF NOT EXISTS \(Shim.schema); RESET client_min_messages;
            CREATE SEQUENCE IF NOT EXISTS \(sequence) MINVALUE 0 START WITH \(initial.raw);
            """)
        // By OID: a name would be looked up as the writer, who has no USAGE on reshard's schema.
        let sequenceOID = try conn.query("SELECT $1::regclass::oid", [sequence]).get(0, 0, as: Int64.self)
        let body = """
            DECLARE
              state bigint := pg_catalog.pg_sequence_last_value(\(sequenceOID)::pg_catalog.oid);
              declared text := pg_catalog.current_setting('\(declaredEpochSetting)', true);
              serving bigint;
            BEGIN
              -- Every write that passes, in one expression: the table's layout serves, and the
              -- session declares no epoch or the current one (as ReshardRouter's sessions do).
              IF (state \(op("%")) 4) \(op("=")) (CASE WHEN TG_ARGV[0] \(op("=")) 'old' THEN \(Serving.old.rawValue) ELSE \(Serving.new.rawValue) END)
                 AND (declared IS NULL OR declared \(op("=")) (state \(op("/")) 4)::text) THEN
                RETURN NULL;
              END IF;
              state := coalesce(state, -1);
              serving := CASE WHEN TG_ARGV[0] \(op("=")) 'old' THEN \(Serving.old.rawValue) ELSE \(Serving.new.rawValue) END;
              IF state \(op("<")) 0 THEN  -- never called: pg_sequence_last_value has no value to give
                SELECT last_value INTO state FROM \(sequence);
              END IF;
              IF declared \(op("<>")) '' AND declared \(op("!~")) '^[0-9]{1,18}$' THEN
                RAISE EXCEPTION USING ERRCODE = '22023',
                  MESSAGE = pg_catalog.format('reshard: the setting \(declaredEpochSetting) is %L, not an epoch number', declared);
              END IF;
              IF (state \(op("%")) 4) \(op("=")) serving
                 AND (coalesce(declared, '') \(op("=")) '' OR declared::bigint \(op(">=")) (state \(op("/")) 4)) THEN
                RETURN NULL;
              END IF;
              -- reshard's own sessions: the catch-up, and reverse capture's proof (ReverseCapture.prove).
              IF pg_catalog.current_setting('reshard.applying', true) \(op("=")) 'on' OR pg_catalog.current_setting('reshard.probe', true) \(op("=")) 'on' THEN
                RETURN NULL;
              END IF;
              RAISE EXCEPTION USING ERRCODE = '\(FenceSQLState.staleEpoch)',
                MESSAGE = pg_catalog.format('reshard: writes to %I.%I are fenced: migration %s routes by epoch %s; reload the shard map',
                                            TG_TABLE_SCHEMA, TG_TABLE_NAME, \(literal), (state \(op("/")) 4)),
                HINT = 'reload the shard map (reshard map) and retry the write on the shard it names';
            END
            """
        let misroutedBody = """
            BEGIN
              IF pg_catalog.current_setting('reshard.applying', true) = 'on' THEN RETURN NEW; END IF;
              RAISE EXCEPTION USING ERRCODE = '\(FenceSQLState.misrouted)',
                MESSAGE = pg_catalog.format('reshard: this key of %I.%I belongs to another shard than %s in migration %s epoch %s; reload the shard map',
                                            TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_ARGV[0], \(literal), (SELECT last_value FROM \(sequence)) / 4);
            END
            """
        try conn.transaction { conn in
            try conn.execute(
                """
                SET LOCAL client_min_messages = warning;
                CREATE SCHEMA IF NOT EXISTS \(Shim.schema);
                CREATE SEQUENCE IF NOT EXISTS \(sequence) MINVALUE 0 START WITH \(initial.raw);
                GRANT SELECT ON SEQUENCE \(sequence) TO PUBLIC;
                """)
            // `pg_sequence_last_value` (the fence function's read) is NULL until the sequence is called.
            try conn.execute("SELECT pg_catalog.setval('\(sequence)', last_value, true) FROM \(sequence) WHERE NOT is_called")
            // Run as the writer, with the writer's settings: see the type's comment.
            var tag = "reshard"
            while body.contains("$\(tag)$") { tag += "_" }
            try conn.execute("CREATE OR REPLACE FUNCTION \(fenceFunction(migration))() RETURNS trigger LANGUAGE plpgsql AS $\(tag)$\n\(body)\n$\(tag)$")
            try conn.execute(Shim.captureFunction(misroutedFunction(migration), body: misroutedBody, pinningText: false))
        }
    }

    /// Installs the fence's triggers on `table` (named `name` on this database), of `layout`;
    /// on the new layout also the misrouted-key check for target index `target`. Idempotent.
    /// Retried under a short `lock_timeout` like the shim: CREATE TRIGGER waits for writers.
    public static func install(
        migration: String, table: Plan.Table, named name: QualifiedName, layout: Layout, function: ShardFunction,
        target: Int?, targetName: String?, on conn: PGConnection, attempts: Int = 30
    ) throws {
        let quoted = try conn.quote(name)
        var definitions = [
            (trigger(migration),
             "BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON \(quoted) FOR EACH STATEMENT EXECUTE FUNCTION \(fenceFunction(migration))('\(layout.rawValue)')")
        ]
        if layout == .new, let target, let targetName {
            let filter = function.sqlShardFilter(quotedColumn: "NEW.\(try conn.quoteIdentifier(table.key))", type: table.keyType, target: target)
            definitions.append(
                (misroutedTrigger(migration),
                 "BEFORE INSERT OR UPDATE OF \(try conn.quoteIdentifier(table.key)) ON \(quoted) FOR EACH ROW WHEN (NOT \(filter)) EXECUTE FUNCTION \(misroutedFunction(migration))(\(try conn.quoteLiteral(targetName)))"))
        }
        var attempt = 0
        while true {
            do {
                try conn.transaction { conn in
                    try conn.execute("SET LOCAL lock_timeout = '2s'")
                    for (trigger, definition) in definitions {
                        var enabled = try conn.query(
                            "SELECT tgenabled::text, tgqual IS NOT NULL FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname = $2",
                            [quoted, trigger])
                        // A fence trigger with a WHEN clause (a version that had one): compiled per statement, slower.
                        if enabled.rowCount == 1, enabled[0, 1] == "t", trigger == Self.trigger(migration) {
                            try conn.execute("DROP TRIGGER \(trigger) ON \(quoted)")
                            enabled = try conn.query("SELECT 1 WHERE false")
                        }
                        if enabled.rowCount == 0 { try conn.execute("CREATE TRIGGER \(trigger) \(definition)") }
                        if enabled.rowCount == 0 || enabled[0, 0] != "A" {
                            try conn.execute("ALTER TABLE \(quoted) ENABLE ALWAYS TRIGGER \(trigger)")
                        }
                    }
                }
                return
            } catch let error as PostgresError where error.sqlState == "55P03" && attempt < attempts {
                attempt += 1
                usleep(UInt32(min(200_000 * attempt, 2_000_000)))
            }
        }
    }

    /// Installs the fence on every migrated table of every source and target of `plan` (the
    /// copies built on shared databases too, once they exist). `connect` gives a connection to a
    /// shard by name. Without `misroutedChecks` the targets get only the statement fence: `apply`
    /// adds the row-level misrouted-key check once the backfill is done, because any BEFORE ROW
    /// trigger, even one whose WHEN is false for every row, makes `COPY FROM` insert row by row
    /// instead of in multi-row batches (about 20% slower). Until the new layout serves, the
    /// statement fence refuses every write but reshard's own, which the row check lets pass anyway.
    public static func installAll(plan: Plan, misroutedChecks: Bool = true, connect: (String) throws -> PGConnection) throws {
        var done: Set<String> = []
        for source in plan.sources {
            let conn = try connect(source.name)
            try installState(migration: plan.migration, on: conn)
            for table in plan.tables {
                try install(migration: plan.migration, table: table, named: table.name, layout: .old, function: plan.function,
                            target: nil, targetName: nil, on: conn)
            }
            done.insert(source.name)
        }
        for (index, target) in plan.targets.enumerated() {
            let conn = try connect(target.name)
            if !done.contains(target.name) { try installState(migration: plan.migration, on: conn) }
            for table in plan.tables {
                let name = plan.builtName(of: table, on: target)
                // On a shared database the copy is built beside the live table; until it is, there is nothing to fence.
                let built = try !target.isShared || TargetTables.exists(table, named: name, on: conn)
                guard built else { continue }
                try install(migration: plan.migration, table: table, named: name, layout: .new, function: plan.function,
                            target: misroutedChecks ? index : nil, targetName: target.name, on: conn)
            }
        }
    }

    /// Removes the fence from every source and target of `plan`: each database once, with the
    /// triggers of every name its tables have there (live, built, kept for rollback). Idempotent.
    public static func removeAll(plan: Plan, connect: (String) throws -> PGConnection) throws {
        var names: [String: [QualifiedName]] = [:]
        var order: [String] = []
        func add(_ shard: String, _ more: [QualifiedName]) {
            if names[shard] == nil { order.append(shard) }
            names[shard, default: []] += more
        }
        for source in plan.sources { add(source.name, plan.tables.map(\.name)) }
        for target in plan.targets {
            // A shared target is its source's database: one removal there covers both roles.
            let shard = target.sameAsSource ?? target.name
            add(shard, plan.tables.flatMap { [plan.builtName(of: $0, on: target)] + (target.isShared ? [plan.oldName(of: $0)] : []) })
        }
        for shard in order { try remove(migration: plan.migration, names: names[shard]!, on: try connect(shard)) }
    }

    /// The state on one database; nil when the fence is not installed there.
    public static func state(migration: String, on conn: PGConnection) throws -> State? {
        guard try conn.query("SELECT to_regclass($1) IS NOT NULL", [sequence(migration)]).get(0, 0, as: Bool.self) else { return nil }
        return State(raw: try conn.query("SELECT last_value FROM \(sequence(migration))").get(0, 0, as: Int64.self))
    }

    /// Sets the state on one database. Takes effect at once, for every session, whatever its
    /// snapshot, and is not undone by a rollback of the caller's transaction.
    public static func set(_ state: State, migration: String, on conn: PGConnection) throws {
        try conn.query("SELECT setval($1::regclass, $2, true)", [sequence(migration), state.raw])
    }

    /// Removes the fence's triggers from `tables` (under each of `names`) and its functions and
    /// state from the database. Idempotent.
    public static func remove(migration: String, names: [QualifiedName], on conn: PGConnection) throws {
        try conn.transaction { conn in
            try conn.execute("SET LOCAL lock_timeout = '5s'; SET LOCAL client_min_messages = warning")
            for name in names where try conn.query("SELECT to_regclass($1) IS NOT NULL", [try conn.quote(name)]).get(0, 0, as: Bool.self) {
                let quoted = try conn.quote(name)
                try conn.execute("DROP TRIGGER IF EXISTS \(trigger(migration)) ON \(quoted); DROP TRIGGER IF EXISTS \(misroutedTrigger(migration)) ON \(quoted)")
            }
            guard try conn.query("SELECT to_regnamespace($1) IS NOT NULL", [Shim.schema]).get(0, 0, as: Bool.self) else { return }
            try conn.execute(
                "DROP FUNCTION IF EXISTS \(fenceFunction(migration))(); DROP FUNCTION IF EXISTS \(misroutedFunction(migration))(); DROP SEQUENCE IF EXISTS \(sequence(migration))")
        }
    }
}
