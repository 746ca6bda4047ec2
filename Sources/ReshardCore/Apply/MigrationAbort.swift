import PostgresClient

/// `reshard abort`: removes the shim and changelog from the sources and marks the migration
/// aborted. Refuses while a coordinator holds the lease. Targets keep what was copied unless
/// asked to drop it (`--drop-target-data`): a pure target's tables are emptied; on a target that is
/// also a source's database the copies were built apart, in `reshard_build`, and those tables are
/// dropped. The live tables there are never touched.
///
/// It works from the plan the migration was registered with, not a new plan: the planner refuses
/// targets that hold rows, which after a first abort is exactly what `--drop-target-data` is
/// for, so aborting again is harmless and finishes the job.
public enum MigrationAbort {
    /// What abort did, and what it left behind on purpose.
    public struct Report: Sendable, Codable {
        public var migration: String
        public var done: [String]
        /// One line per target that is also a source's database whose built tables were kept.
        public var leftInPlace: [String]
    }

    /// - Parameter shards: connection strings by shard name (from the config or plan file).
    public static func run(
        migration: String, metadata: ConnectionString, shards: [String: ConnectionString], dropTargetData: Bool
    ) throws -> Report {
        let meta = try PGConnection.connect(metadata, applicationName: "reshard abort")
        // A mistyped name is refused before anything changes, the metadata schema included.
        guard try PhaseStore.read(migration, on: meta) != nil else {
            throw ReshardError.refused("migration \(migration) is not registered; nothing to abort")
        }
        let plan = try MigrationStatus.registeredPlan(migration: migration, on: meta)
        if let missing = (plan.sources + plan.targets).first(where: { shards[$0.name] == nil }) {
            throw ReshardError.badInput("no connection string for shard \(missing.name) of migration \(migration) (is this its config?)")
        }
        func connect(_ shard: String) throws -> PGConnection {
            try PGConnection.connect(shards[shard]!, applicationName: "reshard abort")
        }
        _ = try MetadataSchema.current.apply(to: meta)
        guard try MetadataLock.apply.tryLock(migration, on: meta) else {
            throw ReshardError.refused("migration \(migration) is being applied right now; stop that coordinator first")
        }
        defer { try? MetadataLock.apply.unlock(migration, on: meta) }
        // Verify's drainer may be applying changes from the log about to be removed.
        guard try MetadataLock.catchUp.lock(migration, on: meta, waitingUpTo: 30, waiting: {}) else {
            throw ReshardError.refused("migration \(migration): 'reshard verify' is applying changes; try again")
        }
        defer { try? MetadataLock.catchUp.unlock(migration, on: meta) }
        guard let phase = try PhaseStore.read(migration, on: meta) else {
            throw ReshardError.refused("migration \(migration) is not registered; nothing to abort")
        }
        // Refused before anything on a shard is touched. Already aborted: the phase stays, the
        // clean-up runs again (it is idempotent), with --drop-target-data if asked this time.
        var machine = MigrationStateMachine(migration: migration, phase: phase)
        let transition = phase == .aborted ? nil : try machine.abort()
        var done: [String] = []
        try Fence.removeAll(plan: plan, connect: connect)
        // After a rollback (or an undone cutover) the targets carry the reverse capture too.
        if ReverseCapture.missing(plan) == nil { try ReverseCapture.remove(plan, connect: connect) }
        for source in plan.sources {
            try Shim.remove(migration: migration, tables: plan.tables, on: try connect(source.name))
            done.append("removed the shim from \(source.name)")
        }
        var leftInPlace: [String] = []
        for shard in plan.targets where dropTargetData || shard.isShared {
            let conn = try connect(shard.name)
            let built = try plan.tables.filter { try TargetTables.exists($0, named: plan.builtName(of: $0, on: shard), on: conn) }
            if shard.isShared {
                if dropTargetData {
                    for table in built {
                        let name = plan.builtName(of: table, on: shard)
                        try conn.execute("DROP TABLE IF EXISTS \(try conn.quote(name))")
                        done.append("dropped \(name) on \(shard.name)")
                    }
                    try MigrationCleanup.dropEmptySchemas(on: conn)
                } else if !built.isEmpty {
                    leftInPlace.append(
                        "copies for \(shard.name) (the database of source \(shard.sameAsSource!)) are kept in \(Plan.buildSchema), "
                            + "apart from its live tables; abort --drop-target-data drops them")
                }
            } else if dropTargetData {
                for table in built {
                    try conn.execute("TRUNCATE \(try conn.quote(table.name))")
                    done.append("emptied \(table.name) on \(shard.name)")
                }
            }
        }
        try meta.transaction { conn in
            if let transition { try PhaseStore.write(transition, migration: migration, on: conn) }
            try EventLog.record(migration: migration, "aborted: " + (done + leftInPlace).joined(separator: "; "), on: conn)
        }
        return Report(migration: migration, done: done, leftInPlace: leftInPlace)
    }
}
