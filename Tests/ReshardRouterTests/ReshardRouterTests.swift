import Foundation
import LocalCluster
import PostgresClient
import ReshardCore
import ReshardRouter
import XCTest

/// One local cluster for the router's tests, started on first use, removed at process exit.
private final class RouterCluster: @unchecked Sendable {
    static let shared = RouterCluster()
    private let lock = NSLock()
    private var set: LocalClusterSet?

    func cluster() throws -> LocalCluster {
        try lock.withLock {
            if let set { return set.clusters[0] }
            let started = try LocalClusterSet.start(count: 1)
            set = started
            atexit { RouterCluster.shared.stop() }
            return started.clusters[0]
        }
    }

    func stop() { lock.withLock { set?.stop(); set = nil } }
}

final class ReshardRouterTests: XCTestCase {
    private var cluster: LocalCluster!
    private var metadata: ConnectionString!
    /// Shard databases d0, d1, d2 holding `items (id bigint PRIMARY KEY, note text)`.
    private var shards: [ConnectionString] = []
    private let migration = "router-test"

    override func setUpWithError() throws {
        cluster = try RouterCluster.shared.cluster()
        metadata = try database("meta")
        shards = try (0..<3).map { try database("d\($0)") }
        for shard in shards { try PGConnection.connect(shard).execute("CREATE TABLE items (id bigint PRIMARY KEY, note text)") }
        let meta = try PGConnection.connect(metadata)
        _ = try MetadataSchema.current.apply(to: meta)
        try meta.query("INSERT INTO reshard.migrations (name, plan) VALUES ($1, '{}')", [migration])
    }

    private func database(_ prefix: String) throws -> ConnectionString {
        let name = "\(prefix)_\(UUID().uuidString.prefix(8).lowercased())"
        let dsn = try cluster.createDatabase(name)
        addTeardownBlock { [cluster] in
            let admin = try PGConnection.connect(cluster!.connectionString())
            try admin.execute("DROP DATABASE IF EXISTS \(try admin.quoteIdentifier(name)) WITH (FORCE)")
        }
        return dsn
    }

    /// Publishes a modulo map over `indexes` of the shard databases; returns it with its epoch.
    @discardableResult
    private func publish(_ indexes: [Int], replicas: [Int: [ConnectionString]] = [:]) throws -> ShardMap {
        let map = ShardMap(
            migration: migration, epoch: 0, function: try ShardFunction(kind: .modulo, shardCount: indexes.count),
            shards: indexes.map {
                ShardMap.Shard(name: "d\($0)", dsn: shards[$0].withoutPassword, replicas: (replicas[$0] ?? []).map(\.withoutPassword))
            },
            tables: [.init(name: "items", key: "id", keyType: .bigint)])
        return try PGConnection.connect(metadata).transaction { try ShardMapStore.publish(map, on: $0) }
    }

    /// A real fence refusal on a shard's `items`: every write statement fails with `sqlState`.
    private func fence(_ shard: Int, _ sqlState: String) throws {
        try PGConnection.connect(shards[shard]).execute(
            """
            CREATE FUNCTION fenced() RETURNS trigger LANGUAGE plpgsql AS $$
              BEGIN RAISE EXCEPTION USING ERRCODE = '\(sqlState)', MESSAGE = 'fenced by the test'; END $$;
            CREATE TRIGGER fenced BEFORE INSERT OR UPDATE OR DELETE ON items FOR EACH STATEMENT EXECUTE FUNCTION fenced();
            """)
    }

    /// Where each id is, read with independent SQL on every shard database.
    private func placement() throws -> [Int64: [Int]] {
        var found: [Int64: [Int]] = [:]
        for (index, shard) in shards.enumerated() {
            let rows = try PGConnection.connect(shard).query("SELECT id FROM items")
            for row in 0..<rows.rowCount { found[try rows.get(row, 0, as: Int64.self), default: []].append(index) }
        }
        return found
    }

    func testRoutesKeysByTheCurrentEpochAndWritesThere() throws {
        try publish([0, 1])
        let router = try ReshardRouter(metadata: metadata, migration: migration)
        XCTAssertEqual(router.map.epoch, 1)
        XCTAssertEqual(try router.route(table: "items", key: 7).shard.name, "d1")
        XCTAssertEqual(try router.route(table: "items", key: "-4").index, 0)
        for id in Int64(1)...10 {
            try router.write(table: "items", key: id) { try $0.query("INSERT INTO items VALUES ($1, 'x')", [id]) }
        }
        let placed = try placement()
        XCTAssertEqual(placed.count, 10)
        for (id, places) in placed { XCTAssertEqual(places, [Int(id % 2)], "id \(id)") }

        XCTAssertThrowsError(try router.route(table: "nope", key: 1)) { XCTAssertEqual(($0 as? RouterError)?.code, .unknownTable) }
        XCTAssertThrowsError(try router.route(table: "items", key: "abc")) { XCTAssertEqual(($0 as? RouterError)?.code, .badKey) }
        XCTAssertThrowsError(try router.route(table: "items", key: .text("abc"))) { XCTAssertEqual(($0 as? RouterError)?.code, .badKey) }
    }

