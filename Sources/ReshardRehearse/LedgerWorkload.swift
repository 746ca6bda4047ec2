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
    /// The rows each table's writers may pick, by reference: a checkout swaps and removes in
    /// place (a `Dictionary` of arrays copied the whole pool, 100k rows, on every write).
    private final class Pool {
        var rows: [RowRef]
        init(_ rows: [RowRef]) { self.rows = rows }
    }
    private let pools: [QualifiedName: Pool]
    private var nextIndex: [QualifiedName: Int]
    private var running = false
    private var map: ShardMap
    private var cpu: Double = 0
    private var callCPU: Double = 0
    private var reloads = 0
    private var anomalies: [String] = []
    private var moves = 0
    private var routed = false
    private let done = DispatchGroup()
    /// Tables other tables reference: never deleted from or moved, so children always find them.
    private let parents: Set<QualifiedName>
    /// Each table's statements, quoted once by libpq.
    private let statements: [QualifiedName: Statements]

    init(tables: [TableModel], generator: RowGenerator, ledger: Ledger, maps: ShardMapSource, options: Options,
         pools: [QualifiedName: [RowRef]], nextIndex: [QualifiedName: Int]) throws {
        self.tables = tables
        self.generator = generator.knowing(tables)
        self.ledger = ledger
        self.maps = maps
        self.options = options
        self.pools = Dictionary(uniqueKeysWithValues: tables.map { ($0.name, Pool(pools[$0.name] ?? [])) })
        self.nextIndex = nextIndex
        let map = try maps.current()
        self.map = map
        parents = Set(tables.flatMap { $0.foreignKeys.map(\.parent) })
        guard let first = map.shards.first else { throw ReshardError.failed("the shard map names no shard") }
        let conn = try PGConnection.connect(try ConnectionString(first.dsn, label: first.name), applicationName: "rehearse ledger")
        statements = Dictionary(uniqueKeysWithValues: try tables.map { ($0.name, try Statements($0, conn)) })
    }

    /// Starts the writers once each has its connections open (an application's pool is open
    /// before the migration starts: opening 2 per writer, each a SCRAM handshake, is not the
    /// workload's steady cost).
    public func start() {
        lock.withLock { running = true }
        let ready = DispatchGroup()
        for t in 0..<options.threads {
            done.enter()
            ready.enter()
            let thread = Thread { [self] in
                let conns = Connections()
                for shard in lock.withLock({ map.shards }) { _ = connection(shard, conns) }
                ready.leave()
                run(thread: t, conns)
                let spent = Self.threadCPUSeconds()
                lock.withLock { cpu += spent; callCPU += conns.callCPU }
                done.leave()
            }
            thread.name = "rehearse ledger \(t)"
            thread.start()
        }
        ready.wait()
    }

    /// Stops the writers and waits for their last writes.
    public func stop() {
        lock.withLock { running = false }
        done.wait()
    }

    var isRunning: Bool { lock.withLock { running } }
    /// CPU seconds the workload's threads used (known once stopped).
    public var cpuSeconds: Double { lock.withLock { cpu } }
    /// The part of `cpuSeconds` spent inside the database calls (the router's routing and epoch
    /// declaration, libpq, and the kernel's socket work for them): the rest is the workload's
    /// own bookkeeping (choosing and generating rows, the ledger, pacing). Known once stopped.
    public var databaseCallCPUSeconds: Double { lock.withLock { callCPU } }
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

    /// Why `@unchecked Sendable`: one writer thread's own, never shared (its router's `connect`
    /// closure, which must be `@Sendable`, runs on that thread too).
    private final class Connections: @unchecked Sendable {
        var byDSN: [String: PGConnection] = [:]
        /// This thread's router (a router serialises its writes per shard: one per thread).
        var router: ReshardRouter?
        var routerTried = Date.distantPast
        /// The epoch this thread's router last wrote under: a change is a map reload after a switch.
        var epoch: Int64?
        /// This thread's CPU seconds inside database calls (`databaseCallCPUSeconds`).
        var callCPU: Double = 0
    }

    /// The thread's router once the migration has a shard map; nil before. Until the map is
    /// published one writer a second asks (`mapPublished`), not every writer: each attempt would
    /// be a connection, and its handshake, per writer per second. The router takes over the
    /// thread's open connections to the shards it names.
    private func router(_ conns: Connections) -> ReshardRouter? {
        if let router = conns.router { return router }
        guard let metadata = options.metadata, Date().timeIntervalSince(conns.routerTried) >= 1, mapPublished(metadata) else { return nil }
        conns.routerTried = Date()
        conns.router = try? ReshardRouter(metadata: metadata, migration: options.migration) { dsn, shard in
            if let open = conns.byDSN.removeValue(forKey: dsn), open.isHealthy { return open }
            return try PGConnection.connect(try ConnectionString(dsn, label: shard), applicationName: "rehearse ledger", settings: Self.settings)
        }
        if conns.router != nil { lock.withLock { routed = true } }
        return conns.router
    }

    private let probeLock = NSLock()
    private var probe: PGConnection?
    private var probed = Date.distantPast
    private var published = false

    /// Whether `apply` has published the migration's shard map, asked at most once a second by
    /// whichever writer gets here first, on one connection kept open.
    private func mapPublished(_ metadata: ConnectionString) -> Bool {
        guard probeLock.try() else { return false }
        defer { probeLock.unlock() }
        if published { return true }
        guard Date().timeIntervalSince(probed) >= 1 else { return false }
        probed = Date()
        do {
            if probe == nil || !probe!.isHealthy { probe = try PGConnection.connect(metadata, applicationName: "rehearse ledger") }
            published = try probe!.query(
                "SELECT EXISTS (SELECT FROM reshard.shard_map WHERE migration = $1)", [options.migration]).get(0, 0, as: Bool.self)
        } catch {
            // No view yet (42P01: apply has not created the metadata schema) keeps the connection.
            if !(probe?.isHealthy ?? false) { probe = nil }
        }
        if published { probe = nil }
        return published
    }

    /// The routing key of a row under `map`: the value of the column the map routes `table` by.
    func routingKey(_ table: TableModel, _ values: [String?], _ map: ShardMap) throws -> ShardKey {
        guard let entry = map.tables.first(where: { $0.name == table.name.description }),
            let index = statements[table.name]?.position[entry.key], let text = values[index],
            let key = ShardKey(text: text, type: entry.keyType)
        else { throw ReshardError.failed("table \(table.name): cannot route a row by the shard map") }
        return key
    }

    /// How far ahead of its schedule a writer may get before it sleeps. A writer sleeps only
    /// when this far ahead, and then until its next slot: one sleep covers several writes when a
    /// writer's interval is shorter than this (each sleep is a context switch, and sleeping before
    /// every write was a sixth of the process's CPU at 1,500 writes/s). The rate over any
    /// `pacingQuantum` is as asked; within it, writes may come back to back.
    static let pacingQuantum = 0.02

    private func run(thread: Int, _ conns: Connections) {
        var rng = SeededRandom(seed: options.seed, ["workload"], index: UInt64(thread))
        let interval = Double(options.threads) / Double(max(options.writesPerSecond, 1))
        var due = Date().addingTimeInterval(interval * Double(thread) / Double(options.threads))
        while isRunning {
            let lead = due.timeIntervalSinceNow
            if lead > Self.pacingQuantum || (lead > 0 && interval >= Self.pacingQuantum) {
                usleep(UInt32(min(lead, 0.5) * 1_000_000))
                if lead > 0.5 { continue }
            }
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
        if op == .update && statements[table.name]!.updatable.isEmpty { op = .insert }
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
            guard let pool = pools[table.name], !pool.rows.isEmpty else { return nil }
            let i = Int(rng.next() % UInt64(pool.rows.count))
            pool.rows.swapAt(i, pool.rows.count - 1)
            return pool.rows.removeLast()
        }
    }

    private func checkin(_ table: TableModel, _ ref: RowRef) { lock.withLock { pools[table.name]?.rows.append(ref) } }

    private func randomParent(_ name: QualifiedName, _ rng: inout SeededRandom) -> RowGenerator.Row? {
        lock.withLock {
            guard let pool = pools[name], !pool.rows.isEmpty else { return nil }
            return RowGenerator.Row(values: pool.rows[Int(rng.next() % UInt64(pool.rows.count))].values, shard: 0)
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

    /// A table's statements and column positions, built once: a write only binds values (building
    /// and quoting SQL text, and filtering the column list, for every write was most of the
    /// workload's own CPU).
    struct Statements {
        /// `TableModel.writtenColumns`, and each one's position by name.
        let columns: [TableModel.Column]
        /// `TableModel.updatableColumns` (computed, filtering the columns, on every call).
        let updatable: [TableModel.Column]
        let position: [String: Int]
        /// Positions of the unique key's columns.
        let keyPositions: [Int?]
        let shardKeyPosition: Int?
        let placementKeyPosition: Int?
        let quotedColumns: [String]
        let insert: String
        /// `DELETE ... WHERE key = $1...`.
        let delete: String
        /// By column name: `UPDATE ... SET column = $1 WHERE key = $2... RETURNING ...`.
        let update: [String: String]
        let table: String
        let returning: String

        init(_ model: TableModel, _ conn: PGConnection) throws {
            columns = model.writtenColumns
            updatable = model.updatableColumns
            position = Dictionary(columns.enumerated().map { ($1.name, $0) }, uniquingKeysWith: { a, _ in a })
            keyPositions = model.uniqueKey.map { [position] in position[$0] }
            shardKeyPosition = position[model.shardKey]
            placementKeyPosition = position[model.placementKey]
            quotedColumns = try columns.map { try conn.quoteIdentifier($0.name) }
            table = try conn.quote(model.name)
            returning = try LedgerWorkload.returning(model, conn)
            insert = try LedgerWorkload.insertSQL(model, rows: 1, conn)
            delete = "DELETE FROM \(table) WHERE \(try Self.keyCondition(model, conn, from: 1))"
            var update: [String: String] = [:]
            for column in model.updatableColumns {
                update[column.name] = "UPDATE \(table) SET \(try conn.quoteIdentifier(column.name)) = $1 WHERE "
                    + "\(try Self.keyCondition(model, conn, from: 2)) \(returning)"
            }
            self.update = update
            quotedKeys = try model.uniqueKey.map { try conn.quoteIdentifier($0) }
        }

        private let quotedKeys: [String]

        static func keyCondition(_ table: TableModel, _ conn: PGConnection, from: Int) throws -> String {
            try table.uniqueKey.enumerated().map { "\(try conn.quoteIdentifier($1)) = $\(from + $0)" }.joined(separator: " AND ")
        }

        /// `UPDATE ... SET changed columns WHERE key ... RETURNING ...` (a shard-key change within one shard).
        func update(changing changed: [Int]) -> String {
            let sets = changed.enumerated().map { "\(quotedColumns[$1]) = $\($0 + 1)" }.joined(separator: ", ")
            let condition = quotedKeys.enumerated().map { "\($1) = $\(changed.count + 1 + $0)" }.joined(separator: " AND ")
            return "UPDATE \(table) SET \(sets) WHERE \(condition) \(returning)"
        }

        func keyValues(_ values: [String?]) -> [String?] { keyPositions.map { $0.flatMap { values[$0] } } }

        func value(_ position: Int?, _ values: [String?]) -> String { position.flatMap { values[$0] } ?? "" }
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

    func keyText(_ st: Statements, _ values: [String?]) -> String { Self.recordText(st.keyValues(values)) }

    /// The state a write of `values` leads to, its row text unknown until the server answers
    /// (`*`: any text, on the shard the values route to).
    func intended(_ st: Statements, _ values: [String?]) -> Ledger.State {
        .present(row: Ledger.anyRow, shardKey: st.value(st.shardKeyPosition, values), placementKey: st.value(st.placementKeyPosition, values))
    }

    /// Runs a database call, adding the thread's CPU in it to `Connections.callCPU` (two
    /// `clock_gettime` per write: under a microsecond).
    private static func inCall<T>(_ conns: Connections, _ body: () throws -> T) rethrows -> T {
        let before = threadCPUSeconds()
        defer { conns.callCPU += threadCPUSeconds() - before }
        return try body()
    }

    /// Runs one write (one statement, autocommit: its own transaction, one round trip) and records
    /// what became of it: acknowledged (with the row as the server returned it), failed (rolled
    /// back: the state stays), or in doubt (the connection broke before the answer: either state is
    /// acceptable). Returns the result when acknowledged.
    private func write(
        _ table: TableModel, key: String, values: [String?], to target: ShardMap.Shard, _ conns: Connections, intended: Ledger.State,
        _ sql: String, _ parameters: [String?]
    ) -> PGResult? {
        let ledgerKey = Ledger.Key(table: table.name, key: key)
        let router = router(conns)
        for attempt in 0..<2 {
            let started = Date()
            do {
                let result: PGResult
                if let router {
                    // The router sends it to the shard the current epoch names, and follows the
                    // fence's refusals itself (reload, send again: a refused statement stored nothing).
                    let key = try routingKey(table, values, router.map)
                    result = try Self.inCall(conns) { try router.execute(table: table.name.description, key: key, sql, parameters) }
                    let epoch = router.map.epoch
                    if let seen = conns.epoch, seen != epoch { lock.withLock { reloads += 1 } }
                    conns.epoch = epoch
                } else {
                    guard let conn = connection(target, conns) else { return nil }
                    result = try Self.inCall(conns) { try conn.query(sql, parameters) }
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
                if error.isFenceRefusal, attempt == 0 {
                    // Refused by the fence: nothing happened; the map moved on.
                    reloadMap()
                    continue
                }
                // A statement whose connection broke may or may not have committed; one that never
                // reached a server (no connection could be opened) did not.
                let lost = error.code == .connectionLost || error.sqlState.map { $0.hasPrefix("08") || $0.hasPrefix("57") } ?? true
                let inDoubt = lost && error.code != .connectionFailed
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
        let st = statements[table.name]!
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
        let result = write(table, key: keyText(st, row.values), values: row.values, to: target, conns, intended: intended(st, row.values), st.insert, row.values)
        if let result, result.rowCount == 1 { checkin(table, RowRef(key: result[0, 0]!, values: row.values)) }
    }

    private func update(_ table: TableModel, _ ref: RowRef, _ rng: inout SeededRandom, _ conns: Connections) {
        let st = statements[table.name]!
        let column = st.updatable[Int(rng.next() % UInt64(st.updatable.count))]
        let value = generator.freshValue(table, column, rng: &rng)
        guard let target = try? owner(table, ref.values, conns), let sql = st.update[column.name] else { return checkin(table, ref) }
        let result = write(table, key: ref.key, values: ref.values, to: target, conns, intended: intended(st, ref.values), sql, [value] + st.keyValues(ref.values))
        guard let result else { return }  // failed: the row keeps its state; in doubt: written no more
        if result.rowCount == 0 {
            lock.withLock { if anomalies.count < 20 { anomalies.append("update of \(table.name) \(ref.key) on \(target.name) found no row") } }
            return
        }
        var updated = ref
        if let i = st.position[column.name] { updated.values[i] = value }
        checkin(table, updated)
    }

    private func delete(_ table: TableModel, _ ref: RowRef, _ conns: Connections) {
        let st = statements[table.name]!
        guard let target = try? owner(table, ref.values, conns) else { return checkin(table, ref) }
        let result = write(table, key: ref.key, values: ref.values, to: target, conns, intended: .absent, st.delete, st.keyValues(ref.values))
        if let result, result.affectedRows == 0 {
            lock.withLock { if anomalies.count < 20 { anomalies.append("delete of \(table.name) \(ref.key) on \(target.name) found no row") } }
        }
    }

    private func move(_ table: TableModel, _ ref: RowRef, _ rng: inout SeededRandom, _ conns: Connections) {
        let st = statements[table.name]!
        // New routing values: another parent's key when a foreign key fills the column, else a fresh value.
        var values = ref.values
        let columns = st.columns
        if let fk = table.foreignKeys.first(where: { $0.columns.contains(table.placementKey) || $0.columns.contains(table.shardKey) }) {
            guard let parent = randomParent(fk.parent, &rng), let model = generator.parentModels[fk.parent] else { return checkin(table, ref) }
            for (c, p) in zip(fk.columns, fk.parentColumns) {
                if let ci = st.position[c], let pi = statements[fk.parent]?.position[p] ?? model.writtenColumns.firstIndex(where: { $0.name == p }) {
                    values[ci] = parent.values[pi]
                }
            }
        } else {
            for name in Set([table.shardKey, table.placementKey]) {
                if let ci = st.position[name] {
                    values[ci] = generator.freshValue(table, columns[ci], rng: &rng) ?? values[ci]
                }
            }
        }
        guard let from = try? owner(table, ref.values, conns), let to = try? owner(table, values, conns) else { return checkin(table, ref) }
        lock.withLock { moves += 1 }
        let changed = columns.indices.filter { values[$0] != ref.values[$0] }
        if changed.isEmpty { return checkin(table, ref) }
        if from.dsn == to.dsn {
            let result = write(table, key: ref.key, values: values, to: from, conns, intended: intended(st, values),
                               st.update(changing: changed), changed.map { values[$0] } + st.keyValues(ref.values))
            if let result, result.rowCount == 1 { checkin(table, RowRef(key: ref.key, values: values)) }
            return
        }
        // Across shards: the delete first; the insert only once the delete is acknowledged.
        guard let deleted = write(table, key: ref.key, values: ref.values, to: from, conns, intended: .absent, st.delete, st.keyValues(ref.values)),
            deleted.affectedRows == 1
        else { return }
        let inserted = write(table, key: ref.key, values: values, to: to, conns, intended: intended(st, values), st.insert, values)
        if let inserted, inserted.rowCount == 1 { checkin(table, RowRef(key: ref.key, values: values)) }
    }
}
