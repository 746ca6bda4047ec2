import Foundation
import PostgresClient

/// The barrier behind the fence: `LOCK TABLE ... IN EXCLUSIVE MODE` on every migrated table of
/// every database of the serving layout, taken in parallel under one `lock_timeout`. EXCLUSIVE
/// blocks writers, not readers, and is granted only once every transaction that wrote those
/// tables has ended: once all are held, every acknowledged write is in a changelog, and a write
/// still to come waits for the lock and then meets the fence, flipped while the locks are held.
/// A transaction that wrote before and commits later cannot exist: the lock waited for it.
///
/// The locks are kept through the drain and the sequence check (`LayoutSwitch` releases them
/// before the swap, whose DDL they would block): a writer that arrives meanwhile waits in the
/// lock queue instead of meeting the fence and retrying, so the applications' retries neither
/// load the machine the drain runs on nor add their backoff to the stall; the drain only reads
/// the locked tables (EXCLUSIVE lets readers through) and writes the other layout.
final class CutoverBarrier {
    private let held: [(shard: String, conn: PGConnection)]

    /// Opens a session on every place, before the stall: taking the locks is then all the barrier waits for.
    static func prepare(
        places: [(shard: String, names: [QualifiedName])], connect: (String) throws -> PGConnection
    ) throws -> CutoverBarrier {
        CutoverBarrier(held: try places.map { (shard: $0.shard, conn: try connect($0.shard)) }, places: places)
    }

    private let places: [(shard: String, names: [QualifiedName])]

    private init(held: [(shard: String, conn: PGConnection)], places: [(shard: String, names: [QualifiedName])]) {
        self.held = held
        self.places = places
    }

    /// Takes the locks on every place at once; when one is not granted within `lockTimeout`
    /// seconds every lock is released and the error names the shard (and who held it up).
    func lock(lockTimeout: Double, connect: (String) throws -> PGConnection) throws {
        let connections = held
        let places = self.places
        let milliseconds = max(1, Int(lockTimeout * 1000))
        let statements = try zip(places, connections).map { place, held in
            "LOCK TABLE \(try place.names.map { try held.conn.quote($0) }.joined(separator: ", ")) IN EXCLUSIVE MODE"
        }
        let failures = FirstError()
        let done = DispatchGroup()
        for (index, held) in connections.enumerated() {
            done.enter()
            let statement = statements[index]
            let thread = Thread {
                defer { done.leave() }
                do {
                    try held.conn.execute("BEGIN; SET LOCAL lock_timeout = '\(milliseconds)ms'")
                    try held.conn.execute(statement)
                } catch {
                    failures.record(error, shard: held.shard)
                }
            }
            thread.name = "reshard barrier \(held.shard)"
            thread.start()
        }
        done.wait()
        guard let (error, shard) = failures.first else { return }
        let blocker = (try? blockers(on: shard, connect: connect)) ?? nil
        for held in connections { _ = try? held.conn.execute("ROLLBACK") }
        let why = (error as? PostgresError)?.sqlState == "55P03"
            ? "the tables were not free to lock within \(milliseconds) ms" + (blocker.map { " (\($0))" } ?? "")
            : (error as? PostgresError)?.summary ?? "\(error)"
        released = true
        throw ReshardError.failed(why, shard: shard)
    }

    /// Who holds a lock on the migrated tables of `shard` now: `pid N, in a transaction for S s`.
    private func blockers(on shard: String, connect: (String) throws -> PGConnection) throws -> String? {
        guard let place = places.first(where: { $0.shard == shard }) else { return nil }
        let conn = try connect(shard)
        let names = try place.names.map { try conn.quote($0) }
        let row = try conn.query(
            """
            SELECT a.pid, round(extract(epoch FROM now() - a.xact_start))::int FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
            WHERE l.granted AND l.relation = ANY (SELECT to_regclass(n)::oid FROM unnest($1::text[]) n) AND a.pid <> pg_backend_pid()
              AND a.backend_type = 'client backend'
            ORDER BY a.xact_start LIMIT 1
            """, [names])
        guard row.rowCount == 1 else { return nil }
        return "a transaction holds a lock on them: pid \(row[0, 0] ?? "?"), open for \(row[0, 1] ?? "?") s"
    }

