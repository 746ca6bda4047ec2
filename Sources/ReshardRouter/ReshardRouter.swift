import Foundation
import PostgresClient
import ReshardRouting

/// What an application links to send each key to the shard reshard placed it on: loads the
/// migration's current shard map from the metadata database (the view `reshard.shard_map`),
/// routes keys, keeps one connection per shard, and follows a cutover or rollback by itself:
/// a write the fence refuses (`FenceSQLState`) reloads the map and runs again on the shard the
/// new epoch names.
///
/// Why `@unchecked Sendable`: the map, the connections and the metadata connection are only
/// touched under `lock`. A shard's connection may be handed to two threads, which then take
/// turns on it (`PGConnection` serialises its users, and a transaction holds it to the end):
/// correct, but one statement at a time per shard. Threads that need parallel writes to one
/// shard use a router each.
///
/// **The declared epoch.** Every session it uses says which epoch it routes by (`reshard.epoch`,
/// set at connect and again after a reload brought a newer epoch, before the session's next use),
/// so the fence refuses a write routed by an older map even on a database that is a shard of both
/// layouts (`Fence`). Session settings do not survive a transaction-pooling PgBouncer: there a
/// server connection may carry another client's epoch.
///
/// Every call blocks (libpq): call it from your own threads, never from Swift's cooperative pool.
public final class ReshardRouter: @unchecked Sendable {
    /// Opens a connection to a shard (or replica) given the map's connection string, which never
    /// holds a password, and the shard's name. The default relies on libpq for the password
    /// (`PGPASSWORD`, `~/.pgpass`, a `passfile`); pass your own to add credentials or settings.
    public typealias Connect = @Sendable (_ dsn: String, _ shard: String) throws -> PGConnection

    /// Where a key goes in one epoch.
    public struct Route: Sendable, Equatable {
        public var epoch: Int64
        /// The shard's index in the map (`function.shard(for:)`).
        public var index: Int
        public var shard: ShardMap.Shard
    }

    public let migration: String
    /// How long `write` keeps reloading and retrying while the fence refuses: during a switch
    /// both layouts refuse writes until the new epoch is published and released (at most the
    /// cutover's `--max-stall`, 2 s by default).
    public let fenceWait: TimeInterval
    /// The longest pause between two attempts while the fence refuses and the map has not
    /// changed. The pause starts at a millisecond and doubles up to this: every millisecond
    /// slept past the switch's end is stall the application sees, and a switch that is undone
    /// or only has its fence left to release (the map already names the new epoch) ends with no
    /// change to the map to wake up on.
    public static let longestFencePause: TimeInterval = 0.016
    /// The metadata database's channel announcing that writes may go on elsewhere (a switch's
    /// publish, its fence's release, an undo), with the migration's name as payload. A router
    /// whose write the fence refused waits on it instead of sleeping, so it retries at once; the
    /// pauses above remain the fallback when nothing is announced (a metadata database behind a
    /// transaction-pooling PgBouncer delivers no notifications).
    public static let announcementChannel = FenceSQLState.announcementChannel
    private let fencePauses: ClosedRange<TimeInterval>
    private let metadataDSN: ConnectionString
    private let connect: Connect
    private let lock = NSLock()
    private var cached: ShardMap
    /// The metadata session (it also LISTENs on `announcementChannel`), used only under `metaLock`:
    /// a thread waiting for an announcement holds it without holding up routing (`lock`).
    private let metaLock = NSLock()
    private var meta: PGConnection?
    /// Announcements seen so far, and whether a thread is waiting on the metadata session for the
    /// next (the others wait on `announcements` for it): one wait per router, not one per thread.
    private let announcements = NSCondition()
    private var announced: UInt64 = 0
    private var awaiting = false
    /// By connection string: a database that is a shard in two epochs keeps its connection.
    private var connections: [String: Session] = [:]
    private var nextReplica = 0

    public static let defaultConnect: Connect = { dsn, shard in
        try PGConnection.connect(try ConnectionString(dsn, label: shard), applicationName: "reshard-router")
    }

