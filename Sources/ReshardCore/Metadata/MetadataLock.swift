import Foundation
import PostgresClient

/// Every advisory lock reshard takes on the metadata database, in one place, so two commands can
/// never pick the same key by accident and cutover can hold the apply lease and its own lock
/// together.
///
/// Session locks die with their connection, which is what makes them leases: a coordinator killed
/// with `kill -9` releases its lock when the server notices. They do not survive PgBouncer's
/// transaction pooling: the metadata connection string must reach PostgreSQL directly.
public enum MetadataLock: String, Sendable, CaseIterable {
    /// Held by the one coordinator running `apply` (and by `abort`, briefly).
    case apply = "reshard.lease"
    /// Held by the one `verify` of a migration.
    case verify = "reshard.verify"
    /// Held by whoever applies the changelog: the coordinator for its whole life (taken after the
    /// apply lease), verify's drainer while it drains (only when no session holds the lease), and
    /// `abort` (before it removes the log). So the log is never applied twice at once, and a
    /// starting `apply` waits for verify's drainer instead of being refused by it.
    case catchUp = "reshard.catch-up"
    /// Taken per transaction while the metadata schema is upgraded (not per migration).
    case schema = "reshard.metadata-schema"
    /// Taken per transaction, with a random token, on a shard by `plan` to tell whether two
    /// connections reach the same database (`Planner.sameDatabase`). The only lock taken outside
    /// the metadata database; it never waits and is gone when the read-only transaction ends.
    case identityProbe = "reshard.identity-probe"

    /// `pg_try_advisory_lock(hashtext(kind), hashtext(migration))`: whether this session now holds it.
    public func tryLock(_ migration: String, on meta: PGConnection) throws -> Bool {
        try meta.query("SELECT pg_try_advisory_lock(hashtext($1), hashtext($2))", [rawValue, migration]).get(0, 0, as: Bool.self)
    }

    /// Takes the lock, waiting up to `seconds` for its holder to let go; calls `waiting` once
    /// when it has to wait. Returns whether this session now holds it.
    public func lock(_ migration: String, on meta: PGConnection, waitingUpTo seconds: Double, waiting: () -> Void) throws -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        var told = false
        while true {
            if try tryLock(migration, on: meta) { return true }
            guard Date() < deadline else { return false }
            if !told { waiting() }
            told = true
            usleep(100_000)
        }
    }

    /// Releases a lock this session holds. Harmless when it holds none.
    public func unlock(_ migration: String, on meta: PGConnection) throws {
        try meta.query("SELECT pg_advisory_unlock(hashtext($1), hashtext($2))", [rawValue, migration])
    }

    /// Waits the transaction-scoped lock (for `schema`: released at COMMIT or ROLLBACK).
    public func lockForTransaction(on conn: PGConnection) throws {
        try conn.query("SELECT pg_advisory_xact_lock(hashtext($1))", [rawValue])
    }

    /// `pg_try_advisory_xact_lock(hashtext(kind), hashtext(key))`, held until the transaction ends.
    public func tryLockForTransaction(_ key: String, on conn: PGConnection) throws -> Bool {
        try conn.query("SELECT pg_try_advisory_xact_lock(hashtext($1), hashtext($2))", [rawValue, key]).get(0, 0, as: Bool.self)
    }

    /// Whether backend `pid` holds the lock for `key` in the database `conn` is connected to: the
    /// lock table is one per server, and each lock names its database.
    public func isHeldInThisDatabase(_ key: String, byBackend pid: Int32, on conn: PGConnection) throws -> Bool {
        try conn.query(
            """
            SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2
                             AND classid::bigint = (hashtext($1)::bigint & 4294967295)
                             AND objid::bigint = (hashtext($2)::bigint & 4294967295) AND pid = $3
                             AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))
            """, [rawValue, key, Int(pid)]
        ).get(0, 0, as: Bool.self)
    }

    /// A SQL condition, with the migration's name as `$n`, true while some session holds the lock.
    public func isHeldSQL(migrationParameter n: Int) -> String {
        """
        EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 2
                  AND classid::bigint = (hashtext('\(rawValue)')::bigint & 4294967295)
                  AND objid::bigint = (hashtext($\(n))::bigint & 4294967295))
        """
    }
}

