import Foundation
import PostgresClient
import ReshardCore
import ReshardRouter
import ReshardRouting

#if canImport(Glibc)
import Glibc
#endif

/// Where the workload sends a row: the current shard map, reloaded when the fence says the map
/// moved on (`FenceSQLState`). `StaticMapSource` serves a map that never changes (no cutover).
public protocol ShardMapSource: Sendable {
    func current() throws -> ShardMap
}

public struct StaticMapSource: ShardMapSource {
    public let map: ShardMap
    public init(_ map: ShardMap) { self.map = map }
    public func current() throws -> ShardMap { map }
}

/// A row the workload knows: its unique key text and the values it was written with.
struct RowRef: Sendable {
    var key: String
    var values: [String?]
}

/// An application writing through the shard map at a steady rate: inserts, updates, deletes and
/// shard-key changes (a delete on the old shard, then an insert on the new one, or an update when
/// both are the same shard), each recorded in the `Ledger` once COMMIT returned. Runs on threads
/// of its own (libpq blocks), each with one connection per shard; a row is written by one thread
/// at a time, so the ledger knows which write to it came last.
///
/// Why `@unchecked Sendable`: mutable state is guarded by `lock`; threads own their connections.
public final class LedgerWorkload: @unchecked Sendable {
    public struct Options: Sendable {
        public var writesPerSecond: Int
        public var threads: Int
        public var seed: UInt64
        /// Where `ReshardRouter` finds the shard map (published by `apply` when it starts); until
        /// then, and without it, writes go by `ShardMapSource`'s map.
        public var metadata: ConnectionString?
        public var migration: String
        public init(writesPerSecond: Int, threads: Int = 4, seed: UInt64, metadata: ConnectionString? = nil, migration: String = "") {
            self.writesPerSecond = writesPerSecond
            self.threads = threads
            self.seed = seed
            self.metadata = metadata
            self.migration = migration
        }
    }

    /// Settings under which rows print as the ledger recorded them.
    public static let settings = CanonicalText.settings

    let tables: [TableModel]
    let generator: RowGenerator
    let ledger: Ledger
    let maps: ShardMapSource
    let options: Options
    private let lock = NSLock()
    private var pools: [QualifiedName: [RowRef]]
    private var nextIndex: [QualifiedName: Int]
    private var running = false
    private var map: ShardMap
    private var cpu: Double = 0
    private var reloads = 0
    private var anomalies: [String] = []
    private var moves = 0
    private var routed = false
    private let done = DispatchGroup()
    /// Tables other tables reference: never deleted from or moved, so children always find them.
    private let parents: Set<QualifiedName>

    init(tables: [TableModel], generator: RowGenerator, ledger: Ledger, maps: ShardMapSource, options: Options,
         pools: [QualifiedName: [RowRef]], nextIndex: [QualifiedName: Int]) throws {
        self.tables = tables
        self.generator = generator.knowing(tables)
        self.ledger = ledger
        self.maps = maps
        self.options = options
        self.pools = pools
        self.nextIndex = nextIndex
        self.map = try maps.current()
        parents = Set(tables.flatMap { $0.foreignKeys.map(\.parent) })
    }

    public func start() {
        lock.withLock { running = true }
        for t in 0..<options.threads {
            done.enter()
            let thread = Thread { [self] in
                run(thread: t)
                let spent = Self.threadCPUSeconds()
                lock.withLock { cpu += spent }
                done.leave()
            }
            thread.name = "rehearse ledger \(t)"
            thread.start()
        }
    }

    /// Stops the writers and waits for their last writes.
    public func stop() {
        lock.withLock { running = false }
        done.wait()
    }

    var isRunning: Bool { lock.withLock { running } }
    /// CPU seconds the workload's threads used (known once stopped).
    public var cpuSeconds: Double { lock.withLock { cpu } }
    /// Times a writer found the shard map at a new epoch (the fence refused, the router reloaded).
    public var mapReloads: Int { lock.withLock { reloads } }
    public var shardKeyMoves: Int { lock.withLock { moves } }
    /// Whether writes went through `ReshardRouter` (once `apply` published the map).
    public var usedRouter: Bool { lock.withLock { routed } }
    /// What the application itself saw go wrong (an update that found no row it had written).
    public var applicationAnomalies: [String] { lock.withLock { anomalies } }