    /// Connects to the metadata database and loads the migration's current map.
    /// - Throws: `RouterError` when the migration has no shard map yet (`reshard apply` publishes
    ///   the first epoch), or libpq's error when the metadata database cannot be reached.
    /// - Parameter fencePauses: the first and the longest pause between two attempts while the
    ///   fence refuses and nothing is announced (`longestFencePause`).
    public init(metadata: ConnectionString, migration: String, fenceWait: TimeInterval = 5,
                fencePauses: ClosedRange<TimeInterval> = 0.001...ReshardRouter.longestFencePause,
                connect: @escaping Connect = defaultConnect) throws {
        self.metadataDSN = metadata
        self.migration = migration
        self.fenceWait = fenceWait
        self.fencePauses = fencePauses
        self.connect = connect
        let conn = try Self.connectMetadata(metadata)
        cached = try Self.load(migration, on: conn)
        meta = conn
    }

    /// A metadata session listening for announcements from the start, so none sent between a
    /// refusal and the wait that follows it is missed.
    private static func connectMetadata(_ dsn: ConnectionString) throws -> PGConnection {
        let conn = try PGConnection.connect(dsn, applicationName: "reshard-router")
        try conn.execute("LISTEN \(announcementChannel)")
        return conn
    }

    /// The metadata session, reconnected when the server dropped it. Call under `metaLock`.
    private func metadataSession() throws -> PGConnection {
        if let meta, meta.isHealthy { return meta }
        meta = nil
        meta = try Self.connectMetadata(metadataDSN)
        return meta!
    }

    /// The map in use (cached: routing never asks the metadata database).
    public var map: ShardMap { lock.withLock { cached } }

    /// Reads the current epoch again; returns the map now in use.
    @discardableResult
    public func reload() throws -> ShardMap {
        // Reloads run one at a time (metaLock), so a slower one never replaces a newer map.
        try metaLock.withLock {
            let loaded: ShardMap
            do {
                loaded = try Self.load(migration, on: try metadataSession())
            } catch let error as PostgresError {
                if !(meta?.isHealthy ?? false) { meta = nil }
                throw error
            }
            return lock.withLock { install(loaded) }
        }
    }

    /// Makes `loaded` the map in use. Call under `lock`.
    private func install(_ loaded: ShardMap) -> ShardMap {
        if loaded != cached {
            // Connections to databases the new map no longer names are closed.
            let used = Set(loaded.shards.flatMap { [$0.dsn] + $0.replicas })
            // Sessions kept declare the new epoch before their next use (`connection`).
            connections = connections.filter { used.contains($0.key) }
        }
        cached = loaded
        return loaded
    }

    /// Waits up to `timeout` for an announcement after the `seen`-th (`announcementChannel`).
    /// One thread waits on the metadata session; the others wait for it to tell them.
    private func awaitAnnouncement(after seen: UInt64, timeout: TimeInterval) {
        let until = Date().addingTimeInterval(timeout)
        announcements.lock()
        while announced == seen && awaiting {
            if !announcements.wait(until: until) { break }
        }
        guard announced == seen, !awaiting, until.timeIntervalSinceNow > 0 else {
            announcements.unlock()
            return
        }
        awaiting = true
        announcements.unlock()
        var heard = false
        var failed = false
        do {
            heard = try metaLock.withLock {
                let conn = try metadataSession()
                return try conn.notifications(waitingUpTo: until.timeIntervalSinceNow).contains { $0.payload == migration }
            }
        } catch {
            // The metadata session broke: the next reload reconnects; meanwhile a plain pause.
            failed = true
        }
        announcements.lock()
        awaiting = false
        if heard { announced &+= 1 }
        announcements.broadcast()
        announcements.unlock()
        if failed, until.timeIntervalSinceNow > 0 { Thread.sleep(until: until) }
    }

    private var announcementsSeen: UInt64 { announcements.withLock { announced } }

    /// The shard a key of `table` belongs to in the cached epoch. Integer keys are taken as the
    /// table's key type (an `integer` column hashes differently from a `bigint` one).
    public func route(table: String, key: ShardKey) throws -> Route {
        try map.route(table: table, key: key)
    }