    /// The barrier's sessions by shard (the fence flips on them while the locks are held).
    var sessions: [String: PGConnection] {
        Dictionary(held.map { ($0.shard, $0.conn) }, uniquingKeysWith: { first, _ in first })
    }

    /// Runs `body` on every connection at once, a thread each (libpq blocks): the fence flips
    /// on every database take one round trip, not one per database (the swap too). Throws the
    /// first error, as `failure` makes it of the error and the shard (default: as it is).
    static func inParallel(
        _ work: [(shard: String, conn: PGConnection)], thread: String = "reshard fence",
        _ body: @escaping @Sendable (_ shard: String, _ conn: PGConnection) throws -> Void,
        failure: (any Error, _ shard: String) -> any Error = { error, _ in error }
    ) throws {
        guard work.count > 1 else {
            for item in work {
                do { try body(item.shard, item.conn) } catch { throw failure(error, item.shard) }
            }
            return
        }
        let failures = FirstError()
        let done = DispatchGroup()
        for item in work {
            done.enter()
            let worker = Thread {
                defer { done.leave() }
                do { try body(item.shard, item.conn) } catch { failures.record(error, shard: item.shard) }
            }
            worker.name = "\(thread) \(item.shard)"
            worker.start()
        }
        done.wait()
        if let (error, shard) = failures.first { throw failure(error, shard) }
    }

    private var released = false

    /// Ends the lock transactions: the writers waiting for them go on, into the fence. Once.
    func release() {
        guard !released else { return }
        released = true
        for held in held { _ = try? held.conn.execute("COMMIT") }
    }

    /// The first error of parallel work, with the shard it happened on.
    final class FirstError: @unchecked Sendable {
        private let lock = NSLock()
        private(set) var first: (any Error, String)?
        func record(_ error: any Error, shard: String) {
            lock.withLock { if first == nil { first = (error, shard) } }
        }
    }
}

/// Applies changelogs with the catch-up (`CatchUpApplier`), every source and group of tables in
/// parallel: before the stall until the backlog is small, and behind the fence until it is empty.
/// Its appliers (and their sessions) are made once, before the stall, and serve both.
///
/// **Tables in parallel.** One applier per (source, group of tables), at most `maxTableGroups`
/// groups: a round of one applier runs its tables one after another (a read of the log, the
/// lanes, a delete, per table), and inside the stall those waits add up. The appliers share one
/// `CatchUpGate`, whose lock per (table, target) is what makes concurrent lanes converge, so
/// splitting by table changes no ordering the catch-up relies on; its slots allow the drain's
/// `--max-connections-per-shard` per group, the sessions being open already.
final class CutoverDrain {
    private let plan: Plan
    private let appliers: [(source: String, tables: [Plan.Table], applier: CatchUpApplier)]
    private let groupCount: Int
    /// At most this many appliers per source (each has a session per lane and the source).
    static let maxTableGroups = 4
    /// How long after the release `retire` waits: the writers the fence held retry within a
    /// few milliseconds of it (routers wake on the announcement), so their first writes are done.
    static let retirePause: TimeInterval = 0.03

    init(plan: Plan, maxConnectionsPerShard: Int, connect: @escaping @Sendable (String) throws -> PGConnection) throws {
        self.plan = plan
        let groups = Self.groups(
            plan.tables, count: Self.groupCount(tables: plan.tables.count, targets: plan.targets.count, maxConnectionsPerShard: maxConnectionsPerShard))
        groupCount = groups.count
        let gate = CatchUpGate(limitPerShard: maxConnectionsPerShard * groups.count)
        appliers = try plan.sources.flatMap { source in
            try groups.map { (source: source.name, tables: $0, applier: try CatchUpApplier.connecting(plan: plan, source: source.name, gate: gate, connect: connect)) }
        }
    }

