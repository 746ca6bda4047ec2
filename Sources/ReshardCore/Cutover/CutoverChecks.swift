import Foundation
import PostgresClient

/// What must hold before a switch changes anything; each failure refuses it (exit 2) with one
/// line naming the shard or table. `--dry-run` runs exactly these.
enum CutoverChecks {
    /// Returns what was checked, one line each, for the dry run; throws `refused` on the first problem.
    static func run(
        _ direction: CutoverStateMachine.Direction, plan: Plan, meta: PGConnection, options: SwitchOptions,
        places: SwitchPlaces, connect: (String) throws -> PGConnection
    ) throws -> [String] {
        let m = plan.migration
        var checked: [String] = []
        func refuse(_ why: String, shard: String? = nil) -> ReshardError { .refused("migration \(m): \(direction.rawValue) refused: \(why)", shard: shard) }

        let pending = try meta.query("SELECT table_name, source, target FROM reshard.slices WHERE migration = $1 AND NOT done ORDER BY 1, 2, 3 LIMIT 1", [m])
        if pending.rowCount > 0 {
            throw refuse("slice \(pending[0, 0] ?? "") \(pending[0, 1] ?? "") -> \(pending[0, 2] ?? "") is not copied yet")
        }
        checked.append("every slice is copied")

        if direction == .cutover {
            if let missing = ReverseCapture.missing(plan) {
                throw refuse("reverse capture (which keeps the sources current for rollback) needs the old layout: \(missing)")
            }
            checked.append("reverse capture can place rows on the old layout (source.function)")
            if options.skipVerify {
                checked.append("verify skipped (--skip-verify)")
            } else {
                let verified = try meta.query(
                    """
                    SELECT t.name, v.outcome, v.finished_at >= (SELECT max(updated_at) FROM reshard.slices WHERE migration = $1)
                    FROM unnest($2::text[]) t(name) LEFT JOIN reshard.verify_tables v ON v.migration = $1 AND v.table_name = t.name
                    """, [m, plan.tables.map(\.name.description)])
                for row in 0..<verified.rowCount {
                    let table = verified[row, 0] ?? ""
                    guard verified[row, 1] == "identical" else {
                        throw refuse("table \(table) has no clean verify (\(verified[row, 1] ?? "never verified")); run 'reshard verify' or give --skip-verify")
                    }
                    guard verified[row, 2] == "t" else {
                        throw refuse("table \(table) was verified before its backfill ended; run 'reshard verify' again or give --skip-verify")
                    }
                }
                checked.append("verify found every table identical after the backfill")
            }
        }

        for shard in places.databases {
            let conn = try connect(shard)
            guard try Fence.state(migration: m, on: conn) != nil else {
                throw refuse("the write fence is not installed on \(shard) (run 'reshard apply' again: it installs it)", shard: shard)
            }
        }
        for place in places.from + places.to {
            let conn = try connect(place.shard)
            for name in place.names {
                let fenced = try conn.query("SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass($1) AND tgname = $2",
                                            [try conn.quote(name), Fence.trigger(m)]).get(0, 0, as: Int.self)
                guard fenced == 1 else {
                    throw refuse("the write fence is not installed on \(name) on \(place.shard) (run 'reshard apply' again: it installs it)", shard: place.shard)
                }
            }
        }
        checked.append("the write fence is installed on every table of \(places.databases.count) database(s)")

        // A shared database swaps its live tables: whatever references them by OID (a view, a rule,
        // another table's foreign key), created after `plan` refused such things, would follow the
        // swapped-out table (the application reading stale rows, cleanup's DROP failing).
        for target in plan.sharedTargets {
            let conn = try connect(target.name)
            let moving = try plan.tables.compactMap { try conn.query("SELECT to_regclass($1)::oid::text", [try conn.quote($0.name)])[0, 0] }
            for table in plan.tables {
                let quoted = try conn.quote(table.name)
                if let dependent = try Planner.dependents(of: quoted, on: conn).first {
                    throw refuse("\(dependent.kind) \(dependent.name) on \(target.name) reads table \(table.name), which the swap moves: it would go on reading the swapped-out table (drop it, and create it again after the \(direction.rawValue))", shard: target.name)
                }
                if let key = try Planner.outsideForeignKeys(of: quoted, moving: moving, on: conn).first(where: \.inbound) {
                    throw refuse("foreign key \(key.name) from \(key.outside), a table outside the migration, on \(target.name) references table \(table.name), which the swap moves: it would go on referencing the swapped-out table (drop it, also with --ignore-foreign-keys-outside)", shard: target.name)
                }
            }
        }
        if !plan.sharedTargets.isEmpty { checked.append("nothing outside the migration references its tables on \(plan.sharedTargets.map(\.name).joined(separator: ", "))") }

        for place in places.from {
            let conn = try connect(place.shard)
            let old = try conn.query(
                """
                SELECT pid, round(extract(epoch FROM now() - xact_start))::int FROM pg_stat_activity
                WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'
                  AND xact_start < now() - make_interval(secs => $1) ORDER BY xact_start LIMIT 1
                """, [options.maxTransactionAgeSeconds])
            if old.rowCount > 0 {
                throw refuse("a transaction on \(place.shard) is open for \(old[0, 1] ?? "?") s (pid \(old[0, 0] ?? "?")), longer than --max-transaction-age \(Int(options.maxTransactionAgeSeconds)) s",
                             shard: place.shard)
            }
        }
        checked.append("no transaction on the serving layout is older than \(Int(options.maxTransactionAgeSeconds)) s")
        return checked
    }
}