    public func route(table: String, key: Int64) throws -> Route { try route(table: table, key: .int(key, .bigint)) }

    /// A key in the text form PostgreSQL prints for the table's key type.
    public func route(table: String, key: String) throws -> Route { try map.route(table: table, keyText: key) }

    /// Runs `body` in a transaction on the primary of the shard `key` belongs to, and commits.
    ///
    /// When the fence refuses the write (this router's map is older than the current epoch, or the
    /// key is misrouted), the transaction is rolled back, so nothing of it is stored; the map is
    /// reloaded and `body` runs again on the shard the newer epoch names, for up to `fenceWait`.
    /// `body` may therefore run more than once, and must not commit or roll back itself. Any
    /// other error is thrown as it is (a commit whose outcome is unknown is never retried).
    @discardableResult
    public func write<T>(table: String, key: ShardKey, _ body: (PGConnection) throws -> T) throws -> T {
        try onPrimary(table: table, key: key) { try $0.transaction(body) }
    }

    /// Runs one statement on the primary of the shard `key` belongs to, on its own (autocommit:
    /// one round trip, where `write` adds BEGIN and COMMIT). A statement the fence refuses stored
    /// nothing, so it is sent again after a reload, as `write` does.
    @discardableResult
    public func execute(table: String, key: ShardKey, _ sql: String, _ parameters: [(any PGBindable)?] = []) throws -> PGResult {
        try onPrimary(table: table, key: key) { try $0.query(sql, parameters) }
    }

    @discardableResult
    public func execute(table: String, key: Int64, _ sql: String, _ parameters: [(any PGBindable)?] = []) throws -> PGResult {
        try execute(table: table, key: .int(key, .bigint), sql, parameters)
    }

    /// Runs `attempt` (which stores nothing when the fence refuses it) on the key's primary,
    /// following fence refusals to the shard a newer epoch names for up to `fenceWait`.
    private func onPrimary<T>(table: String, key: ShardKey, _ attempt: (PGConnection) throws -> T) throws -> T {
        let deadline = Date().addingTimeInterval(fenceWait)
        var pause = fencePauses.lowerBound
        var seen = announcementsSeen
        var reloaded = Date.distantPast
        while true {
            let route = try self.route(table: table, key: key)
            do {
                return try run(on: try session(route.shard.dsn, shard: route.shard.name), declaring: route.epoch, attempt)
            } catch let error as PostgresError where error.isFenceRefusal {
                guard Date() < deadline else { throw error }
                // A newer epoch is published: run again at once, by it. Otherwise the switch is
                // under way (not yet published, or published and its fence not yet released) or
                // was undone: the write itself is the probe, sent again once the metadata database
                // announces a change, or after a short pause. The map is read again after the
                // first refusal, after an announcement, and otherwise at most every longest pause.
                let now = announcementsSeen
                let news = now != seen
                seen = now
                if news || Date().timeIntervalSince(reloaded) >= fencePauses.upperBound {
                    reloaded = Date()
                    if try reload().epoch != route.epoch {
                        pause = fencePauses.lowerBound
                        continue
                    }
                    // A release or an undo: the fence may let the write through now.
                    if news { continue }
                }
                awaitAnnouncement(after: seen, timeout: min(pause, max(0, deadline.timeIntervalSinceNow)))
                pause = min(pause * 2, fencePauses.upperBound)
            }
        }
    }

    @discardableResult
    public func write<T>(table: String, key: Int64, _ body: (PGConnection) throws -> T) throws -> T {
        try write(table: table, key: .int(key, .bigint), body)
    }