    /// The map is cached: a newer epoch is used only after a reload (or a fence refusal).
    func testCachesTheMapUntilReloaded() throws {
        try publish([0, 1])
        let router = try ReshardRouter(metadata: metadata, migration: migration)
        try publish([0, 1, 2])
        XCTAssertEqual(try router.route(table: "items", key: 5).shard.name, "d1")
        XCTAssertEqual(try router.reload().epoch, 2)
        XCTAssertEqual(try router.route(table: "items", key: 5).shard.name, "d2")
    }

    /// After a cutover the old layout refuses the write (RS001): the router reloads the map and
    /// the write lands once, on the shard the new epoch gives it; nothing is left on the old one.
    func testAStaleEpochRefusalReloadsTheMapAndRetriesOnTheNewShard() throws {
        try publish([0, 1])
        let router = try ReshardRouter(metadata: metadata, migration: migration)
        try publish([2])
        try fence(0, FenceSQLState.staleEpoch)
        try fence(1, FenceSQLState.staleEpoch)
        var runs = 0
        var declared: [String?] = []
        try router.write(table: "items", key: 4) { conn in
            runs += 1
            // Each session declares the epoch its write is routed by (the fence refuses older ones).
            declared.append(try conn.query("SELECT current_setting('reshard.epoch', true)")[0, 0])
            try conn.query("INSERT INTO items VALUES (4, 'first')")
            try conn.query("INSERT INTO items VALUES (40, 'second')")
        }
        XCTAssertEqual(runs, 2)
        XCTAssertEqual(declared, ["1", "2"])
        XCTAssertEqual(router.map.epoch, 2)
        XCTAssertEqual(try placement(), [4: [2], 40: [2]])

        // A single statement sent on its own follows the same way.
        let stale = try ReshardRouter(metadata: metadata, migration: migration)
        try publish([1])
        try fence(2, FenceSQLState.staleEpoch)
        try PGConnection.connect(shards[1]).execute("DROP TRIGGER fenced ON items")
        let inserted = try stale.execute(table: "items", key: 5, "INSERT INTO items VALUES ($1, 'one') RETURNING id", [5])
        XCTAssertEqual(inserted[0, 0], "5")
        XCTAssertEqual(stale.map.epoch, 3)
        XCTAssertEqual(try placement(), [4: [2], 40: [2], 5: [1]])
    }

    /// A misrouted refusal (RS002) is followed the same way.
    func testAMisroutedRefusalIsFollowedToo() throws {
        try publish([0, 1])
        let router = try ReshardRouter(metadata: metadata, migration: migration)
        try publish([1, 0])
        try fence(0, FenceSQLState.misrouted)
        try router.write(table: "items", key: 2) { try $0.query("INSERT INTO items VALUES (2, 'x')") }
        XCTAssertEqual(try placement(), [2: [1]])
    }

    /// While the map does not change, a refused write is retried only until `fenceWait`, then the
    /// fence's error is thrown and nothing is stored.
    func testARefusalWithNoNewerEpochGivesUpAfterTheWait() throws {
        try publish([0, 1])
        let router = try ReshardRouter(metadata: metadata, migration: migration, fenceWait: 0.3)
        try fence(1, FenceSQLState.staleEpoch)
        let started = Date()
        XCTAssertThrowsError(try router.write(table: "items", key: 3) { try $0.query("INSERT INTO items VALUES (3, 'x')") }) {
            XCTAssertEqual(($0 as? PostgresError)?.sqlState, FenceSQLState.staleEpoch)
        }
        XCTAssertLessThan(Date().timeIntervalSince(started), 3)
        XCTAssertEqual(try placement(), [:])
        // Any other error is not retried.
        var runs = 0
        XCTAssertThrowsError(try router.write(table: "items", key: 2) { conn in
            runs += 1
            try conn.query("INSERT INTO items VALUES (2, 'x'), (2, 'y')")
        }) { XCTAssertEqual(($0 as? PostgresError)?.sqlState, "23505") }
        XCTAssertEqual(runs, 1)
    }

