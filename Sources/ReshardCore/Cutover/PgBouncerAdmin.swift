import Foundation
import PostgresClient

/// `PAUSE` and `RESUME` of a database on a PgBouncer, through its admin console, for the switch
/// of a cutover (`--pgbouncer ADMIN_DSN`): while paused, PgBouncer holds the application's new
/// queries instead of sending them to the old layout, and releases them on `RESUME`.
///
/// `PAUSE db` returns only once every transaction in flight on that database has ended, so one
/// long transaction would stall the switch. The admin console has no `statement_timeout`, so the
/// wait is bounded on our side (`PGConnection.execute(_:timeout:)`); a `PAUSE` that did not finish
/// in time may still be pending inside PgBouncer, so it is followed by a `RESUME` on a fresh
/// connection, leaving the database serving as before.
public struct PgBouncerAdmin: Sendable {
    /// The admin console: database `pgbouncer`, a user in PgBouncer's `admin_users`.
    public var admin: ConnectionString

    public init(admin: ConnectionString) { self.admin = admin }

    /// Pauses `database`; returns how long PgBouncer took (the transactions it waited for).
    /// - Throws: `ReshardError.failed` naming the PgBouncer and the database when it cannot be
    ///   reached, refuses, or does not finish within `timeout` (then resumed again, as it was).
    @discardableResult
    public func pause(_ database: String, timeout: TimeInterval) throws -> TimeInterval {
        let started = Date()
        let command = "PAUSE \(try Self.name(database))"
        let conn = try connect(timeout: timeout, database: database)
        do {
            try conn.execute(command, timeout: max(timeout - Date().timeIntervalSince(started), 0.001))
            return Date().timeIntervalSince(started)
        } catch let error as PostgresError where error.code == .server {
            throw ReshardError.failed("pgbouncer \(admin.endpoint.description): \(command) refused: \(error.message)", underlying: error)
        } catch let error as PostgresError {
            // Timed out or cut off: the pause may be pending inside PgBouncer. Undo it.
            let undo = (try? resume(database, timeout: max(timeout, 1))) != nil
            let why = error.code == .cancelled
                ? "did not finish within \(String(format: "%.1f", timeout)) s (a transaction on \(database) held on)"
                : "failed: \(error.summary)"
            throw ReshardError.failed(
                "pgbouncer \(admin.endpoint.description): \(command) \(why); \(undo ? "resumed" : "RESUME failed too: run RESUME \(database) on it")",
                underlying: error)
        }
    }

    /// Resumes `database` (a database that is not paused is left as it is).
    public func resume(_ database: String, timeout: TimeInterval) throws {
        let command = "RESUME \(try Self.name(database))"
        let conn = try connect(timeout: timeout, database: database)
        do { try conn.execute(command, timeout: timeout) } catch let error as PostgresError {
            // PgBouncer refuses RESUME of a database that is not paused: nothing to undo then.
            if error.code == .server, (try? isPaused(database, timeout: timeout)) == false { return }
            throw ReshardError.failed("pgbouncer \(admin.endpoint.description): \(command) failed: \(error.summary)", underlying: error)
        }
    }

    /// Whether PgBouncer reports `database` paused (`SHOW DATABASES`).
    public func isPaused(_ database: String, timeout: TimeInterval = 5) throws -> Bool {
        let rows = try connect(timeout: timeout, database: database).execute("SHOW DATABASES", timeout: timeout)
        guard let name = rows.columnIndex("name"), let paused = rows.columnIndex("paused") else { return false }
        return (0..<rows.rowCount).contains { rows[$0, name] == database && rows[$0, paused] == "1" }
    }

    private func connect(timeout: TimeInterval, database: String) throws -> PGConnection {
        var options = admin.options
        if options["connect_timeout"] == nil { options["connect_timeout"] = String(max(2, Int(timeout.rounded(.up)))) }
        do {
            return try PGConnection.connect(
                try ConnectionString(ConnectionString.keywordString(options), label: admin.label ?? "pgbouncer"), applicationName: "reshard")
        } catch let error as PostgresError {
            throw ReshardError.failed(
                "pgbouncer \(admin.endpoint.description): cannot reach its admin console to pause or resume \(database): \(error.summary)",
                underlying: error)
        }
    }

    /// PgBouncer's console reads a database name as a bare word; anything else is refused here.
    static func name(_ database: String) throws -> String {
        guard !database.isEmpty, database.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }) else {
            throw ReshardError.badInput("pgbouncer database name '\(database)' must be letters, digits and underscores")
        }
        return database
    }
}
