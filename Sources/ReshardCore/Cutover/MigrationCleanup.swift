import Foundation
import PostgresClient

/// `reshard cleanup`: after cutover, removes what the old layout and reshard keep on the shards,
/// and marks the migration complete (`cleaned-up`, after which rollback is no longer possible).
///
/// Removed, one object at a time with a pause between (so autovacuum and replicas keep up, and no
/// lock is queued for long): the reverse shim and its changelogs on the targets, the shim and its
/// changelogs on the sources, the fence (and its misrouted-key check) everywhere, the tables swapped
/// out on shared databases, and the moved tables on sources that are not targets, these only with
/// `--drop-sources` (the application may still read them). Each removal is idempotent, so a
/// cleanup interrupted at any point is run again; the phase is recorded only when all are done.
public enum MigrationCleanup {
    public struct Report: Sendable, Codable {
        public var migration: String
        public var done: [String]
        public var keptSources: [String]
    }

    /// What cleanup removes (for `status` and the dry run), one line per kind of object.
    public static func willRemove(_ plan: Plan, dropSources: Bool) -> [String] {
        let sources = plan.sources.map(\.name).joined(separator: ", ")
        let targets = plan.targets.map(\.name).joined(separator: ", ")
        var lines = [
            "the reverse capture (triggers, functions, changelogs) on \(targets)",
            "the shim (triggers, functions, changelogs) on \(sources)",
            "the write fence on \(sources), \(targets)",
        ]
        for target in plan.sharedTargets {
            let tables = plan.tables.map { plan.oldName(of: $0).description }.joined(separator: ", ")
            lines.append("the old layout's tables \(tables) swapped out on \(target.name) (the database of \(target.sameAsSource ?? "")), "
                + "then the schemas \(Plan.buildSchema) and \(Plan.oldSchema) there once empty")
        }
        let pureSources = plan.sources.filter { s in !plan.targets.contains { $0.sameAsSource == s.name } }.map(\.name)
        if !pureSources.isEmpty {
            let tables = plan.tables.map(\.name.description).joined(separator: ", ")
            lines.append(dropSources
                ? "the tables \(tables) on \(pureSources.joined(separator: ", "))"
                : "the tables \(tables) on \(pureSources.joined(separator: ", ")) only with --drop-sources")
        }
        return lines
    }