    static func threadCPUSeconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    // MARK: - The writer loop

    private final class Connections {
        var byDSN: [String: PGConnection] = [:]
        /// This thread's router (a router serialises its writes per shard: one per thread).
        var router: ReshardRouter?
        var routerTried = Date.distantPast
        /// The epoch this thread's router last wrote under: a change is a map reload after a switch.
        var epoch: Int64?
    }

    /// The thread's router once the migration has a shard map; nil before (asked again each second).
    private func router(_ conns: Connections) -> ReshardRouter? {
        if let router = conns.router { return router }
        guard let metadata = options.metadata, Date().timeIntervalSince(conns.routerTried) >= 1 else { return nil }
        conns.routerTried = Date()
        conns.router = try? ReshardRouter(metadata: metadata, migration: options.migration) { dsn, shard in
            try PGConnection.connect(try ConnectionString(dsn, label: shard), applicationName: "rehearse ledger", settings: Self.settings)
        }
        if conns.router != nil { lock.withLock { routed = true } }
        return conns.router
    }

    /// The routing key of a row under `map`: the value of the column the map routes `table` by.
    func routingKey(_ table: TableModel, _ values: [String?], _ map: ShardMap) throws -> ShardKey {
        guard let entry = map.tables.first(where: { $0.name == table.name.description }),
            let index = table.writtenColumns.firstIndex(where: { $0.name == entry.key }), let text = values[index],
            let key = ShardKey(text: text, type: entry.keyType)
        else { throw ReshardError.failed("table \(table.name): cannot route a row by the shard map") }
        return key
    }

    private func run(thread: Int) {
        var rng = SeededRandom(seed: options.seed, ["workload"], index: UInt64(thread))
        let conns = Connections()
        let interval = Double(options.threads) / Double(max(options.writesPerSecond, 1))
        var due = Date().addingTimeInterval(interval * Double(thread) / Double(options.threads))
        while isRunning {
            let wait = due.timeIntervalSinceNow
            if wait > 0 { usleep(UInt32(min(wait, 0.5) * 1_000_000)); if wait > 0.5 { continue } }
            // Behind schedule by more than a second (a server was away): start afresh, do not burst.
            due = max(due.addingTimeInterval(interval), Date().addingTimeInterval(-1))
            writeOnce(&rng, conns)
        }
    }

    private func connection(_ shard: ShardMap.Shard, _ conns: Connections) -> PGConnection? {
        if let conn = conns.byDSN[shard.dsn], conn.isHealthy { return conn }
        do {
            let dsn = try ConnectionString(shard.dsn, label: shard.name)
            let conn = try PGConnection.connect(dsn, applicationName: "rehearse ledger", settings: Self.settings)
            conns.byDSN[shard.dsn] = conn
            return conn
        } catch {
            // Not a write: nothing was sent. The server may be restarting.
            conns.byDSN[shard.dsn] = nil
            usleep(100_000)
            return nil
        }
    }

    private func owner(_ table: TableModel, _ values: [String?], _ conns: Connections) throws -> ShardMap.Shard {
        let map = router(conns)?.map ?? lock.withLock { self.map }
        return try map.shard(table: table.name.description, key: try routingKey(table, values, map))
    }

    private func reloadMap() {
        if let fresh = try? maps.current() { lock.withLock { map = fresh; reloads += 1 } }
    }

    enum Op { case insert, update, delete, move }

    private func writeOnce(_ rng: inout SeededRandom, _ conns: Connections) {
        let table = tables[Int(rng.next() % UInt64(tables.count))]
        let leaf = !parents.contains(table.name)
        let roll = rng.next() % 100
        var op: Op = roll < 30 ? .insert : roll < 70 ? .update : roll < 85 ? .delete : .move
        if !leaf && (op == .delete || op == .move) { op = .update }
        if op == .update && table.updatableColumns.isEmpty { op = .insert }
        if op == .move && !Self.canMove(table) { op = .update }
        if op == .insert { return insert(table, &rng, conns) }
        guard let ref = checkout(table, &rng) else { return insert(table, &rng, conns) }
        switch op {
        case .update: update(table, ref, &rng, conns)
        case .delete: delete(table, ref, conns)
        default: move(table, ref, &rng, conns)
        }
    }

