import Foundation
import PostgresClient

/// The write fence (`Fence`) one database at a time, on a session the caller already holds, so
/// `prepare` and `finishTargets` install it inside their per-database parallel jobs: what
/// `Fence.installAll` does, database after database on fresh sessions of its own, cost three
/// connections and three databases' DDL one after another before the copy (and again after it).
/// The same calls with the same arguments as `Fence.installAll`, so the state they leave is the same.
extension Coordinator {
    /// A source's part: the fence's state and functions, and the old layout's statement trigger
    /// on every migrated table there.
    func installSourceFence(_ source: Plan.Shard, on conn: PGConnection) throws {
        try Fence.installState(migration: plan.migration, on: conn)
        for table in plan.tables {
            try Fence.install(
                migration: plan.migration, table: table, named: table.name, layout: .old, function: plan.function,
                target: nil, targetName: nil, on: conn)
        }
    }

    /// A target's part: the new layout's triggers on the tables built there (on a shared
    /// database, only those already built), with the misrouted-key row check when
    /// `misroutedChecks`. With `installingState` also the fence's state and functions, which a
    /// shared target's source already installed in the same database.
    func installTargetFence(_ index: Int, misroutedChecks: Bool, installingState: Bool, on conn: PGConnection) throws {
        let target = plan.targets[index]
        if installingState { try Fence.installState(migration: plan.migration, on: conn) }
        for table in plan.tables {
            let name = plan.builtName(of: table, on: target)
            // On a shared database the copy is built beside the live table; until it is, there is nothing to fence.
            guard try !target.isShared || TargetTables.exists(table, named: name, on: conn) else { continue }
            try Fence.install(
                migration: plan.migration, table: table, named: name, layout: .new, function: plan.function,
                target: misroutedChecks ? index : nil, targetName: target.name, on: conn)
        }
    }

    /// Whether `Fence.installAll` would install the state on `target` again: it does so once per
    /// database name it has not yet done among the sources.
    func targetNeedsFenceState(_ target: Plan.Shard) -> Bool { !plan.sources.contains { $0.name == target.name } }
}
