import PostgresClient

/// `reshard abort`: removes the shim and changelog from the sources and marks the migration
/// aborted. Refuses while a coordinator holds the lease. Targets keep what was copied unless
/// asked to drop it. On a target that is also a source the copies can only be told from the
/// source's own rows by today's placement (`source.function`): with it they are deleted, without
/// it they stay and abort says so.
///
/// It works from the plan the migration was registered with, not a new plan: the planner refuses
/// targets that hold rows, which after a first abort is exactly what `--drop-target-data` is
/// for, so aborting again is harmless and finishes the job.
public enum MigrationAbort {
    /// What abort did, and what it left behind on purpose.
    public struct Report: Sendable, Codable {
        public var migration: String
        public var done: [String]
        /// One line per target that is also a source and kept copied rows.
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
        for source in plan.sources {
            try Shim.remove(migration: migration, tables: plan.tables, on: try connect(source.name))
            done.append("removed the shim from \(source.name)")
        }
        if dropTargetData {
            for shard in plan.targets where shard.sameAsSource == nil {
                let conn = try connect(shard.name)
                for table in plan.tables where try TargetTables.exists(table, on: conn) {
                    try conn.execute("TRUNCATE \(try conn.quote(table.name))")
                    done.append("emptied \(table.name) on \(shard.name)")
                }
            }
        }
        let copied = try meta.query(
            """
            SELECT target FROM reshard.slices WHERE migration = $1 AND NOT stays_in_place
            GROUP BY target HAVING bool_or(rows_copied > 0 OR started_at IS NOT NULL) ORDER BY target
            """, [migration])
        let receivedRows = Set((0..<copied.rowCount).compactMap { copied[$0, 0] })
        var leftInPlace: [String] = []
        for shard in plan.targets {
            guard let source = shard.sameAsSource, receivedRows.contains(shard.name) else { continue }
            if dropTargetData, let function = plan.sourceFunction, let index = plan.sources.firstIndex(where: { $0.name == source }),
                plan.tables.allSatisfy({ $0.sourceKey != nil && $0.sourceKeyType != nil })
            {
                let conn = try connect(shard.name)
                for table in plan.tables {
                    let own = function.sqlShardFilter(
                        quotedColumn: try conn.quoteIdentifier(table.sourceKey!), type: table.sourceKeyType!, target: index)
                    let deleted = try conn.transaction { conn in
                        try conn.execute("SET LOCAL lock_timeout = '5s'")
                        return try conn.execute("DELETE FROM \(try conn.quote(table.name)) WHERE NOT \(own)").affectedRows
                    }
                    done.append("deleted \(deleted) copied row(s) of \(table.name) from \(shard.name): source.function places them on another source")
                }
            } else {
                leftInPlace.append(
                    "rows copied into \(shard.name) (the database of source \(source)) were left in place: they cannot be told from its own rows"
                        + (plan.sourceFunction == nil ? " (source.function would tell them apart)" : ""))
            }
        }
        try meta.transaction { conn in
            if let transition { try PhaseStore.write(transition, migration: migration, on: conn) }
            try EventLog.record(migration: migration, "aborted: " + (done + leftInPlace).joined(separator: "; "), on: conn)
        }
        return Report(migration: migration, done: done, leftInPlace: leftInPlace)
    }
}