    /// A shard-key change keeps the row's unique key only when the routing column is outside every unique set.
    static func canMove(_ table: TableModel) -> Bool {
        !table.uniqueSets.contains { $0.contains(table.placementKey) || $0.contains(table.shardKey) }
    }

    private func checkout(_ table: TableModel, _ rng: inout SeededRandom) -> RowRef? {
        lock.withLock {
            guard var pool = pools[table.name], !pool.isEmpty else { return nil }
            let i = Int(rng.next() % UInt64(pool.count))
            pool.swapAt(i, pool.count - 1)
            let ref = pool.removeLast()
            pools[table.name] = pool
            return ref
        }
    }

    private func checkin(_ table: TableModel, _ ref: RowRef) { lock.withLock { pools[table.name, default: []].append(ref) } }

    private func randomParent(_ name: QualifiedName, _ rng: inout SeededRandom) -> RowGenerator.Row? {
        lock.withLock {
            guard let pool = pools[name], !pool.isEmpty else { return nil }
            return RowGenerator.Row(values: pool[Int(rng.next() % UInt64(pool.count))].values, shard: 0)
        }
    }

    // MARK: - SQL

    static func returning(_ table: TableModel, _ conn: PGConnection) throws -> String {
        let keys = try table.uniqueKey.map { try conn.quoteIdentifier($0) }.joined(separator: ", ")
        let all = try table.columns.map { try conn.quoteIdentifier($0.name) }.joined(separator: ", ")
        return "RETURNING ROW(\(keys))::text, ROW(\(all))::text, \(try conn.quoteIdentifier(table.shardKey))::text, "
            + "\(try conn.quoteIdentifier(table.placementKey))::text"
    }

    static func insertSQL(_ table: TableModel, rows: Int, _ conn: PGConnection) throws -> String {
        let columns = table.writtenColumns
        let names = try columns.map { try conn.quoteIdentifier($0.name) }.joined(separator: ", ")
        let overriding = columns.contains { $0.identity != nil } ? " OVERRIDING SYSTEM VALUE" : ""
        let tuples = (0..<rows).map { r in
            "(" + (1...columns.count).map { "$\(r * columns.count + $0)" }.joined(separator: ", ") + ")"
        }.joined(separator: ", ")
        return "INSERT INTO \(try conn.quote(table.name)) (\(names))\(overriding) VALUES \(tuples) \(try Self.returning(table, conn))"
    }

    func keyCondition(_ table: TableModel, _ conn: PGConnection, from: Int) throws -> String {
        try table.uniqueKey.enumerated().map { "\(try conn.quoteIdentifier($1)) = $\(from + $0)" }.joined(separator: " AND ")
    }

    func keyValues(_ table: TableModel, _ ref: RowRef) -> [String?] {
        let columns = table.writtenColumns
        return table.uniqueKey.map { k in columns.firstIndex { $0.name == k }.flatMap { ref.values[$0] } }
    }

    static func state(_ result: PGResult, row: Int = 0) -> (key: String, state: Ledger.State) {
        (result[row, 0]!, .present(row: result[row, 1]!, shardKey: result[row, 2] ?? "", placementKey: result[row, 3] ?? ""))
    }