    /// - Parameters:
    ///   - after: refuse unless the cutover finished at least this many seconds ago.
    ///   - pause: seconds between two removals.
    public static func run(
        migration: String, metadata: ConnectionString, shards: [String: ConnectionString], after: Double?, dropSources: Bool,
        pause: Double = 0.05
    ) throws -> Report {
        let meta = try PGConnection.connect(metadata, applicationName: "reshard cleanup")
        guard let recorded = try PhaseStore.read(migration, on: meta) else {
            throw ReshardError.refused("migration \(migration) is not registered; nothing to clean up")
        }
        let plan = try MigrationStatus.registeredPlan(migration: migration, on: meta)
        if let missing = (plan.sources + plan.targets).first(where: { shards[$0.name] == nil }) {
            throw ReshardError.badInput("no connection string for shard \(missing.name) of migration \(migration) (is this its config?)")
        }
        guard recorded == .cutOver || recorded == .cleanedUp else {
            throw ReshardError.refused("migration \(migration) is in phase \(recorded.rawValue): cleanup is possible only after cutover")
        }
        _ = try MetadataSchema.current.apply(to: meta)
        do { try ApplyLease.acquire(migration, on: meta, waitForDeadLocalHolder: 5) } catch let error as ReshardError where error.code == .refused {
            throw ReshardError.refused("\(error.message); cleanup waits for it to end")
        }
        defer { try? MetadataLock.apply.unlock(migration, on: meta) }
        if let after, recorded == .cutOver {
            let age = try meta.query(
                """
                SELECT extract(epoch FROM now() - max(finished_at))::float8 FROM reshard.switches
                WHERE migration = $1 AND outcome = 'done' AND direction = 'cutover'
                """, [migration]).get(0, 0, as: Double?.self) ?? 0
            if age < after {
                throw ReshardError.refused(String(
                    format: "migration %@: the cutover finished %.0f s ago; --after asks for %.0f s (rollback stays possible until cleanup)",
                    migration, age, after))
            }
        }
        var connections: [String: PGConnection] = [:]
        func connect(_ shard: String) throws -> PGConnection {
            if let conn = connections[shard] { return conn }
            let conn = try PGConnection.connect(shards[shard]!, applicationName: "reshard cleanup")
            connections[shard] = conn
            return conn
        }
        var done: [String] = []
        func step(_ what: String, _ body: () throws -> Void) throws {
            try body()
            done.append(what)
            try EventLog.record(migration: migration, "cleanup: removed \(what)", on: meta)
            usleep(useconds_t(pause * 1_000_000))
        }
        if ReverseCapture.missing(plan) == nil {
            try step("the reverse capture on \(plan.targets.map(\.name).joined(separator: ", "))") {
                try ReverseCapture.remove(plan, connect: connect)
            }
        }
        // On shared databases the old layout's tables, swapped out at cutover, carry the shim and
        // the fence: dropped first (a short ACCESS EXCLUSIVE on tables nobody reads), so the
        // functions their triggers call can go after. One statement per database: the foreign
        // keys between them (the application's own) would refuse dropping one before the others.
        for target in plan.sharedTargets {
            let old = plan.tables.map { plan.oldName(of: $0) }
            try step("\(old.map(\.description).joined(separator: ", ")) on \(target.name)") {
                let conn = try connect(target.name)
                try conn.transaction { conn in
                    try conn.execute("SET LOCAL lock_timeout = '5s'; SET LOCAL client_min_messages = warning")
                    try conn.execute("DROP TABLE IF EXISTS \(try old.map { try conn.quote($0) }.joined(separator: ", "))")
                }
            }
        }
        // The fence first goes with the shim's schema: Shim.remove drops it once it is empty.
        try step("the write fence on every shard") { try Fence.removeAll(plan: plan, connect: connect) }
        for source in plan.sources {
            try step("the shim on \(source.name)") { try Shim.remove(migration: migration, tables: plan.tables, on: try connect(source.name)) }
        }
        for target in plan.targets {
            // Shim.remove drops reshard_shim once empty; the reverse capture's removal did it on targets.
            try step("reshard's schemas on \(target.name)") {
                try Shim.remove(migration: plan.reversed().migration, tables: [], on: try connect(target.name))
            }
        }
        for target in plan.sharedTargets {
            try step("the schemas \(Plan.buildSchema) and \(Plan.oldSchema) on \(target.name) (those empty)") {
                try dropEmptySchemas(on: try connect(target.name))
            }
        }
        var kept: [String] = []
        for source in plan.sources where !plan.targets.contains(where: { $0.sameAsSource == source.name }) {
            guard dropSources else {
                kept.append("\(source.name) keeps \(plan.tables.map(\.name.description).joined(separator: ", ")) (give --drop-sources to drop them)")
                continue
            }
            // Together, like the swapped-out tables: foreign keys between them would refuse one alone.
            try step("\(plan.tables.map(\.name.description).joined(separator: ", ")) on \(source.name)") {
                let conn = try connect(source.name)
                try conn.transaction { conn in
                    try conn.execute("SET LOCAL lock_timeout = '5s'")
                    try conn.execute("DROP TABLE IF EXISTS \(try plan.tables.map { try conn.quote($0.name) }.joined(separator: ", "))")
                }
            }
        }
        if recorded == .cutOver {
            var machine = MigrationStateMachine(migration: migration, phase: recorded)
            let transition = try machine.cleanup()
            try meta.transaction { conn in
                try PhaseStore.write(transition, migration: migration, on: conn)
                try EventLog.record(migration: migration, "cleaned up: the migration is complete", on: conn)
            }
        }
        return Report(migration: migration, done: done, keptSources: kept)
    }

    /// Drops each of `schemas` (default `reshard_build` and `reshard_old`) when nothing is left in
    /// it (another migration's tables may be). Idempotent. Also abort's (after a rollback a shared
    /// database may have an empty `reshard_old`).
    static func dropEmptySchemas(_ schemas: [String] = [Plan.buildSchema, Plan.oldSchema], on conn: PGConnection) throws {
        for schema in schemas {
            try conn.query(
                """
                DO $$ BEGIN
                  IF to_regnamespace('\(schema)') IS NOT NULL
                     AND NOT EXISTS (SELECT 1 FROM pg_class WHERE relnamespace = to_regnamespace('\(schema)')) THEN
                    EXECUTE 'DROP SCHEMA \(schema)';
                  END IF;
                END $$
                """)
        }
    }
}