    /// How many appliers per source: each holds 1 + `targets` sessions on its source (and one on
    /// each target) from the catch-up step through the stall, while the application runs, so the
    /// groups are as many as fit in 4 x `--max-connections-per-shard` sessions per source (16 by
    /// default), at most `maxTableGroups`, never fewer than one. 2 -> 4 gets 3 groups; 8 -> 16
    /// gets 1 (17 sessions per source, as one applier always had): four would be 68.
    static func groupCount(tables: Int, targets: Int, maxConnectionsPerShard: Int) -> Int {
        max(1, min(maxTableGroups, tables, 4 * maxConnectionsPerShard / (1 + targets)))
    }

    /// `tables` dealt into at most `count` groups, in turn (none empty).
    static func groups(_ tables: [Plan.Table], count: Int) -> [[Plan.Table]] {
        let n = max(1, min(count, tables.count))
        return (0..<n).map { g in tables.indices.filter { $0 % n == g }.map { tables[$0] } }
    }

    /// Applies the changelogs until a round of every source applies at most `leave` entries
    /// (its groups a share each) having read all there was (0: the logs are empty). Throws when `deadline` passes first,
    /// naming the source. Returns the entries applied.
    ///
    /// `fenced`: the barrier has waited for every writer and the fence refuses new ones, so
    /// nothing enters the logs any more and the first round that read everything there was
    /// leaves them empty: no second round to find nothing (a round costs a few round trips per
    /// table and target, which inside the stall is most of it).
    ///
    /// `rounds`: return (without throwing) after that many rounds of each applier, drained or
    /// not: the catch-up's last pass right before the stall takes a few quick rounds, each
    /// leaving less for the fenced drain (a round's entries are those written while the last
    /// one ran), down to `leave`, without ever waiting out the deadline under the writes.
    func run(leave: Int, deadline: Date, fenced: Bool = false, rounds: Int? = nil) throws -> Int {
        let failures = CutoverBarrier.FirstError()
        let applied = Counter()
        let done = DispatchGroup()
        let leave = leave == 0 ? 0 : max(1, leave / groupCount)
        for (source, tables, applier) in appliers {
            done.enter()
            let thread = Thread {
                defer { done.leave() }
                do {
                    var taken = 0
                    while true {
                        let round = try applier.applyRound(tables: tables)
                        applied.add(round.applied)
                        taken += 1
                        if round.drained && (fenced || round.applied <= leave) { return }
                        if let rounds, taken >= rounds { return }
                        if Date() > deadline {
                            throw ReshardError.failed("the changelog of \(source) was not applied in time (\(round.applied) entries in the last round)",
                                                      shard: source)
                        }
                    }
                } catch {
                    failures.record(error, shard: source)
                }
            }
            thread.name = "reshard drain \(source)"
            thread.start()
        }
        done.wait()
        if let (error, shard) = failures.first {
            if let error = error as? ReshardError { throw error }
            throw ReshardError.failed("applying the changelog of \(shard): \((error as? PostgresError)?.summary ?? "\(error)")", shard: shard)
        }
        return applied.value
    }

    /// Drops the appliers' temp tables (key sets, staging) one session at a time, `after` the
    /// release, so that closing the sessions then is cheap. A backend that exits drops its temp
    /// tables on the way out: the drain's few dozen sessions closed together dropped theirs all at
    /// once, on the databases the writers had just returned to, and each drop's catalog deletions
    /// and invalidations reached those writers' backends while they resumed (the application's
    /// longest write ran up to 200 ms past the coordinator's stall). One at a time, the burst is
    /// spread out. Errors are ignored: the switch is done, and a closed session drops them anyway.
    func retire(after pause: TimeInterval) {
        Thread.sleep(forTimeInterval: pause)
        for session in appliers.flatMap(\.applier.sessions) where session.isHealthy {
            _ = try? session.execute("DISCARD TEMP")
        }
    }

    final class Counter: @unchecked Sendable {
        private let lock = NSLock()
        private var total = 0
        func add(_ n: Int) { lock.withLock { total += n } }
        var value: Int { lock.withLock { total } }
    }
}
