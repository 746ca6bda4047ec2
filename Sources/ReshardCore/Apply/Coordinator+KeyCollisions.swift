import PostgresClient

extension Coordinator {
    /// `apply` checks the keys again before it copies anything (`KeyCollisions`, every key, the
    /// message `plan` gives), so a plan file made before a colliding row was written does not
    /// let it through; refused (exit 2) with nothing changed on any shard. Once the backfill has
    /// begun, `KeyCollisionGuard` watches the copy and the catch-up instead. Skipped when the
    /// planner of this very run has just checked them (`ApplyOptions.keysJustChecked`).
    /// `connectSources` opens a session per source, only when the keys are checked (a session
    /// nobody queries costs a connection's handshake before the copy).
    func refuseCollidingKeys(_ connectSources: () throws -> [PGConnection]) throws {
        guard plan.sources.count > 1, !options.keysJustChecked else { return }
        let begun = plan.tables.contains { table in
            table.slices.contains { slice in
                let copied = state.slice(.init(table: table.name.description, source: slice.source, target: slice.target))
                return !slice.staysInPlace && (copied.copied > 0 || copied.lastKey != nil || copied.done)
            }
        }
        guard !begun else { return }
        let sources = try connectSources()
        var problems: [String] = []
        for table in plan.tables {
            problems += try KeyCollisions.problems(
                table, function: plan.function, sources: Array(zip(plan.sources.map(\.name), sources)), targets: plan.targets.map(\.name))
        }
        guard problems.isEmpty else { throw ReshardError.refused(problems.joined(separator: "\n")) }
    }
}
