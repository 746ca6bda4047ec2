import Foundation
import PostgresClient

/// `--pgbouncer ADMIN_DSN`: the application's databases paused on those PgBouncers for the stall
/// (Notion's way), so its new queries wait in PgBouncer instead of meeting the fence, and resumed
/// after the release, or after an undo. The pause is part of the stall: it waits for the
/// transactions in flight, bounded by half of `--max-stall` like the barrier's `lock_timeout`.
extension LayoutSwitch {
    /// The databases of the plan's shards (their `dbname`) that each PgBouncer lists, once each:
    /// PgBouncer refuses `PAUSE` of a database it does not know (a `*` entry lists a database only
    /// once a client used it).
    func pgBouncerDatabases(timeout: TimeInterval) throws -> [(bouncer: PgBouncerAdmin, database: String)] {
        let names = Set((plan.sources + plan.targets).compactMap { shards[$0.name]?.options["dbname"] })
        var found: [(bouncer: PgBouncerAdmin, database: String)] = []
        for admin in options.pgBouncers {
            let bouncer = PgBouncerAdmin(admin: admin)
            for database in try bouncer.databases(timeout: timeout) where names.contains(database) { found.append((bouncer, database)) }
        }
        return found
    }

    /// Pauses the application's databases; on failure resumes those already paused and throws
    /// naming the PgBouncer.
    func pausePgBouncers(deadline: Date) throws -> [(bouncer: PgBouncerAdmin, database: String)] {
        guard !options.pgBouncers.isEmpty else { return [] }
        let all = try pgBouncerDatabases(timeout: max(deadline.timeIntervalSinceNow, 0.05))
        var paused: [(bouncer: PgBouncerAdmin, database: String)] = []
        do {
            for entry in all {
                paused.append(entry)
                try entry.bouncer.pause(entry.database, timeout: max(deadline.timeIntervalSinceNow, 0.05))
            }
        } catch {
            resumePgBouncers(paused)
            throw error
        }
        return paused
    }

    /// Resumes them; a failure is reported as a notice (the switch itself is done or undone).
    func resumePgBouncers(_ paused: [(bouncer: PgBouncerAdmin, database: String)]) {
        for entry in paused {
            do { try entry.bouncer.resume(entry.database, timeout: max(options.maxStallSeconds, 1)) } catch {
                notice((error as? ReshardError)?.message ?? "\(error)")
            }
        }
    }

    /// After a coordinator died mid-switch: resumes every database a PgBouncer may still hold paused.
    func resumeAllPgBouncers() {
        guard !options.pgBouncers.isEmpty else { return }
        do { resumePgBouncers(try pgBouncerDatabases(timeout: max(options.maxStallSeconds, 1))) } catch {
            notice((error as? ReshardError)?.message ?? "\(error)")
        }
    }
}

extension PgBouncerAdmin {
    /// The databases PgBouncer lists (`SHOW DATABASES`).
    func databases(timeout: TimeInterval) throws -> [String] {
        let conn: PGConnection
        do { conn = try PGConnection.connect(admin, applicationName: "reshard") } catch let error as PostgresError {
            throw ReshardError.failed("cannot reach the admin console of \(error.summary)", underlying: error)
        }
        let rows = try conn.execute("SHOW DATABASES", timeout: timeout)
        guard let name = rows.columnIndex("name") else { return [] }
        return (0..<rows.rowCount).compactMap { rows[$0, name] }
    }
}