    /// Runs `body` on a replica of the shard `key` belongs to (taking turns when there are
    /// several), or on its primary when the map lists none, `fromReplica` is false, or the
    /// replica cannot be reached. Reads are never fenced; a replica may lag behind its primary.
    @discardableResult
    public func read<T>(table: String, key: ShardKey, fromReplica: Bool = true, _ body: (PGConnection) throws -> T) throws -> T {
        let route = try self.route(table: table, key: key)
        if fromReplica, !route.shard.replicas.isEmpty {
            let replica = lock.withLock {
                nextReplica &+= 1
                return route.shard.replicas[nextReplica % route.shard.replicas.count]
            }
            do { return try run(on: try session(replica, shard: route.shard.name), declaring: nil, body) } catch let error as PostgresError
                where error.code == .connectionFailed || error.code == .connectionLost {
                // A replica that is down does not fail the read: the primary has the rows too.
            }
        }
        return try run(on: try session(route.shard.dsn, shard: route.shard.name), declaring: nil, body)
    }

    @discardableResult
    public func read<T>(table: String, key: Int64, fromReplica: Bool = true, _ body: (PGConnection) throws -> T) throws -> T {
        try read(table: table, key: .int(key, .bigint), fromReplica: fromReplica, body)
    }

    // MARK: - Connections

    /// A session the router opened, and the epoch it last declared on it (read and written only
    /// while the connection is held: `run`).
    private final class Session {
        let conn: PGConnection
        var declared: Int64?
        init(_ conn: PGConnection) { self.conn = conn }
    }

    /// The open session to `dsn`, or a new one (a connection the server dropped is replaced).
    private func session(_ dsn: String, shard: String) throws -> Session {
        try lock.withLock {
            if let open = connections[dsn], open.conn.isHealthy { return open }
            connections[dsn] = nil
            let opened = Session(try connect(dsn, shard))
            connections[dsn] = opened
            return opened
        }
    }

    /// Runs `body` on `session`, first declaring `epoch` on it when it declares another
    /// (`FenceSQLState.declaredEpochSetting`; nil for reads: replicas have no fence). Declaration and body
    /// run under one hold of the connection: a thread routing by a newer map could otherwise
    /// declare its epoch between this thread's declaration and its statement, and an update
    /// routed by the older map would pass the fence on a database of both layouts (and change
    /// nothing there, acknowledged).
    private func run<T>(on session: Session, declaring epoch: Int64?, _ body: (PGConnection) throws -> T) throws -> T {
        try using(session.conn) { conn in
            try conn.exclusive { conn in
                if let epoch, session.declared != epoch {
                    // Outside a transaction (the write's begins later), so the setting is the session's.
                    try conn.query("SELECT pg_catalog.set_config($1, $2, false)", [Self.declaredEpochSetting, String(epoch)])
                    session.declared = epoch
                }
                return try body(conn)
            }
        }
    }

    /// The setting the fence reads a session's declared epoch from.
    public static let declaredEpochSetting = FenceSQLState.declaredEpochSetting

    /// Runs `body`, forgetting the connection if it broke meanwhile, so the next call reconnects.
    private func using<T>(_ conn: PGConnection, _ body: (PGConnection) throws -> T) throws -> T {
        do { return try body(conn) } catch {
            if !conn.isHealthy { lock.withLock { connections = connections.filter { $0.value.conn !== conn } } }
            throw error
        }
    }

    static func load(_ migration: String, on conn: PGConnection) throws -> ShardMap {
        guard try conn.query("SELECT to_regclass('reshard.shard_map') IS NOT NULL").get(0, 0, as: Bool.self) else {
            throw RouterError(.noShardMap, "the metadata database has no reshard shard map (run reshard apply first)")
        }
        let row = try conn.query("SELECT map::text FROM reshard.shard_map WHERE migration = $1", [migration])
        guard row.rowCount == 1, let text = row[0, 0] else {
            throw RouterError(.noShardMap, "migration \(migration) has no shard map yet (reshard apply publishes its first epoch)")
        }
        do { return try JSONDecoder().decode(ShardMap.self, from: Data(text.utf8)) } catch {
            throw RouterError(.noShardMap, "the shard map of migration \(migration) cannot be read by this router (\(error))")
        }
    }
}

extension PostgresError {
    /// Whether the server refused the write because of reshard's fence (the map is stale).
    public var isFenceRefusal: Bool { sqlState == FenceSQLState.staleEpoch || sqlState == FenceSQLState.misrouted }
}
