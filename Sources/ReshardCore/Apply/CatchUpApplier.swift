import ReshardRouting
import Foundation
import PostgresClient

/// Applies one source's changelog to the targets.
///
/// **Queue.** Each table's log is a queue, not a stream: each round reads entries still there,
/// applies them, and deletes exactly the entries it applied (by `ctid`; log rows are never
/// updated, so a ctid names one entry until it is deleted). A transaction that commits late (its
/// entries sit among ones already applied) simply shows up in a later round, so no change is lost
/// to order. Entries of a table are only applied once the table's slices from this source are
/// copied: until then the backfill will read the row anyway, and applying early could be
/// overwritten by a batch read before the change.
///
/// **What applying a key means.** An entry only says "key K, with shard key k, changed on this
/// source S". The target an entry concerns is where k belongs, computed by the server's own shard
/// filter (so placement always agrees with the backfill). For that target T the round makes T's
/// row K what the sources hold for T now, re-read (so applying is idempotent and order does not
/// matter):
/// - S's current row K, if it belongs to T, is upserted on T;
/// - a row (K, k) that T holds for itself and S no longer provides is replaced by the row K that
///   another source holds for T, if one does (the application is moving the row between
///   sources: insert on s1, then delete on s0), and deleted otherwise. Matching k means a row T
///   holds under another shard key (another source's row of that key) is never touched by S's
///   entries.
/// On a target that is a source's database, T's rows are the table built beside the live one
/// (`Plan.builtName(of:on:)`), so the live table, the application's, is only ever read. When T is
/// S's own database the lane does the same on S's session: S's current rows go into staging by
/// INSERT ... SELECT from the live table (no relay), and from there into the built table.
/// An entry whose k belongs elsewhere is not needed for T: the write that gave a row its current
/// shard key logged that key too (in this batch or a later one), and the shim logs the old key of
/// a row that leaves.
///
/// **Why it converges.** Everything a round does for (table, T) — reading the sources for its
/// keys and writing T — happens under one lock per (table, target) in this process (only the
/// apply lease holder applies). So writes to T for a key are ordered, and each was computed from
/// reads made after the previous one committed. Take the last write W to key K on any source: it
/// logged an entry on its source, and the round that applies that entry reads every source after
/// W committed, so it computes K's final layout; any later round for K reads later still. That is
/// also why a delete looks for the row on the other sources rather than leaving it to their
/// entries: a row that reached T by the backfill (which keeps the first copy of a key two
/// sources hold) may have no entry left anywhere.
///
/// Rounds run the targets in parallel (one lane per target, each with its own connections), at
/// most `CatchUpGate.limitPerShard` lanes at once on any shard, and the batch grows while a round
/// takes under half a second and shrinks when it takes over two.
final class CatchUpApplier: @unchecked Sendable {
    let plan: Plan
    let sourceName: String
    /// Reads and deletes this source's entries and counts the backlog.
    let source: PGConnection
    private let lanes: [Lane]
    private let gate: CatchUpGate
    /// A round of 10,000 entries takes a fraction of a second on small machines: starting there
    /// spares a large backlog the ramp-up from tiny rounds, and a slow round halves it.
    private(set) var batchLimit = 10_000
    static let batchRange = 200...50_000

    /// An applier for `source`, connected to it and, lane by lane, to every target.
    static func connecting(
        plan: Plan, source: String, gate: CatchUpGate, connect: @escaping @Sendable (String) throws -> PGConnection
    ) throws -> CatchUpApplier {
        let lanes = try plan.targets.indices.map { t in
            try Lane(plan: plan, sourceName: source, target: t, connect: connect)
        }
        return CatchUpApplier(plan: plan, sourceName: source, source: try connect(source), lanes: lanes, gate: gate)
    }

    private init(plan: Plan, sourceName: String, source: PGConnection, lanes: [Lane], gate: CatchUpGate) {
        self.plan = plan
        self.sourceName = sourceName
        self.source = source
        self.lanes = lanes
        self.gate = gate
    }

    var isHealthy: Bool { source.isHealthy && lanes.allSatisfy(\.isHealthy) }

    /// Every session the applier holds (its own, each lane's), for `CutoverDrain.retire`.
    var sessions: [PGConnection] { [source] + lanes.flatMap(\.sessions) }

    struct Round {
        /// Entries applied (and removed).
        var applied: Int
        /// Whether the round read everything that was there.
        var drained: Bool
    }

