import Foundation
import PostgresClient

/// Stops `apply` when a key one source brings to a target is also held for that target by
/// another source (`KeyCollisions`): a row written after `plan` checked, met by the copy (a
/// batch's key conflict) or the catch-up (before its upsert). Without it the re-run batch's
/// `ON CONFLICT DO NOTHING` would drop one of the rows and the catch-up's upsert would replace one
/// with the other.
///
/// The application moving a row between sources (insert on one, delete on the other) holds its
/// key on both for a moment, which is not a collision: a key counts only when both sources
/// still hold it for the target `graceSeconds` later. The copy of the batch concerned waits for
/// it (`check`); the catch-up leaves the entries concerned for a later round (`holdBack`).
///
/// Reads of two servers are never one snapshot: a key read on this source, then moved (deleted
/// here, inserted there), then read on the other, is seen on both though never held by both.
/// So a key is called a collision only once seen on both at one moment (`heldOnBoth`): the
/// other source's row version (ctid, xmin) is read, then this source's row, then the other's
/// again; the same version both times was there all along, so both held the key when this
/// source was read. A key only seen on both in turn is held back, never refused.
///
/// Why `@unchecked Sendable`: one guard belongs to one worker thread (a slice's copy, a lane).
final class KeyCollisionGuard: @unchecked Sendable {
    /// 10 s; `RESHARD_KEY_COLLISION_GRACE_SECONDS` sets another (tests use 1 s, to take seconds).
    static let graceSeconds = ProcessInfo.processInfo.environment["RESHARD_KEY_COLLISION_GRACE_SECONDS"].flatMap(Double.init) ?? 10

    let plan: Plan
    let table: Plan.Table
    let target: Int
    let sourceName: String
    private let connect: (String) throws -> PGConnection
    private var others: [String: PGConnection] = [:]

    init(plan: Plan, table: Plan.Table, target: Int, source: String, connect: @escaping (String) throws -> PGConnection) {
        self.plan = plan
        self.table = table
        self.target = target
        sourceName = source
        self.connect = connect
    }

    /// An array parameter as the server printed it (`array_agg(...)::text`).
    typealias Keys = CatchUpApplier.ArrayText

    /// `count(*)`, then one `array_agg(col::text)::text` per key column of alias `alias`: the form
    /// `check` takes keys in.
    static func aggregate(_ table: Plan.Table, alias: String) -> String {
        "count(*), " + TableSQL(table).keyColumns.map { "array_agg(\(alias).\($0)::text)::text" }.joined(separator: ", ")
    }

    /// `check` for the keys of `staging` (on `conn`) that `name` already holds there: the rows of a
    /// batch whose copy ran into the migration's key.
    func checkConflicts(staging: String, into name: String, on conn: PGConnection, own: PGConnection) throws {
        // One source alone cannot collide with itself: its conflicts are its own rows copied before.
        guard !otherSources.isEmpty else { return }
        let sql = TableSQL(table)
        let join = sql.keyColumns.map { "t.\($0) = s.\($0)" }.joined(separator: " AND ")
        try check(conn.query("SELECT \(Self.aggregate(table, alias: "s")) FROM \(staging) s WHERE EXISTS (SELECT 1 FROM \(name) t WHERE \(join))"), own: own)
    }

    private func check(_ aggregated: PGResult, own: PGConnection) throws {
        try check((1..<aggregated.columnCount).map { Keys(pgText: aggregated[0, $0]) }, count: try aggregated.get(0, 0, as: Int.self), own: own)
    }