    /// A fence that refuses while the map does not change (a switch under way, or one that was
    /// undone, or published with its fence still to release) is probed by the write itself again
    /// after a short pause, not only once a newer epoch appears.
    func testARefusalThatEndsWithoutANewEpochIsRetried() throws {
        try publish([0, 1])
        let router = try ReshardRouter(metadata: metadata, migration: migration, fenceWait: 5)
        // Refuses the first three writes, then lets them through (the switch was undone).
        try PGConnection.connect(shards[1]).execute(
            """
            CREATE SEQUENCE refusals;
            CREATE FUNCTION fenced() RETURNS trigger LANGUAGE plpgsql AS $$
              BEGIN IF nextval('refusals') <= 3 THEN RAISE EXCEPTION USING ERRCODE = 'RS001', MESSAGE = 'fenced by the test'; END IF; RETURN NULL; END $$;
            CREATE TRIGGER fenced BEFORE INSERT OR UPDATE OR DELETE ON items FOR EACH STATEMENT EXECUTE FUNCTION fenced();
            """)
        var runs = 0
        try router.write(table: "items", key: 3) { conn in
            runs += 1
            try conn.query("INSERT INTO items VALUES (3, 'x')")
        }
        XCTAssertEqual(runs, 4)
        XCTAssertEqual(router.map.epoch, 1)
        XCTAssertEqual(try placement(), [3: [1]])
    }

    /// Reads go to the shard's replicas when the map lists them, taking turns; else the primary.
    func testReadsGoToTheReplicasTheMapLists() throws {
        let replicaA = try database("ra"), replicaB = try database("rb")
        try publish([0, 1], replicas: [1: [replicaA, replicaB]])
        let router = try ReshardRouter(metadata: metadata, migration: migration)
        func where_(_ key: Int64, replica: Bool = true) throws -> String {
            try router.read(table: "items", key: key, fromReplica: replica) { try $0.query("SELECT current_database()")[0, 0]! }
        }
        let names = [replicaA, replicaB].map { $0.options["dbname"]! }
        XCTAssertEqual(Set([try where_(1), try where_(3)]), Set(names))
        XCTAssertEqual(try where_(1, replica: false), shards[1].options["dbname"])
        XCTAssertEqual(try where_(2), shards[0].options["dbname"])

        // A replica that cannot be reached: the read is served by the primary.
        var down = try XCTUnwrap(ShardMapStore.current(migration: migration, on: PGConnection.connect(metadata)))
        down.shards[1].replicas = ["host=127.0.0.1 port=1 dbname=nowhere connect_timeout=2"]
        try PGConnection.connect(metadata).transaction { try ShardMapStore.publish(down, on: $0) }
        try router.reload()
        XCTAssertEqual(try where_(1), shards[1].options["dbname"])
    }

    func testNoMapIsAClearError() throws {
        XCTAssertThrowsError(try ReshardRouter(metadata: metadata, migration: migration)) {
            XCTAssertEqual(($0 as? RouterError)?.code, .noShardMap)
            XCTAssertTrue("\($0)".contains(migration), "\($0)")
        }
    }
}

extension ReshardRouterTests {
    /// The README's example ("For applications"), as written there but for the connection string.
    func testTheReadmeExampleRuns() throws {
        try publish([0, 1])
        for shard in shards { try PGConnection.connect(shard).execute("CREATE TABLE users (id bigint PRIMARY KEY, name text, seen timestamptz)") }
        try PGConnection.connect(shards[0]).execute("INSERT INTO users VALUES (42, 'Bob')")
        var map = try XCTUnwrap(ShardMapStore.current(migration: migration, on: PGConnection.connect(metadata)))
        map.tables.append(.init(name: "users", key: "id", keyType: .bigint))
        try PGConnection.connect(metadata).transaction { try ShardMapStore.publish(map, on: $0) }

        let router = try ReshardRouter(metadata: metadata, migration: migration)
        let userID: Int64 = 42
        try router.write(table: "users", key: userID) { conn in
            try conn.query("UPDATE users SET name = $2 WHERE id = $1", [userID, "Ada"])
        }
        try router.execute(table: "users", key: userID, "UPDATE users SET seen = now() WHERE id = $1", [userID])
        let name = try router.read(table: "users", key: userID) { conn in
            try conn.query("SELECT name FROM users WHERE id = $1", [userID])[0, 0]
        }
        XCTAssertEqual(name, "Ada")
        XCTAssertEqual(try PGConnection.connect(shards[0]).query("SELECT seen IS NOT NULL FROM users WHERE id = 42")[0, 0], "t")
        XCTAssertEqual(router.map.epoch, 2)
        XCTAssertEqual(try router.route(table: "users", key: userID).shard.name, "d0")
    }
}