    /// Applies one round of entries for `tables` (those already copied from this source).
    func applyRound(tables: [Plan.Table]) throws -> Round {
        guard !tables.isEmpty else { return Round(applied: 0, drained: false) }
        var applied = 0
        var drained = true
        for table in tables {
            let log = Shim.logTable(migration: plan.migration, table: table)
            let limit = batchLimit
            let started = Date()
            // One text[] of ctids made by the server: the coordinator handles no entry one by one.
            let result = try source.query(CatchUpSQL.readBatch(plan: plan, table: table, log: log, limit: limit))
            let batch = Batch(count: try result.get(0, 0, as: Int.self), ctids: ArrayText(pgText: result[0, 1]))
            guard batch.count > 0 else { continue }
            // Only the lanes whose target some entry concerns (the others would find no key).
            let busy = try lanes.indices.filter { try result.get(0, 2 + $0, as: Int.self) > 0 }.map { lanes[$0] }
            try runLanes(busy, batch, table: table, log: log)
            // Entries a lane held back (a key two sources hold for its target) stay for a later round.
            let heldBack = busy.compactMap(\.heldBack)
            if heldBack.isEmpty {
                try source.query("DELETE FROM \(log) WHERE ctid = ANY($1::tid[])", [batch.ctids])
            } else {
                let spared = heldBack.indices.map { "coalesce($\($0 + 2)::tid[], '{}')" }.joined(separator: " || ")
                try source.query("DELETE FROM \(log) WHERE ctid = ANY($1::tid[]) AND ctid <> ALL (\(spared))", [batch.ctids] + heldBack.map(\.ctids))
                drained = false
            }
            applied += batch.count - heldBack.reduce(0) { $0 + $1.count }
            if batch.count >= limit {
                drained = false
                batchLimit = Self.adapted(batchLimit, took: Date().timeIntervalSince(started))
            }
        }
        return Round(applied: applied, drained: drained)
    }

    /// Full batches grow while quick and shrink when slow, so a round stays around a second.
    static func adapted(_ limit: Int, took: TimeInterval) -> Int {
        if took < 0.5 { return min(limit * 2, batchRange.upperBound) }
        if took > 2 { return max(limit / 2, batchRange.lowerBound) }
        return limit
    }

    /// Runs `lanes` (those with work in `batch`) at once (each waits for its shards' slots) and
    /// rethrows the first failure.
    private func runLanes(_ lanes: [Lane], _ batch: Batch, table: Plan.Table, log: String) throws {
        let done = DispatchGroup()
        let failure = FirstError()
        for lane in lanes {
            done.enter()
            let gate = self.gate
            // A thread per lane and round: libpq blocks, and a round is long beside a thread's start.
            let thread = Thread {
                defer { done.leave() }
                do {
                    try gate.withSlots([lane.sourceName, lane.targetName]) { try lane.apply(batch, table: table, log: log, gate: gate) }
                } catch {
                    failure.record(error)
                }
            }
            thread.name = "reshard catch-up \(lane.sourceName) -> \(lane.targetName)"
            thread.start()
        }
        done.wait()
        if let error = failure.error { throw error }
    }

    /// How many entries wait, and since when, for `status`.
    func backlog() throws -> (count: Int64, oldest: String?) {
        let parts = plan.tables.map { "SELECT count(*) AS n, min(at) AS at FROM \(Shim.logTable(migration: plan.migration, table: $0))" }
        let result = try source.query("SELECT coalesce(sum(n), 0)::bigint, min(at)::text FROM (\(parts.joined(separator: " UNION ALL "))) logs")
        return (try result.get(0, 0, as: Int64.self), result[0, 1])
    }
}

extension CatchUpApplier {
    /// One round's entries of one table.
    struct Batch: Sendable {
        var count: Int
        var ctids: ArrayText
    }

    /// An array parameter in the text form the server printed it in (`array_agg(...)::text`):
    /// sets of keys go from one server to another without the coordinator parsing or comparing
    /// them, so they stay exactly the bytes the servers hold.
    struct ArrayText: PGBindable {
        let pgText: String?
    }

    /// One target's share of the work, with connections of its own so lanes run side by side:
    /// a session on the source (its temp key set, the COPY out), one on the target (nil when the
    /// target is the source's own database: the source session then serves as both, writing the
    /// built table), and, opened on first use, sessions on the other sources.
    ///
    /// Why `@unchecked Sendable`: a lane is used by one thread at a time, the round waits for it;
    /// the threads it starts itself (`fill`) touch none of its state.
    final class Lane: @unchecked Sendable {
        let plan: Plan
        let sourceName: String
        let target: Int
        let targetName: String
        let source: PGConnection
        let targetConnection: PGConnection?
        private let connect: @Sendable (String) throws -> PGConnection
        private var others: [String: PGConnection] = [:]
        private var prepared: Set<String> = []
        /// Per table: stops the catch-up on a key another source holds for this target too.
        private var collisionGuards: [String: KeyCollisionGuard] = [:]
        /// The entries of the last round this lane left in the log (`KeyCollisionGuard.holdBack`).
        private(set) var heldBack: (ctids: ArrayText, count: Int)?