    /// The catch-up's check, which never waits: of the rows in `staging` (this source's current
    /// rows for the target, about to be upserted on `conn`), those whose key another source also
    /// holds for the target are taken out of staging, and their entries among `ctids` in `log`
    /// are returned to be left in the log: they are applied by a later round once only one
    /// source holds the key (the other's delete or move logs an entry of its own). Throws the
    /// collision when a key is proven held by both again `graceSeconds` after this guard first
    /// proved it (never from the entries' age: they wait out a long backfill, and an
    /// application's move holds a key on both for a moment), or has been seen on both in turn for
    /// `graceSeconds + confirmSeconds` (`check`'s limit). Nil when nothing is held back.
    func holdBack(staging: String, on conn: PGConnection, own: PGConnection, log: String, ctids: Keys) throws -> (ctids: Keys, count: Int)? {
        let staged = try conn.query("SELECT \(Self.aggregate(table, alias: "s")) FROM \(staging) s")
        let suspects = (count: try staged.get(0, 0, as: Int.self), keys: (1..<staged.columnCount).map { Keys(pgText: staged[0, $0]) })
        guard suspects.count > 0 else { return nil }
        var holder: String?
        var held: [Keys] = []
        let now = Date()
        watched = watched.filter { now.timeIntervalSince($0.value.last) <= Self.forgetSeconds }
        // Every other source asked at once: inside a cutover's drain each is a round trip the
        // application's writers wait for, and a rollback's lanes have one per new shard.
        let sessions = try otherSources.map { try connection($0) }
        let keys = suspects.keys
        let founds = try BoundedParallel.map("reshard key check", sessions, atOnce: Self.maxReadsAtOnce) { try self.held(keys, on: $0) }
        for (other, found) in zip(otherSources, founds) {
            guard found.count > 0 else { continue }
            holder = holder ?? other
            held.append(contentsOf: found.keys)
            let both = try heldOnBoth(found.keys, other: try connection(other), own: own)
            let proven = Set(both.count > 0 ? try identities(both.keys) : [])
            // Refused: proven again `graceSeconds` after its first proof (an application's move
            // holds a key on both for a moment, however old its entries), or seen on both in turn
            // for `graceSeconds + confirmSeconds` without a proof (the other's row changing all
            // the while): never held back without end.
            var refused: [String] = []
            for id in try identities(found.keys) {
                let name = other + "\u{0}" + id
                var seen = watched[name] ?? (since: now, proven: nil, last: now)
                seen.last = now
                if proven.contains(id) {
                    if let first = seen.proven, now.timeIntervalSince(first) >= Self.graceSeconds { refused.append(id) }
                    seen.proven = seen.proven ?? now
                } else if now.timeIntervalSince(seen.since) >= Self.graceSeconds + Self.confirmSeconds {
                    refused.append(id)
                }
                watched[name] = seen
            }
            if !refused.isEmpty {
                let names = plan.sources.map(\.name).filter { $0 == other || $0 == sourceName }
                throw ReshardError.failed(
                    KeyCollisions.message(
                        table, target: plan.targets[target].name, sources: (names[0], names[1]),
                        keys: try sampleKeys(try subset(found.keys, refused))),
                    shard: plan.targets[target].name)
            }
        }
        guard holder != nil else { return nil }
        let columns = TableSQL(table).keyColumns.count
        // Keys held elsewhere, per other source: one set of key arrays each.
        let sets = stride(from: 0, to: held.count, by: columns).map { Array(held[$0..<$0 + columns]) }
        let sql = TableSQL(table)
        for set in sets {
            let join = zip(sql.keyColumns, sql.keyTypes).enumerated().map { "s.\($1.0) = e.k\($0)::\($1.1)" }.joined(separator: " AND ")
            try conn.query("DELETE FROM \(staging) s USING \(unnest) WHERE \(join)", set)
        }
        var kept: [Keys] = []
        var keptCount = 0
        let arrayOfKey = "ARRAY[\(sql.keyColumns.indices.map { "e.k\($0)" }.joined(separator: ", "))]"
        let entriesOf = "FROM \(log) WHERE ctid = ANY($\(columns + 1)::tid[]) AND EXISTS (SELECT 1 FROM \(unnest) WHERE pk = \(arrayOfKey))"
        for set in sets {
            let entries = try own.query("SELECT count(*), array_agg(ctid)::text \(entriesOf)", set + [ctids])
            keptCount += try entries.get(0, 0, as: Int.self)
            kept.append(Keys(pgText: entries[0, 1]))
        }
        // One tid[] for the round's DELETE to spare.
        let merged = try own.query("SELECT (\((1...kept.count).map { "coalesce($\($0)::tid[], '{}')" }.joined(separator: " || ")))::text", kept)
        return (Keys(pgText: merged[0, 0]), keptCount)
    }

    /// The sources that may hold rows for this target besides this one (the target's own
    /// database too: its live table holds its own rows only, the copies are built apart).
    private var otherSources: [String] { plan.sources.map(\.name).filter { $0 != sourceName } }

    /// At most this many other sources read at once by one guard (or one lane): each lane of a
    /// round runs its own, so the sessions busy at once stay a few per lane.
    static let maxReadsAtOnce = 4

