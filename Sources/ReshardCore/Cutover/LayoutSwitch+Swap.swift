import Foundation
import PostgresClient

/// The swap step on databases that are both a source and a target (`SwapSQL`, `TableLocations`):
/// the new layout's tables, built in `reshard_build`, take the live names at cutover and the old
/// ones go to `reshard_old`; rollback and an undone cutover swap them back.
///
/// ONE transaction per shared database, so the application never sees a mix of layouts there,
/// the databases in parallel, each under a `lock_timeout` of what is left of `--max-stall`.
/// `SET SCHEMA` takes ACCESS EXCLUSIVE, which also waits for readers and for autovacuum: the
/// fence's barrier has already waited out the writers, and an autovacuum worker on those tables
/// is cancelled right before (it would hold the swap up until the deadlock check cancels it,
/// a second later by default). Whether a database is swapped is read from its catalog inside the
/// transaction, never taken from what a coordinator remembers, so a swap run again (a coordinator
/// killed after the commit, an undo run twice) does nothing.
extension LayoutSwitch {
    /// Brings every shared database of `plan` to `swappedIn` (true: the new layout has the live
    /// names). Returns the targets it swapped; throws naming the shard that could not within
    /// `lockTimeout` seconds (the others may have swapped: an undo reads the catalog).
    static func swapShared(
        _ plan: Plan, swappedIn: Bool, lockTimeout: Double, connect: (String) throws -> PGConnection
    ) throws -> [String] {
        let shared = plan.sharedTargets
        guard !shared.isEmpty, !plan.tables.isEmpty else { return [] }
        let milliseconds = max(1, Int(lockTimeout * 1000))
        let sessions = try shared.map { (shard: $0.name, conn: try connect($0.name)) }
        let swapped = ShardNames()
        try CutoverBarrier.inParallel(sessions, thread: "reshard swap") { shard, conn in
            if try swap(plan, swappedIn: swappedIn, lockTimeoutMilliseconds: milliseconds, on: conn) { swapped.add(shard) }
        } failure: { error, shard in
            if let error = error as? ReshardError { return error }
            let why = (error as? PostgresError)?.sqlState == "55P03"
                ? "the tables were not free to swap within \(milliseconds) ms (a reader holds them)"
                : (error as? PostgresError)?.summary ?? "\(error)"
            return ReshardError.failed(why, shard: shard)
        }
        return swapped.shards.sorted()
    }

    /// The swap on one database, in one transaction. Returns false when it was done already.
    static func swap(_ plan: Plan, swappedIn: Bool, lockTimeoutMilliseconds: Int, on conn: PGConnection) throws -> Bool {
        let waiting = swappedIn ? Plan.buildSchema : Plan.oldSchema
        guard try TableLocations.isSwapped(plan, on: conn) != swappedIn else { return false }
        // Outside the transaction (an error there would end it): cancelling needs rights a role may lack.
        let relations = plan.tables.flatMap { [SQLText.name($0.name), SQLText.name(QualifiedName(schema: waiting, $0.name.name))] }
        _ = try? conn.query(
            """
            SELECT pg_cancel_backend(a.pid) FROM pg_stat_activity a
            WHERE a.backend_type = 'autovacuum worker'
              AND a.pid IN (SELECT l.pid FROM pg_locks l
                            WHERE l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
                              AND l.relation = ANY (SELECT to_regclass(n)::oid FROM unnest($1::text[]) n))
            """, [relations])
        return try conn.transaction { conn in
            try conn.execute("SET LOCAL lock_timeout = '\(lockTimeoutMilliseconds)ms'; SET LOCAL client_min_messages = warning")
            // Under the transaction's locks-to-be: read again, a concurrent run may have swapped it.
            guard try TableLocations.isSwapped(plan, on: conn) != swappedIn else { return false }
            var tables: [SwapSQL.Table] = []
            for table in plan.tables {
                let schema = try conn.query(SwapSQL.liveSchemaQuery, [SQLText.name(table.name)])
                guard schema.rowCount == 1, let name = schema[0, 0] else {
                    throw ReshardError.failed("table \(table.name) is not found to swap")
                }
                let live = QualifiedName(schema: name, table.name.name)
                let owned = try conn.query(SwapSQL.ownedSequencesQuery, [SQLText.name(live)])
                tables.append(SwapSQL.Table(live: live, ownedSequences: (0..<owned.rowCount).map {
                    (sequence: QualifiedName(schema: owned[$0, 0]!, owned[$0, 1]!), column: owned[$0, 2]!)
                }))
            }
            for statement in swappedIn ? SwapSQL.swapIn(tables) : SwapSQL.swapBack(tables) { try conn.execute(statement) }
            return true
        }
    }

    /// Shard names noted from several threads (the swapped ones, those in plain sessions).
    final class ShardNames: @unchecked Sendable {
        private let lock = NSLock()
        private var names: [String] = []
        func add(_ shard: String) { lock.withLock { names.append(shard) } }
        var shards: [String] { lock.withLock { names } }
    }
}