        init(plan: Plan, sourceName: String, target: Int, connect: @escaping @Sendable (String) throws -> PGConnection) throws {
            self.plan = plan
            self.sourceName = sourceName
            self.target = target
            targetName = plan.targets[target].name
            self.connect = connect
            source = try Self.session(sourceName, connect)
            targetConnection = plan.targets[target].sameAsSource == sourceName ? nil : try Self.session(targetName, connect)
        }

        /// A session for the lane's statements, planned as the catch-up needs (`CatchUpSQL.sessionSettings`).
        private static func session(_ name: String, _ connect: (String) throws -> PGConnection) throws -> PGConnection {
            let conn = try connect(name)
            try conn.execute(CatchUpSQL.sessionSettings)
            return conn
        }

        var isHealthy: Bool {
            source.isHealthy && (targetConnection?.isHealthy ?? true) && others.values.allSatisfy(\.isHealthy)
        }

        /// The lane's sessions: on the source, the target (if apart) and the other sources opened so far.
        var sessions: [PGConnection] { [source] + (targetConnection.map { [$0] } ?? []) + others.values }

        /// The sources that may hold rows for this target other than `sourceName` (the target's
        /// own database too: its live table is a source like any other, the target's rows are built apart).
        private var otherSources: [String] { plan.sources.map(\.name).filter { $0 != sourceName } }

        /// A broken one makes the lane unhealthy, and the coordinator replaces the whole applier.
        private func other(_ name: String) throws -> PGConnection {
            if let conn = others[name] { return conn }
            let conn = try Self.session(name, connect)
            others[name] = conn
            return conn
        }

        private func collisionGuard(_ table: Plan.Table) -> KeyCollisionGuard {
            if let existing = collisionGuards[table.name.description] { return existing }
            let made = KeyCollisionGuard(plan: plan, table: table, target: target, source: sourceName, connect: connect)
            collisionGuards[table.name.description] = made
            return made
        }

        /// Temp tables are made once per session.
        private func prepare(_ conn: PGConnection, _ what: String, _ sql: String) throws {
            let id = "\(ObjectIdentifier(conn).hashValue) \(what)"
            guard !prepared.contains(id) else { return }
            try conn.execute(sql)
            prepared.insert(id)
        }

        /// The arrays of a one-row `count, array, array...` result, as parameters.
        private func arrays(_ result: PGResult) -> [ArrayText] {
            (1..<result.columnCount).map { ArrayText(pgText: result[0, $0]) }
        }

        /// Makes `keys` (one text[] per key column) the key set of `conn`, whose key table `prepare`
        /// made. Touches no state of the lane, so several sessions fill at once.
        private func fill(_ keys: [ArrayText], into conn: PGConnection) throws {
            try conn.execute(CatchUpSQL.clearKeys)
            try conn.query(CatchUpSQL.loadKeys(columns: keys.count), keys)
        }

        func apply(_ batch: Batch, table: Plan.Table, log: String, gate: CatchUpGate) throws {
            heldBack = nil
            let sql = CatchUpSQL(plan: plan, table: table, target: target)
            try prepare(source, "keys", CatchUpSQL.createKeyTable)
            guard let ctids = batch.ctids.pgText else { return }
            let keys = try source.execute(sql.reloadKeys(fromLog: log, target: target, ctids: ctids)).affectedRows
            // No entry of the batch concerns this target: its transaction would stage, check and
            // upsert nothing (a cutover's drain pays every such round trip inside the stall).
            guard keys > 0 else { return }
            try gate.exclusively(table: table.name.description, target: targetName) {
                try apply(batch, keys: keys, sql, log: log, on: targetConnection ?? source)
            }
        }

        /// Upserts what the source holds for the target, and deletes what the target holds
        /// that no source does. `conn` is the source's own session when the target is its database.
        ///
        /// One transaction, as `PGConnection.transaction` makes it, but BEGIN rides with the first
        /// statement and `SET LOCAL` + COMMIT with the upsert (simple queries of several
        /// statements): three round trips fewer per lane and table, which a cutover's drain pays
        /// inside the stall. `reshard.applying` is only read by the triggers of the tables written
        /// (`Fence`), so it is set before the first write to one: the delete, or the upsert.
        private func apply(_ batch: Batch, keys: Int, _ sql: CatchUpSQL, log: String, on conn: PGConnection) throws {
            let local = conn === source
            try prepare(conn, "staging \(sql.staging)", sql.createStaging)
            let applying = "SET LOCAL reshard.applying = on"
            try conn.exclusive { conn in
                do {
                    try applyInTransaction(batch, keys: keys, sql, log: log, on: conn, local: local, applying: applying)
                } catch {
                    // Outside a transaction (BEGIN itself failed) ROLLBACK only warns.
                    _ = try? conn.execute("ROLLBACK")
                    throw error
                }
            }
        }

