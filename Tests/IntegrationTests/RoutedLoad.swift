import Foundation
import PostgresClient
import ReshardCore
import ReshardRouting
import XCTest

/// The two layouts of a cutover test and the shard map applications route by, read from the
/// metadata as an application would (the last published switch says which layout serves).
struct Layouts: Sendable {
    var migration = "plan-test"
    var metadata: ConnectionString
    var old: [ConnectionString]
    var new: [ConnectionString]
    var oldFunction: ShardFunction
    var newFunction: ShardFunction

    /// `(epoch, new layout serves)` as the shard map publishes it now (`ShardMapStore`, what
    /// `ReshardRouter` loads); the old layout before apply registers the migration.
    func current(on meta: PGConnection) throws -> (epoch: Int64, new: Bool) {
        guard let map = try ShardMapStore.current(migration: migration, on: meta) else { return (1, false) }
        return (map.epoch, map.function == newFunction && map.shards.count == new.count)
    }

    func shard(of id: Int64, new: Bool) throws -> Int {
        try (new ? newFunction : oldFunction).shard(for: .int(id, .bigint))
    }

    /// Checks with independent SQL that `users` on the layout serving now holds every row of
    /// `expected` (id -> name) exactly once, on the shard the map gives it, and nothing else.
    func assertHolds(_ expected: [Int64: String], new: Bool, file: StaticString = #filePath, line: UInt = #line) throws {
        var seen: [Int64: String] = [:]
        for (index, dsn) in (new ? self.new : old).enumerated() {
            let rows = try PGConnection.connect(dsn).query("SELECT id, name FROM users")
            for r in 0..<rows.rowCount {
                let id = try rows.get(r, 0, as: Int64.self)
                XCTAssertNil(seen[id], "id \(id) is stored twice", file: file, line: line)
                XCTAssertEqual(try shard(of: id, new: new), index, "id \(id) is on shard \(index) of the \(new ? "new" : "old") layout", file: file, line: line)
                seen[id] = rows[r, 1]
            }
        }
        let missing = expected.keys.filter { seen[$0] == nil }.sorted()
        let extra = seen.keys.filter { expected[$0] == nil }.sorted()
        let changed = expected.keys.filter { seen[$0] != nil && seen[$0] != expected[$0] }.sorted()
        XCTAssertEqual(missing, [], "acknowledged rows missing", file: file, line: line)
        XCTAssertEqual(extra, [], "rows nobody acknowledged", file: file, line: line)
        XCTAssertEqual(changed.prefix(10).map { "\($0): \(seen[$0]!) != \(expected[$0]!)" }, [], "rows without their last acknowledged value",
                       file: file, line: line)
    }
}

extension Layouts {
    /// No schema, trigger or function of reshard's is left on any shard of either layout.
    func assertNoReshardObjects(file: StaticString = #filePath, line: UInt = #line) throws {
        for dsn in old + new {
            let leftovers = try PGConnection.connect(dsn).query(
                """
                SELECT (SELECT string_agg(nspname, ',') FROM pg_namespace WHERE nspname LIKE 'reshard%'),
                       (SELECT string_agg(tgname, ',') FROM pg_trigger WHERE tgname LIKE 'reshard%'),
                       (SELECT string_agg(proname, ',') FROM pg_proc WHERE proname LIKE ANY (ARRAY['capture%', 'fence%', 'misrouted%']))
                """)
            XCTAssertEqual((0..<3).map { leftovers[0, $0] }, [nil, nil, nil], "reshard objects left on \(dsn)", file: file, line: line)
        }
    }
}

/// Writers that route every write by the published shard map, like an application with a router:
/// each session declares the epoch it routes by (`reshard.epoch`, as `ReshardRouter` does: on a
/// database of both layouts that is what refuses a write routed by the map a switch just
/// replaced, which would otherwise update or delete nothing there, acknowledged); on the fence's
/// errors (RS001, RS002) they reload the map and retry the same write. Each
/// writer inserts, updates and deletes only ids it created, so the last acknowledged value of
/// every id is known: `acknowledged` is what the databases must hold.
final class RoutedLoad: @unchecked Sendable {
    private let layouts: Layouts
    private let lock = NSLock()
    private var running = true
    private let done = DispatchGroup()
    private var rows: [Int64: String]
    private var unexpected: [String] = []
    private var commits = 0
    private var fenced = 0
    private var waits: [Double] = []