/// The apply lease: the advisory lock plus a row in `reshard.leases` naming its holder, so a
/// second coordinator can say who runs the migration, and `status` whether the holder lives.
public enum ApplyLease {
    /// Takes the lease or refuses naming the holder. A holder killed a moment ago on this host
    /// may still hold its lock until its server session notices; that is waited for, briefly.
    public static func acquire(_ migration: String, on meta: PGConnection, waitForDeadLocalHolder seconds: Double = 15) throws {
        let deadline = Date().addingTimeInterval(seconds)
        while true {
            if try MetadataLock.apply.tryLock(migration, on: meta) { return }
            let holder = try meta.query("SELECT holder_host, holder_pid FROM reshard.leases WHERE migration = $1", [migration])
            let holderPID = holder.rowCount == 1 ? try holder.get(0, 1, as: Int32.self) : 0
            let deadLocalHolder = holder.rowCount == 1 && holder[0, 0] == ProcessInfo.processInfo.hostName
                && kill(holderPID, 0) != 0 && errno == ESRCH
            guard deadLocalHolder, Date() < deadline else { break }
            usleep(100_000)
        }
        throw ReshardError.refused("migration \(migration) is already being applied by \(try holderDescription(migration, on: meta))")
    }

    /// Takes the lease again on a new connection after the old one broke (the metadata database
    /// restarted, the network dropped). Our old session may not be gone yet on the server: it is
    /// ended (`pg_terminate_backend`, allowed for one's own role) and the lock waited for briefly.
    /// Refuses, naming the holder, when another coordinator took the lease meanwhile.
    public static func reacquire(_ migration: String, on meta: PGConnection, previousSession pid: Int32?, wait seconds: Double = 10) throws {
        let deadline = Date().addingTimeInterval(seconds)
        if let pid {
            _ = try? meta.query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid = $1 AND pid <> pg_backend_pid()", [Int(pid)])
        }
        while true {
            if try MetadataLock.apply.tryLock(migration, on: meta) { return }
            let holder = try meta.query("SELECT holder_host, holder_pid FROM reshard.leases WHERE migration = $1", [migration])
            let holderPID = holder.rowCount == 1 ? try holder.get(0, 1, as: Int32.self) : 0
            let ours = holder.rowCount == 1 && holder[0, 0] == ProcessInfo.processInfo.hostName && holderPID == getpid()
            guard ours, Date() < deadline else { break }
            usleep(100_000)
        }
        throw ReshardError.refused("migration \(migration): lost the apply lease while the metadata database was away; it is now held by \(try holderDescription(migration, on: meta))")
    }

    /// `host h pid p since t`, or a generic phrase when no holder row exists.
    public static func holderDescription(_ migration: String, on meta: PGConnection) throws -> String {
        let holder = try meta.query(
            "SELECT holder_host, holder_pid, acquired_at::text FROM reshard.leases WHERE migration = $1", [migration])
        guard holder.rowCount > 0 else { return "another coordinator" }
        return "host \(holder[0, 0] ?? "?") pid \(holder[0, 1] ?? "?") since \(holder[0, 2] ?? "?")"
    }

    /// Records this process as the holder (inside the registering transaction).
    public static func recordHolder(_ migration: String, on conn: PGConnection) throws {
        try conn.query(
            """
            INSERT INTO reshard.leases (migration, holder_host, holder_pid) VALUES ($1, $2, $3)
            ON CONFLICT (migration) DO UPDATE SET holder_host = EXCLUDED.holder_host, holder_pid = EXCLUDED.holder_pid,
                acquired_at = now(), heartbeat_at = now()
            """, [migration, ProcessInfo.processInfo.hostName, Int(getpid())])
    }

    public static func heartbeat(_ migration: String, on meta: PGConnection) throws {
        try meta.query("UPDATE reshard.leases SET heartbeat_at = now() WHERE migration = $1", [migration])
    }
}
