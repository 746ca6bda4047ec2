import ReshardRouting
import ArgumentParser
import Foundation
import LocalCluster
import PostgresClient
import ReshardCore
import ReshardRouter

/// `reshard demo`: the README's main job. On throwaway local clusters: seeds a small social data
/// set (users, posts, comments keyed by user id) on 2 shards split by `user_id % 2`, plans a move
/// to 3 shards by hash, applies it and verifies it while an application keeps writing, then cuts
/// over, rolls back, cuts over again and cleans up under the same writes (the application routes
/// by the published shard map and retries a write the fence refuses), prints how long each switch
/// held writes up, and removes the clusters. The targets are databases of their own: cutover does
/// not swap tables on a database that is also a source yet.
struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run reshard end to end on throwaway local PostgreSQL clusters, then remove them.")

    @Option(name: .long, help: "Users to seed (posts x3, comments x5).")
    var users = 20_000

    @Option(name: .long, parsing: .unconditional, help: "Target shards.")
    var targets = 3

    @Option(name: .long, parsing: .unconditional, help: "Cutover + rollback pairs before the final cutover (bench: 10).")
    var cycles = 1

    @Option(name: .long, parsing: .unconditional, help: "The application's write rate during the switches (100/s before).")
    var writesPerSecond = 300

    func validate() throws {
        guard (100...5_000_000).contains(users) else { throw ValidationError("--users must be between 100 and 5000000") }
        guard (2...16).contains(targets) else { throw ValidationError("--targets must be between 2 and 16") }
        guard (0...100).contains(cycles) else { throw ValidationError("--cycles must be between 0 and 100") }
        guard (1...20_000).contains(writesPerSecond) else { throw ValidationError("--writes-per-second must be between 1 and 20000") }
    }

    func run() throws {
        TerminationSignal.install()
        let started = Date()
        Console.out("starting 3 throwaway local PostgreSQL clusters...")
        try LocalClusterSet.with(count: 3) { set in
            let c = set.clusters
            let s0 = try c[0].createDatabase("app"), s1 = try c[1].createDatabase("app")
            let news = try (0..<targets).map { try c[$0 % 3].createDatabase("app_new\($0)") }
            let metadata = try c[0].createDatabase("reshard")
            Console.out("clusters up on ports \(c.map { String($0.port) }.joined(separator: ", ")) (in \(set.directory))")

            Console.out("seeding \(users) users, \(users * 3) posts, \(users * 5) comments on 2 shards (user_id % 2)...")
            for (k, dsn) in [s0, s1].enumerated() { try seed(dsn, shard: k) }

            let oldFunction = try ShardFunction(kind: .modulo, shardCount: 2)
            let newFunction = try ShardFunction(kind: .hash, shardCount: targets)
            let config = ReshardConfig(
                file: "demo", migration: "demo-2-to-\(targets)", metadata: metadata,
                sources: [.init(name: "s0", dsn: s0, line: 0), .init(name: "s1", dsn: s1, line: 0)],
                targets: news.enumerated().map { .init(name: "t\($0.offset)", dsn: $0.element, line: 0) },
                function: newFunction, sourceFunction: oldFunction,
                tables: ["users", "posts", "comments"].map {
                    .init(name: QualifiedName($0), key: $0 == "users" ? "id" : "user_id", line: 0)
                })
            let target = try MigrationTarget.fromConfig(config)
            Console.out("\n$ reshard plan\n" + target.plan.text + "\n")

            Console.out("$ reshard apply   (an application keeps writing meanwhile, routed by the shard map)")
            let load = DemoWriteLoad(
                metadata: metadata, migration: config.migration, old: [s0, s1], new: news, oldFunction: oldFunction, newFunction: newFunction,
                users: users, writesPerSecond: 100)
            let progress = ProgressPrinter(json: false)
            let applyStarted = Date()
            var options = ApplyOptions()
            options.goal = .caughtUp
            try Coordinator(plan: target.plan, shards: target.shards, metadata: metadata, options: options)
                .run(shouldStop: { TerminationSignal.received }, report: progress.show)
            let applySeconds = Date().timeIntervalSince(applyStarted)
            let status = try MigrationStatus.read(migration: config.migration, from: try PGConnection.connect(metadata))

            Console.out("\n$ reshard verify   (the application still writes; the catch-up is verify's to run now)")
            let verifier = try Verifier(plan: target.plan, shards: target.shards, metadata: metadata, options: VerifyOptions())
            let printer = VerifyProgressPrinter(json: false)
            let result = try verifier.run(shouldStop: { TerminationSignal.received }, report: printer.show)
            printer.clear()
            Console.out(result.text)
            let verified = result.tables.reduce(Int64(0)) { $0 + $1.sourceRows }
            if !result.identical { throw ReshardError.failed("the demo's verification found differences") }

            load.setRate(writesPerSecond)
            var stalls: [(command: String, coordinator: Double, client: Double)] = []
            let commands = Array(repeating: [CutoverStateMachine.Direction.cutover, .rollback], count: cycles).flatMap { $0 } + [.cutover]
            for command in commands where !TerminationSignal.received {
                Console.out("\n$ reshard \(command.rawValue)   (the application keeps writing)")
                let switchStarted = Date()
                let report = try LayoutSwitch(shards: target.shards, metadata: metadata, options: SwitchOptions()) { Console.plain($0) }
                    .run(command, migration: config.migration)
                // The application's view: the longest any write issued during this switch took,
                // from its first attempt (retries after the fence included).
                let client = load.longestWait(from: switchStarted, to: Date(), waitingUntil: Date().addingTimeInterval(0.5))
                for line in report.lines.suffix(1) { Console.out(line) }
                let held = report.steps.filter { CutoverStateMachine.Step(rawValue: $0.step)?.stalls ?? false }
                Console.out("  " + held.map { String(format: "%@ %.0f ms", $0.step, $0.milliseconds) }.joined(separator: ", "))
                Console.out(String(format: "the application's longest write took %.0f ms", client * 1000))
                stalls.append((command.rawValue, report.stallMilliseconds ?? 0, client * 1000))
            }
            Console.out("\n$ reshard cleanup --drop-sources")
            let cleanup = try MigrationCleanup.run(
                migration: config.migration, metadata: metadata, shards: target.shards, after: nil, dropSources: true)
            for line in cleanup.done { Console.out("removed \(line)") }
            let writes = load.stop()
            if !load.problems.isEmpty { throw ReshardError.failed("the demo's application saw: \(load.problems.prefix(3).joined(separator: "; "))") }
            let sorted = stalls.map(\.client).sorted()
            func percentile(_ p: Double) -> Double { sorted.isEmpty ? 0 : sorted[min(sorted.count - 1, Int((p * Double(sorted.count)).rounded(.up)) - 1)] }
            Console.out(
                """

                summary: moved \(status.rowsCopied.grouped) rows 2 -> \(targets) shards in \(String(format: "%.1f", applySeconds)) s \
                (\(Int64(Double(status.rowsCopied) / max(applySeconds, 0.001)).grouped) rows/s) \
                while the application committed \(writes) write transactions; \
                changes applied by the catch-up: \(status.catchUp.reduce(0) { $0 + $1.appliedTotal });
                verify: identical, \(verified.grouped) rows compared in \(String(format: "%.1f", result.seconds)) s
                """)
            for (n, stall) in stalls.enumerated() {
                Console.out(String(format: "switch %d (%@): writes held %.0f ms by the coordinator's clock, the application's longest write %.0f ms",
                                   n + 1, stall.command, stall.coordinator, stall.client))
            }
            Console.out(String(format: "write stall seen by the application over %d switches: p50 %.0f ms, p99 %.0f ms, max %.0f ms",
                               stalls.count, percentile(0.5), percentile(0.99), sorted.last ?? 0))
        }
        Console.out(String(format: "removed the clusters; demo finished in %.1f s", Date().timeIntervalSince(started)))
    }

    private func seed(_ dsn: ConnectionString, shard k: Int) throws {
        try PGConnection.connect(dsn).execute(
            """
            CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, joined timestamptz NOT NULL DEFAULT now());
            CREATE TABLE posts (id bigint PRIMARY KEY, user_id bigint NOT NULL, body text NOT NULL);
            CREATE INDEX posts_user ON posts (user_id);
            CREATE TABLE comments (user_id bigint NOT NULL, id bigint NOT NULL, post_id bigint NOT NULL, body text,
                                   PRIMARY KEY (user_id, id));
            INSERT INTO users (id, name) SELECT g, 'user ' || g FROM generate_series(1, \(users)) g WHERE g % 2 = \(k);
            INSERT INTO posts SELECT g, 1 + g % \(users), 'post ' || g FROM generate_series(1, \(users * 3)) g
              WHERE (1 + g % \(users)) % 2 = \(k);
            INSERT INTO comments SELECT 1 + (g * 7) % \(users), g, g % \(users * 3), 'comment ' || g
              FROM generate_series(1, \(users * 5)) g WHERE (1 + (g * 7) % \(users)) % 2 = \(k);
            ANALYZE;
            """)
    }
}