    /// `ROW(values)::text` as PostgreSQL's record_out prints it: a field is quoted when empty or
    /// holding a quote, backslash, parenthesis, comma or space. Matches the server for values whose
    /// text the server prints back unchanged (integers, text, uuids, the generator's timestamps).
    static func recordText(_ values: [String?]) -> String {
        "(" + values.map { value -> String in
            guard let value else { return "" }
            let needsQuotes = value.isEmpty || value.contains { "\"\\(),".contains($0) || $0.isWhitespace }
            guard needsQuotes else { return value }
            return "\"" + value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\"\"") + "\""
        }.joined(separator: ",") + ")"
    }

    func keyText(_ table: TableModel, _ values: [String?]) -> String {
        let columns = table.writtenColumns
        return Self.recordText(table.uniqueKey.map { k in columns.firstIndex { $0.name == k }.flatMap { values[$0] } })
    }

    /// The state a write of `values` leads to, its row text unknown until the server answers
    /// (`*`: any text, on the shard the values route to).
    func intended(_ table: TableModel, _ values: [String?]) -> Ledger.State {
        let columns = table.writtenColumns
        func value(_ name: String) -> String { columns.firstIndex { $0.name == name }.flatMap { values[$0] } ?? "" }
        return .present(row: Ledger.anyRow, shardKey: value(table.shardKey), placementKey: value(table.placementKey))
    }

    /// Runs one write and records what became of it: acknowledged (with the row as the server
    /// returned it), failed (rolled back: the state stays), or in doubt (the connection broke
    /// before the answer: either state is acceptable). Returns the result when acknowledged.
    private func write(
        _ table: TableModel, key: String, values: [String?], to target: ShardMap.Shard, _ conns: Connections, intended: Ledger.State,
        _ body: (PGConnection) throws -> PGResult
    ) -> PGResult? {
        let ledgerKey = Ledger.Key(table: table.name, key: key)
        let router = router(conns)
        for attempt in 0..<2 {
            let started = Date()
            do {
                let result: PGResult
                if let router {
                    // The router runs it in a transaction on the shard the current epoch names,
                    // and follows the fence's refusals itself (reload, run again).
                    result = try router.write(table: table.name.description, key: try routingKey(table, values, router.map)) { try body($0) }
                    let epoch = router.map.epoch
                    if let seen = conns.epoch, seen != epoch { lock.withLock { reloads += 1 } }
                    conns.epoch = epoch
                } else {
                    guard let conn = connection(target, conns) else { return nil }
                    result = try body(conn)
                }
                let latency = Date().timeIntervalSince(started)
                if intended == .absent {
                    if result.affectedRows > 0 { ledger.record(ledgerKey, .absent, .acknowledged, started: started, latency: latency) }
                } else if result.rowCount > 0 {
                    let (k, state) = Self.state(result)
                    ledger.record(Ledger.Key(table: table.name, key: k), state, .acknowledged, started: started, latency: latency)
                }
                return result
            } catch let error as PostgresError {
                if let state = error.sqlState, state == FenceSQLState.staleEpoch || state == FenceSQLState.misrouted, attempt == 0 {
                    // Refused by the fence: nothing happened; the map moved on.
                    reloadMap()
                    continue
                }
                let lost = error.code == .connectionLost || error.sqlState.map { $0.hasPrefix("08") || $0.hasPrefix("57") } ?? true
                // Inside the router's transaction only a lost COMMIT leaves the outcome unknown: a
                // statement before it that failed, however, means nothing was committed.
                let inDoubt = lost && (router == nil || error.statement == nil || error.statement == "COMMIT")
                ledger.record(ledgerKey, intended, inDoubt ? .inDoubt : .failed, started: started, latency: 0)
                if lost { conns.byDSN[target.dsn] = nil }
                return nil
            } catch {
                return nil
            }
        }
        return nil
    }

    private func insert(_ table: TableModel, _ rng: inout SeededRandom, _ conns: Connections) {
        let index: Int = lock.withLock {
            defer { nextIndex[table.name, default: 0] += 1 }
            return nextIndex[table.name, default: 0]
        }
        var parentRows: [QualifiedName: [RowGenerator.Row]] = [:]
        for fk in table.foreignKeys {
            guard let parent = randomParent(fk.parent, &rng) else { return }
            parentRows[fk.parent] = [parent]
        }
        guard let row = try? generator.row(of: table, index: index, parents: parentRows), let target = try? owner(table, row.values, conns) else { return }
        let result = write(table, key: keyText(table, row.values), values: row.values, to: target, conns, intended: intended(table, row.values)) { conn in
            try conn.query(try Self.insertSQL(table, rows: 1, conn), row.values)
        }
        if let result, result.rowCount == 1 { checkin(table, RowRef(key: result[0, 0]!, values: row.values)) }
    }

    private func update(_ table: TableModel, _ ref: RowRef, _ rng: inout SeededRandom, _ conns: Connections) {
        let columns = table.updatableColumns
        let column = columns[Int(rng.next() % UInt64(columns.count))]
        let value = generator.freshValue(table, column, rng: &rng)
        guard let target = try? owner(table, ref.values, conns) else { return checkin(table, ref) }
        let result = write(table, key: ref.key, values: ref.values, to: target, conns, intended: intended(table, ref.values)) { conn in
            try conn.query(
                "UPDATE \(try conn.quote(table.name)) SET \(try conn.quoteIdentifier(column.name)) = $1 WHERE \(try keyCondition(table, conn, from: 2)) \(try Self.returning(table, conn))",
                [value] + keyValues(table, ref))
        }
        guard let result else { return }  // failed: the row keeps its state; in doubt: written no more
        if result.rowCount == 0 {
            lock.withLock { if anomalies.count < 20 { anomalies.append("update of \(table.name) \(ref.key) on \(target.name) found no row") } }
            return
        }
        var updated = ref
        if let i = table.writtenColumns.firstIndex(where: { $0.name == column.name }) { updated.values[i] = value }
        checkin(table, updated)
    }

    private func delete(_ table: TableModel, _ ref: RowRef, _ conns: Connections) {
        guard let target = try? owner(table, ref.values, conns) else { return checkin(table, ref) }
        let result = write(table, key: ref.key, values: ref.values, to: target, conns, intended: .absent) { conn in
            try conn.query("DELETE FROM \(try conn.quote(table.name)) WHERE \(try keyCondition(table, conn, from: 1))", keyValues(table, ref))
        }
        if let result, result.affectedRows == 0 {
            lock.withLock { if anomalies.count < 20 { anomalies.append("delete of \(table.name) \(ref.key) on \(target.name) found no row") } }
        }
    }

    private func move(_ table: TableModel, _ ref: RowRef, _ rng: inout SeededRandom, _ conns: Connections) {
        // New routing values: another parent's key when a foreign key fills the column, else a fresh value.
        var values = ref.values
        let columns = table.writtenColumns
        if let fk = table.foreignKeys.first(where: { $0.columns.contains(table.placementKey) || $0.columns.contains(table.shardKey) }) {
            guard let parent = randomParent(fk.parent, &rng), let model = generator.parentModels[fk.parent] else { return checkin(table, ref) }
            for (c, p) in zip(fk.columns, fk.parentColumns) {
                if let ci = columns.firstIndex(where: { $0.name == c }), let pi = model.writtenColumns.firstIndex(where: { $0.name == p }) {
                    values[ci] = parent.values[pi]
                }
            }
        } else {
            for name in Set([table.shardKey, table.placementKey]) {
                if let ci = columns.firstIndex(where: { $0.name == name }) {
                    values[ci] = generator.freshValue(table, columns[ci], rng: &rng) ?? values[ci]
                }
            }
        }
        guard let from = try? owner(table, ref.values, conns), let to = try? owner(table, values, conns) else { return checkin(table, ref) }
        lock.withLock { moves += 1 }
        let changed = columns.indices.filter { values[$0] != ref.values[$0] }
        if changed.isEmpty { return checkin(table, ref) }
        if from.dsn == to.dsn {
            let result = write(table, key: ref.key, values: values, to: from, conns, intended: intended(table, values)) { conn in
                let sets = try changed.enumerated().map { "\(try conn.quoteIdentifier(columns[$1].name)) = $\($0 + 1)" }.joined(separator: ", ")
                return try conn.query(
                    "UPDATE \(try conn.quote(table.name)) SET \(sets) WHERE \(try keyCondition(table, conn, from: changed.count + 1)) \(try Self.returning(table, conn))",
                    changed.map { values[$0] } + keyValues(table, ref))
            }
            if let result, result.rowCount == 1 { checkin(table, RowRef(key: ref.key, values: values)) }
            return
        }
        // Across shards: the delete first; the insert only once the delete is acknowledged.
        guard let deleted = write(table, key: ref.key, values: ref.values, to: from, conns, intended: .absent, { conn in
            try conn.query("DELETE FROM \(try conn.quote(table.name)) WHERE \(try keyCondition(table, conn, from: 1))", keyValues(table, ref))
        }), deleted.affectedRows == 1 else { return }
        let inserted = write(table, key: ref.key, values: values, to: to, conns, intended: intended(table, values)) { conn in
            try conn.query(try Self.insertSQL(table, rows: 1, conn), values)
        }
        if let inserted, inserted.rowCount == 1 { checkin(table, RowRef(key: ref.key, values: values)) }
    }
}