    /// Per other source and key (`other` NUL the key's text): when the catch-up first saw the key
    /// on both in turn, when it first proved it held by both at one moment, and when it last saw
    /// it. In memory: a restarted coordinator starts over, which only delays a refusal.
    private var watched: [String: (since: Date, proven: Date?, last: Date)] = [:]

    /// A key not seen for this long starts over (the move it belonged to is long done).
    private static var forgetSeconds: Double { 2 * (graceSeconds + confirmSeconds) }

    /// Each key of `keys` as one text (its key array's), asked of a server.
    private func identities(_ keys: [Keys]) throws -> [String] {
        let names = TableSQL(table).keyColumns.indices.map { "e.k\($0)" }
        let rows = try connection(otherSources[0]).query("SELECT ARRAY[\(names.joined(separator: ", "))]::text FROM \(unnest)", keys)
        return (0..<rows.rowCount).map { rows[$0, 0] ?? "" }
    }

    /// The keys of `keys` whose text (`identities`) is among `ids`, in the same form.
    private func subset(_ keys: [Keys], _ ids: [String]) throws -> [Keys] {
        let sql = TableSQL(table)
        let names = sql.keyColumns.indices.map { "e.k\($0)" }
        let literal = "{" + ids.map { "\"" + $0.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\"" }
            .joined(separator: ",") + "}"
        let rows = try connection(otherSources[0]).query(
            "SELECT \(names.map { "array_agg(\($0))::text" }.joined(separator: ", ")) FROM \(unnest) WHERE ARRAY[\(names.joined(separator: ", "))]::text = ANY($\(names.count + 1)::text[])",
            keys + [Keys(pgText: literal)])
        return (0..<rows.columnCount).map { Keys(pgText: rows[0, $0]) }
    }

    /// Throws `ReshardError.failed` naming up to 10 keys and both sources when some of `keys` (one
    /// array per key column) are held for the target by this source (`own`) and another, still
    /// after `graceSeconds`.
    func check(_ keys: [Keys], count: Int, own: PGConnection) throws {
        guard count > 0 else { return }
        for other in otherSources {
            var suspects = (count: count, keys: keys)
            let deadline = Date().addingTimeInterval(Self.graceSeconds)
            while true {
                suspects = try held(suspects.keys, on: try connection(other))
                guard suspects.count > 0 else { break }
                suspects = try held(suspects.keys, on: own)
                guard suspects.count > 0 else { break }
                if Date() >= deadline {
                    // Seen on both in turn all this time; refused once seen on both at one moment
                    // (a few more tries, each may miss when the other's row is being updated), or
                    // after those tries anyway: never a wait without end.
                    let both = try heldOnBoth(suspects.keys, other: try connection(other), own: own)
                    if both.count > 0 {
                        suspects = both
                    } else if Date() < deadline.addingTimeInterval(Self.confirmSeconds) {
                        Thread.sleep(forTimeInterval: 0.5)
                        continue
                    }
                    let sample = try sampleKeys(suspects.keys)
                    let names = plan.sources.map(\.name).filter { $0 == other || $0 == sourceName }
                    throw ReshardError.failed(
                        KeyCollisions.message(table, target: plan.targets[target].name, sources: (names[0], names[1]), keys: sample),
                        shard: plan.targets[target].name)
                }
                Thread.sleep(forTimeInterval: 0.5)
            }
        }
    }

    private func connection(_ name: String) throws -> PGConnection {
        if let conn = others[name], conn.isHealthy { return conn }
        let conn = try connect(name)
        others[name] = conn
        return conn
    }

    private var unnest: String { unnest(withVersions: false) }

    /// The keys as rows `e(k0, k1...)`, with `withVersions` two more text[] parameters: a row
    /// version each, `e.c` (ctid) and `e.x` (xmin).
    private func unnest(withVersions: Bool) -> String {
        let sql = TableSQL(table)
        let count = sql.keyColumns.count + (withVersions ? 2 : 0)
        let arrays = (0..<count).map { "$\($0 + 1)::text[]" }.joined(separator: ", ")
        let names = sql.keyColumns.indices.map { "k\($0)" } + (withVersions ? ["c", "x"] : [])
        return "unnest(\(arrays)) AS e(\(names.joined(separator: ", ")))"
    }

    /// How long `check` goes on trying to see a key on both sources at one moment once its grace is spent.
    static let confirmSeconds = 5.0