/// The demo's application: writes at a fixed rate, routes each by the published shard map
/// (`ShardMapStore`, the map `ReshardRouter` loads), and retries a write the fence refuses after
/// reading the map again, as an application with `ReshardRouter` does. It records how long each
/// write took, retries included: that is the stall a switch costs it.
final class DemoWriteLoad: @unchecked Sendable {
    private let lock = NSLock()
    private var running = true
    private var committed = 0
    private var slow: [(start: Date, seconds: Double)] = []
    private(set) var problems: [String] = []
    private let done = DispatchGroup()
    private let threads: Int
    /// Seconds between two writes of one thread.
    private var interval: Double

    /// Changes the write rate from the next write on.
    func setRate(_ writesPerSecond: Int) { lock.withLock { interval = Double(threads) / Double(writesPerSecond) } }

    init(
        metadata: ConnectionString, migration: String, old: [ConnectionString], new: [ConnectionString], oldFunction: ShardFunction,
        newFunction: ShardFunction, users: Int, writesPerSecond: Int, threads: Int = 4
    ) {
        self.threads = threads
        interval = Double(threads) / Double(writesPerSecond)
        for t in 0..<threads {
            done.enter()
            Thread { [self] in
                defer { done.leave() }
                var conns: [String: PGConnection] = [:]
                var next = Int64(users * 10 + t)
                var due = Date()
                do {
                    let meta = try PGConnection.connect(metadata, applicationName: "demo app")
                    // As ReshardRouter: a refused write waits for the metadata database's announcement.
                    try meta.execute("LISTEN \(ReshardRouter.announcementChannel)")
                    let byName = Dictionary(uniqueKeysWithValues: (old.enumerated().map { ("s\($0.offset)", $0.element) })
                        + new.enumerated().map { ("t\($0.offset)", $0.element) })
                    // The published shard map (before apply registers the migration: the old layout).
                    func current() throws -> ShardMap {
                        try ShardMapStore.current(migration: migration, on: meta)
                            ?? ShardMap(migration: migration, epoch: 1, function: oldFunction,
                                        shards: (0..<old.count).map { .init(name: "s\($0)", dsn: "") }, tables: [])
                    }
                    var map = try current()
                    while lock.withLock({ running }) {
                        let uid = Int64.random(in: 1...Int64(users))
                        next += Int64(threads)
                        let op = Int.random(in: 0..<4)
                        let started = Date()
                        var pause = 0.001
                        var reloaded = Date.distantPast
                        var heard = false
                        while true {
                            let dsn = byName[map.shards[try map.function.shard(for: .int(uid, .bigint))].name]!
                            do {
                                if conns[dsn.unsafeRawValue] == nil { conns[dsn.unsafeRawValue] = try PGConnection.connect(dsn, applicationName: "demo app") }
                                let conn = conns[dsn.unsafeRawValue]!
                                switch op {
                                case 0: try conn.query("INSERT INTO posts VALUES ($1, $2, 'new post')", [next, uid])
                                case 1: try conn.query("UPDATE users SET name = name || '*' WHERE id = $1", [uid])
                                case 2: try conn.query("DELETE FROM comments WHERE (user_id, id) IN (SELECT user_id, id FROM comments WHERE user_id = $1 LIMIT 1)", [uid])
                                default: try conn.query("INSERT INTO comments VALUES ($1, $2, 1, 'new comment')", [uid, next])
                                }
                                break
                            } catch let error as PostgresError where [FenceSQLState.staleEpoch, FenceSQLState.misrouted].contains(error.sqlState ?? "") {
                                // Refused by the fence: as ReshardRouter does, read the map again (after the
                                // first refusal, an announcement, else at most every longest pause) and retry
                                // the same write, at once by a newer epoch or after an announcement, else once
                                // one is heard or a pause doubling from 1 ms has passed.
                                if heard || Date().timeIntervalSince(reloaded) >= ReshardRouter.longestFencePause {
                                    reloaded = Date()
                                    let epoch = map.epoch
                                    map = try current()
                                    if map.epoch != epoch || heard {
                                        pause = 0.001
                                        heard = false
                                        continue
                                    }
                                }
                                heard = try meta.notifications(waitingUpTo: pause).contains { $0.payload == migration }
                                pause = min(pause * 2, ReshardRouter.longestFencePause)
                            }
                        }
                        let took = Date().timeIntervalSince(started)
                        lock.withLock {
                            committed += 1
                            if took > 0.01 { slow.append((started, took)) }
                        }
                        due = max(due.addingTimeInterval(lock.withLock { interval }), Date().addingTimeInterval(-1))
                        let wait = due.timeIntervalSinceNow
                        if wait > 0 { usleep(useconds_t(wait * 1_000_000)) }
                    }
                } catch {
                    lock.withLock { problems.append((error as? PostgresError)?.summary ?? "\(error)") }
                }
            }.start()
        }
    }

    /// The longest write whose first attempt started between `from` and `to` (one switch: the
    /// writes of the switch before it are not counted again), once those in flight ended (by
    /// `until`, past any switch's `--max-stall`-bounded stall).
    func longestWait(from: Date, to: Date, waitingUntil until: Date) -> Double {
        while Date() < until { usleep(50_000) }
        return lock.withLock { slow.filter { $0.start >= from && $0.start <= to }.map(\.seconds).max() ?? 0 }
    }

    /// Stops writing and returns the number of committed write transactions.
    func stop() -> Int {
        lock.withLock { running = false }
        done.wait()
        return lock.withLock { committed }
    }
}
