import PostgresClient

/// `reshard abort`: removes the shim and changelog from the sources and marks the migration
/// aborted. Refuses while a coordinator holds the lease. Targets keep what was copied unless
/// asked to drop it (only on targets that are not also sources: rows there cannot be told apart).
public enum MigrationAbort {
    public static func run(_ target: MigrationTarget, dropTargetData: Bool) throws -> [String] {
        let plan = target.plan
        let meta = try PGConnection.connect(target.metadata, applicationName: "reshard abort")
        _ = try MetadataSchema.current.apply(to: meta)
        guard try MetadataLock.apply.tryLock(plan.migration, on: meta) else {
            throw ReshardError.refused("migration \(plan.migration) is being applied right now; stop that coordinator first")
        }
        defer { try? MetadataLock.apply.unlock(plan.migration, on: meta) }
        // Verify's drainer may be applying changes from the log about to be removed.
        guard try MetadataLock.catchUp.lock(plan.migration, on: meta, waitingUpTo: 30, waiting: {}) else {
            throw ReshardError.refused("migration \(plan.migration): 'reshard verify' is applying changes; try again")
        }
        defer { try? MetadataLock.catchUp.unlock(plan.migration, on: meta) }
        guard let phase = try PhaseStore.read(plan.migration, on: meta) else {
            throw ReshardError.refused("migration \(plan.migration) is not registered; nothing to abort")
        }
        // Refused before anything on a shard is touched.
        var machine = MigrationStateMachine(migration: plan.migration, phase: phase)
        let transition = try machine.abort()
        var done: [String] = []
        for source in plan.sources {
            let conn = try PGConnection.connect(target.shards[source.name]!, applicationName: "reshard abort")
            try Shim.remove(migration: plan.migration, tables: plan.tables, on: conn)
            done.append("removed the shim from \(source.name)")
        }
        if dropTargetData {
            for shard in plan.targets where shard.sameAsSource == nil {
                let conn = try PGConnection.connect(target.shards[shard.name]!, applicationName: "reshard abort")
                for table in plan.tables where try TargetTables.exists(table, on: conn) {
                    try conn.execute("TRUNCATE \(try conn.quote(table.name))")
                    done.append("emptied \(table.name) on \(shard.name)")
                }
            }
        }
        try meta.transaction { conn in
            try PhaseStore.write(transition, migration: plan.migration, on: conn)
            try conn.query("INSERT INTO reshard.events (migration, level, message) VALUES ($1, 'info', $2)",
                           [plan.migration, "aborted: " + done.joined(separator: "; ")])
        }
        return done
    }
}