extension ReshardRouterTests {
    /// A write whose body swallows a statement's error must not be reported as done: PostgreSQL
    /// answers COMMIT of a failed transaction with ROLLBACK, not with an error.
    func testAWriteWhoseTransactionFailedIsNeverAcknowledged() throws {
        try publish([0, 1])
        let router = try ReshardRouter(metadata: metadata, migration: migration)
        XCTAssertThrowsError(try router.write(table: "items", key: 2) { conn in
            try conn.query("INSERT INTO items VALUES (2, 'kept?')")
            _ = try? conn.query("INSERT INTO items VALUES (2, 'duplicate')")
        }) { XCTAssertEqual(($0 as? PostgresError)?.code, .server, "\($0)") }
        XCTAssertEqual(try placement(), [:])
        // The connection is usable afterwards.
        try router.write(table: "items", key: 2) { try $0.query("INSERT INTO items VALUES (2, 'x')") }
        XCTAssertEqual(try placement(), [2: [0]])
    }
}

extension ReshardRouterTests {
    /// One router shared by several threads: every acknowledged write is stored once, on its shard.
    func testThreadsSharingARouterLoseNoWrite() throws {
        try publish([0, 1])
        let router = try ReshardRouter(metadata: metadata, migration: migration)
        let group = DispatchGroup()
        final class Errors: @unchecked Sendable {
            let lock = NSLock()
            var list: [String] = []
            func add(_ text: String) { lock.withLock { list.append(text) } }
            var all: [String] { lock.withLock { list } }
        }
        let errors = Errors()
        for thread in 0..<4 {
            group.enter()
            Thread {
                defer { group.leave() }
                for n in 0..<50 {
                    let id = Int64(thread * 1000 + n)
                    do {
                        try router.write(table: "items", key: id) { try $0.query("INSERT INTO items VALUES ($1, 'x')", [id]) }
                    } catch { errors.add("\(id): \(error)") }
                }
            }.start()
        }
        XCTAssertEqual(group.wait(timeout: .now() + 120), .success)
        XCTAssertEqual(errors.all, [])
        let placed = try placement()
        XCTAssertEqual(placed.count, 200)
        XCTAssertTrue(placed.allSatisfy { $0.value == [Int($0.key % 2)] })
    }
}

extension ReshardRouterTests {
    /// Writes the fence refused wait for the metadata database's announcement (a switch's publish,
    /// release or undo: `ReshardRouter.announcementChannel`), not for their next pause: with pauses
    /// of a minute, three threads sharing a router each have their write refused once, and all
    /// go through as soon as the fence lets them and the announcement is sent (one thread waits on
    /// the metadata session, the others are told).
    func testRefusedWritesRetryAtTheAnnouncementNotAtTheirNextPause() throws {
        try publish([0, 1])
        let router = try ReshardRouter(metadata: metadata, migration: migration, fenceWait: 600, fencePauses: 60...60)
        let shard = try PGConnection.connect(shards[1])
        try shard.execute(
            """
            CREATE SEQUENCE refusals; CREATE TABLE closed (); INSERT INTO closed DEFAULT VALUES;
            CREATE FUNCTION fenced() RETURNS trigger LANGUAGE plpgsql AS $$
              BEGIN
                IF EXISTS (SELECT FROM closed) THEN
                  PERFORM nextval('refusals');
                  RAISE EXCEPTION USING ERRCODE = 'RS001', MESSAGE = 'fenced by the test';
                END IF;
                RETURN NULL;
              END $$;
            CREATE TRIGGER fenced BEFORE INSERT OR UPDATE OR DELETE ON items FOR EACH STATEMENT EXECUTE FUNCTION fenced();
            """)
        func refusals() throws -> Int64 {
            let row = try shard.query("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM refusals")
            return try row.get(0, 0, as: Int64.self)
        }
        let group = DispatchGroup()
        final class Failures: @unchecked Sendable {
            let lock = NSLock()
            var list: [String] = []
            func add(_ text: String) { lock.withLock { list.append(text) } }
            var all: [String] { lock.withLock { list } }
        }
        let failures = Failures()
        for key in [Int64(1), 3, 5] {
            group.enter()
            Thread {
                defer { group.leave() }
                do { try router.execute(table: "items", key: key, "INSERT INTO items VALUES ($1, 'x')", [key]) } catch {
                    failures.add("\(key): \(error)")
                }
            }.start()
        }
        let until = Date().addingTimeInterval(30)
        while try refusals() < 3, Date() < until { usleep(10_000) }
        XCTAssertEqual(try refusals(), 3, "each write is refused once before the fence opens")
        try shard.execute("DELETE FROM closed")
        try PGConnection.connect(metadata).query("SELECT pg_notify($1, $2)", [ReshardRouter.announcementChannel, migration])
        // Far below the minute each would otherwise pause: they went on at the announcement.
        XCTAssertEqual(group.wait(timeout: .now() + 20), .success, "the writes did not go on at the announcement")
        XCTAssertEqual(failures.all, [])
        XCTAssertEqual(try refusals(), 3)
        XCTAssertEqual(try placement(), [1: [1], 3: [1], 5: [1]])
    }
}