    /// - Parameters:
    ///   - initial: the rows the tables hold when the load starts (id -> name).
    ///   - reloads: false for a client that never reloads the map (it stops at its first refusal).
    init(_ layouts: Layouts, initial: [Int64: String], writers: Int = 2, pause: useconds_t = 2_000) {
        self.layouts = layouts
        rows = initial
        for w in 0..<writers {
            done.enter()
            let thread = Thread { [self] in
                defer { done.leave() }
                write(writer: w, of: writers, pause: pause)
            }
            thread.name = "routed writer \(w)"
            thread.start()
        }
    }

    private var isRunning: Bool { lock.withLock { running } }

    private func write(writer: Int, of writers: Int, pause: useconds_t) {
        var mine: [Int64] = []
        var next = Int64(1_000_000 + writer)
        var connections: [String: PGConnection] = [:]
        var declared: [String: Int64] = [:]
        var version = 0
        do {
            let meta = try PGConnection.connect(layouts.metadata)
            var map = try layouts.current(on: meta)
            while isRunning {
                version += 1
                let op = mine.count < 20 ? 0 : Int.random(in: 0..<10)
                let id: Int64
                let sql: String
                let name = "w\(writer) v\(version)"
                if op < 5 {
                    id = next
                    next += Int64(writers)
                    sql = "INSERT INTO users (id, name) VALUES ($1, $2)"
                } else if op < 9 {
                    id = mine.randomElement()!
                    sql = "UPDATE users SET name = $2 WHERE id = $1"
                } else {
                    id = mine.remove(at: Int.random(in: 0..<mine.count))
                    sql = "DELETE FROM users WHERE id = $1 AND $2::text IS NOT NULL"
                }
                let started = Date()
                while true {
                    let index = try layouts.shard(of: id, new: map.new)
                    let dsn = (map.new ? layouts.new : layouts.old)[index]
                    do {
                        if connections[dsn.unsafeRawValue] == nil { connections[dsn.unsafeRawValue] = try PGConnection.connect(dsn) }
                        let conn = connections[dsn.unsafeRawValue]!
                        if declared[dsn.unsafeRawValue] != map.epoch {
                            try conn.query("SELECT pg_catalog.set_config($1, $2, false)", [FenceSQLState.declaredEpochSetting, String(map.epoch)])
                            declared[dsn.unsafeRawValue] = map.epoch
                        }
                        let affected = try conn.query(sql, [id, name]).affectedRows
                        if affected != 1 { record("\(sql) for id \(id) affected \(affected) rows") }
                        break
                    } catch let error as PostgresError where [FenceSQLState.staleEpoch, FenceSQLState.misrouted].contains(error.sqlState ?? "") {
                        lock.withLock { fenced += 1 }
                        map = try layouts.current(on: meta)
                        guard isRunning else { return }
                        usleep(5_000)
                    }
                }
                let waited = Date().timeIntervalSince(started)
                lock.withLock {
                    commits += 1
                    waits.append(waited)
                    if op < 5 { rows[id] = name; mine.append(id) } else if op < 9 { rows[id] = name } else { rows[id] = nil }
                }
                usleep(pause)
            }
        } catch {
            record("writer \(writer): \((error as? PostgresError)?.summary ?? "\(error)")")
        }
    }

    private func record(_ problem: String) { lock.withLock { unexpected.append(problem) } }

    var committed: Int { lock.withLock { commits } }
    var refusals: Int { lock.withLock { fenced } }
    /// The longest time one write took, retries included (the stall the client saw), in seconds.
    var longestWait: Double { lock.withLock { waits.max() ?? 0 } }

    /// Stops the writers and returns what the databases must hold.
    func stop(file: StaticString = #filePath, line: UInt = #line) -> [Int64: String] {
        lock.withLock { running = false }
        done.wait()
        XCTAssertEqual(lock.withLock { unexpected }, [], file: file, line: line)
        return lock.withLock { rows }
    }
}