    /// Which of `keys` both `other` and `own` held for the target at one same moment (the
    /// moment `own` was read): `other`'s row version of each key, read before and after `own`,
    /// was the same one (a row version once deleted or updated never comes back, so it was
    /// there in between). A key moved between the two sources meanwhile is not among them.
    func heldOnBoth(_ keys: [Keys], other: PGConnection, own: PGConnection) throws -> (count: Int, keys: [Keys]) {
        let sql = TableSQL(table)
        let join = zip(sql.keyColumns, sql.keyTypes).enumerated().map { "t.\($1.0) = e.k\($0)::\($1.1)" }.joined(separator: " AND ")
        let belongs = plan.function.sqlShardFilter(quotedColumn: "t.\(sql.shardKey)", type: table.keyType, target: target)
        let keyArrays = sql.keyColumns.indices.map { "array_agg(e.k\($0))::text" }.joined(separator: ", ")
        let versions = try other.query(
            """
            SELECT count(*), \(keyArrays), array_agg(m.ctid::text)::text, array_agg(m.xmin::text)::text FROM \(unnest)
            CROSS JOIN LATERAL (SELECT t.ctid, t.xmin FROM \(sql.name) t WHERE \(join) AND \(belongs) LIMIT 1) m
            """, keys)
        guard try versions.get(0, 0, as: Int.self) > 0 else { return (0, []) }
        let onOwn = try own.query(
            """
            SELECT count(*), \(keyArrays), array_agg(e.c)::text, array_agg(e.x)::text FROM \(unnest(withVersions: true))
            WHERE EXISTS (SELECT 1 FROM \(sql.name) t WHERE \(join) AND \(belongs))
            """, (1..<versions.columnCount).map { Keys(pgText: versions[0, $0]) })
        guard try onOwn.get(0, 0, as: Int.self) > 0 else { return (0, []) }
        let still = try other.query(
            """
            SELECT count(*), \(keyArrays) FROM \(unnest(withVersions: true))
            WHERE EXISTS (SELECT 1 FROM \(sql.name) t WHERE \(join) AND t.ctid = e.c::tid AND t.xmin::text = e.x)
            """, (1..<onOwn.columnCount).map { Keys(pgText: onOwn[0, $0]) })
        return (try still.get(0, 0, as: Int.self), (1..<still.columnCount).map { Keys(pgText: still[0, $0]) })
    }

    /// Which of `keys` `conn` holds with a row of the target, in `check`'s form: one index lookup
    /// per key (LATERAL ... LIMIT 1, never a hash join over the whole table).
    private func held(_ keys: [Keys], on conn: PGConnection) throws -> (count: Int, keys: [Keys]) {
        let sql = TableSQL(table)
        let join = zip(sql.keyColumns, sql.keyTypes).enumerated().map { "t.\($1.0) = e.k\($0)::\($1.1)" }.joined(separator: " AND ")
        let belongs = plan.function.sqlShardFilter(quotedColumn: "t.\(sql.shardKey)", type: table.keyType, target: target)
        let columns = sql.keyColumns.indices.map { "array_agg(e.k\($0))::text" }.joined(separator: ", ")
        let result = try conn.query(
            "SELECT count(*), \(columns) FROM \(unnest) CROSS JOIN LATERAL (SELECT 1 FROM \(sql.name) t WHERE \(join) AND \(belongs) LIMIT 1) m", keys)
        return (try result.get(0, 0, as: Int.self), (1..<result.columnCount).map { Keys(pgText: result[0, $0]) })
    }

    /// Up to 10 of `keys`, for the message (asked of a server: the coordinator does not parse arrays).
    private func sampleKeys(_ keys: [Keys]) throws -> [[String]] {
        let sql = TableSQL(table)
        let names = sql.keyColumns.indices.map { "e.k\($0)" }
        let order = zip(names, sql.keyTypes).map { "\($0)::\($1)" }.joined(separator: ", ")
        let conn = try connection(sourceName == plan.sources[0].name ? plan.sources[1].name : plan.sources[0].name)
        let rows = try conn.query("SELECT \(names.joined(separator: ", ")) FROM \(unnest) ORDER BY \(order) LIMIT 10", keys)
        return (0..<rows.rowCount).map { r in names.indices.map { rows[r, $0] ?? "" } }
    }
}