        private func applyInTransaction(
            _ batch: Batch, keys: Int, _ sql: CatchUpSQL, log: String, on conn: PGConnection, local: Bool, applying: String
        ) throws {
            let provided = local
                ? try conn.execute("BEGIN; \(sql.currentRowsIntoStaging(target: target))").affectedRows
                : try PGConnection.relayCopy(
                    from: source, "COPY (\(sql.currentRows(target: target))) TO STDOUT (FORMAT binary)", to: conn, "BEGIN; \(sql.copyIntoStaging)"
                ).rows
            heldBack = try collisionGuard(sql.sql.table).holdBack(staging: sql.staging, on: conn, own: source, log: log, ctids: batch.ctids)
            var fromOthers = false
            // Every key has its row in staging (the common case: updates): nothing to delete.
            if provided < keys {
                let logged = try source.query(sql.loggedKeys(fromLog: log, target: target), [batch.ctids])
                let found = try conn.query(sql.deleteCandidates(target: target), arrays(logged))
                if try found.get(0, 0, as: Int.self) > 0 {
                    let candidates = arrays(found)
                    // What the other sources hold of those keys for this target joins staging:
                    // the key sets loaded on all of them at once, then copied one after another
                    // (into the one session `conn`).
                    let sessions = try otherSources.map { try other($0) }
                    for session in sessions { try prepare(session, "keys", CatchUpSQL.createKeyTable) }
                    _ = try BoundedParallel.map("reshard catch-up keys", sessions, atOnce: KeyCollisionGuard.maxReadsAtOnce) { try self.fill(candidates, into: $0) }
                    for other in sessions {
                        let rows = try PGConnection.relayCopy(
                            from: other, "COPY (\(sql.currentRows(target: target))) TO STDOUT (FORMAT binary)", to: conn,
                            sql.copyIntoStaging)
                        fromOthers = fromOthers || rows.rows > 0
                    }
                    try conn.execute(applying)
                    try conn.query(sql.deleteKeys(target: target), candidates)
                }
            }
            // PostgreSQL answers COMMIT of an aborted transaction with ROLLBACK, not an error.
            let commit = try conn.execute("\(applying); \(fromOthers ? sql.upsertStagingOnePerKey : sql.upsertStaging); COMMIT")
            guard commit.commandStatus == "COMMIT" else {
                throw ReshardError.failed("the catch-up's transaction on \(targetName) was rolled back at COMMIT (\(commit.commandStatus))")
            }
        }
    }

    /// The first error of several threads.
    private final class FirstError: @unchecked Sendable {
        private let lock = NSLock()
        private var first: Error?
        func record(_ error: Error) { lock.withLock { if first == nil { first = error } } }
        var error: Error? { lock.withLock { first } }
    }
}

/// What the catch-up's lanes share in one process: at most `limitPerShard` lanes at once on any
/// shard (`--max-connections-per-shard`, counted apart from the backfill's), and one lock per
/// (table, target), which is what makes concurrent lanes converge (see `CatchUpApplier`).
///
/// Why `@unchecked Sendable`: all state is under `condition`.
final class CatchUpGate: @unchecked Sendable {
    let limitPerShard: Int
    private let condition = NSCondition()
    private var inUse: [String: Int] = [:]
    private var locked: Set<String> = []

    init(limitPerShard: Int) { self.limitPerShard = max(1, limitPerShard) }

    /// Runs `body` holding a slot on every shard named (all at once, so two lanes never wait on
    /// each other's half).
    func withSlots<T>(_ shards: [String], _ body: () throws -> T) throws -> T {
        let shards = Array(Set(shards))
        condition.withLock {
            while shards.contains(where: { inUse[$0, default: 0] >= limitPerShard }) { condition.wait() }
            for shard in shards { inUse[shard, default: 0] += 1 }
        }
        defer {
            condition.withLock {
                for shard in shards { inUse[shard, default: 1] -= 1 }
                condition.broadcast()
            }
        }
        return try body()
    }

    func exclusively<T>(table: String, target: String, _ body: () throws -> T) throws -> T {
        let name = "\(table)\u{0}\(target)"
        condition.withLock {
            while locked.contains(name) { condition.wait() }
            locked.insert(name)
        }
        defer {
            condition.withLock {
                locked.remove(name)
                condition.broadcast()
            }
        }
        return try body()
    }
}
