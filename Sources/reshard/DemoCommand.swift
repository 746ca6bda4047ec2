import ReshardRouting
import ArgumentParser
import Foundation
import LocalCluster
import PostgresClient
import ReshardCore

/// `reshard demo`: the README's main job. On throwaway local clusters: seeds a small social data
/// set (users, posts, comments keyed by user id) on 2 shards split by `user_id % 2`, plans a move
/// to 3 shards by hash (one of them a source database), applies it and verifies it while an
/// application keeps writing, prints a summary, and removes the clusters.
struct DemoCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Run reshard end to end on throwaway local PostgreSQL clusters, then remove them.")

    @Option(name: .long, help: "Users to seed (posts x3, comments x5).")
    var users = 20_000

    func validate() throws {
        guard (100...5_000_000).contains(users) else { throw ValidationError("--users must be between 100 and 5000000") }
    }

    func run() throws {
        TerminationSignal.install()
        let started = Date()
        Console.out("starting 3 throwaway local PostgreSQL clusters...")
        try LocalClusterSet.with(count: 3) { set in
            let c = set.clusters
            let s0 = try c[0].createDatabase("app"), s1 = try c[1].createDatabase("app")
            let t1 = try c[1].createDatabase("app_new"), t2 = try c[2].createDatabase("app")
            let metadata = try c[0].createDatabase("reshard")
            Console.out("clusters up on ports \(c.map { String($0.port) }.joined(separator: ", ")) (in \(set.directory))")

            Console.out("seeding \(users) users, \(users * 3) posts, \(users * 5) comments on 2 shards (user_id % 2)...")
            for (k, dsn) in [s0, s1].enumerated() { try seed(dsn, shard: k) }

            let config = ReshardConfig(
                file: "demo", migration: "demo-2-to-3", metadata: metadata,
                sources: [.init(name: "s0", dsn: s0, line: 0), .init(name: "s1", dsn: s1, line: 0)],
                targets: [.init(name: "t0", dsn: s0, line: 0), .init(name: "t1", dsn: t1, line: 0), .init(name: "t2", dsn: t2, line: 0)],
                function: try ShardFunction(kind: .hash, shardCount: 3),
                sourceFunction: try ShardFunction(kind: .modulo, shardCount: 2),
                tables: ["users", "posts", "comments"].map {
                    .init(name: QualifiedName($0), key: $0 == "users" ? "id" : "user_id", line: 0)
                })
            let target = try MigrationTarget.fromConfig(config)
            Console.out("\n$ reshard plan\n" + target.plan.text + "\n")

            Console.out("$ reshard apply   (an application keeps writing to both shards meanwhile)")
            let load = DemoWriteLoad(sources: [s0, s1], users: users)
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
            let writes = load.stop()
            Console.out(result.text)
            let verified = result.tables.reduce(Int64(0)) { $0 + $1.sourceRows }
            Console.out(
                """

                summary: moved \(status.rowsCopied.grouped) rows 2 -> 3 shards in \(String(format: "%.1f", applySeconds)) s \
                (\(Int64(Double(status.rowsCopied) / max(applySeconds, 0.001)).grouped) rows/s) \
                while the application committed \(writes) write transactions; \
                changes applied by the catch-up: \(status.catchUp.reduce(0) { $0 + $1.appliedTotal });
                verify: \(result.identical ? "identical" : "DIFFERENT"), \(verified.grouped) rows compared in \(String(format: "%.1f", result.seconds)) s
                """)
            if !result.identical { throw ReshardError.failed("the demo's verification found differences") }
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

/// A small application writing to both shards during the demo, routed by user_id % 2.
final class DemoWriteLoad: @unchecked Sendable {
    private let lock = NSLock()
    private var running = true
    private var committed = 0
    private let done = DispatchGroup()

    init(sources: [ConnectionString], users: Int) {
        done.enter()
        Thread { [self] in
            var conns: [PGConnection]?
            var next = Int64(users * 10)
            while lock.withLock({ running }) {
                do {
                    if conns == nil { conns = try sources.map { try PGConnection.connect($0, applicationName: "demo app") } }
                    let uid = Int64.random(in: 1...Int64(users))
                    let shard = conns![Int(uid % 2)]
                    next += 1
                    switch Int.random(in: 0..<4) {
                    case 0: try shard.query("INSERT INTO posts VALUES ($1, $2, 'new post')", [next, uid])
                    case 1: try shard.query("UPDATE users SET name = name || '*' WHERE id = $1", [uid])
                    case 2: try shard.query("DELETE FROM comments WHERE (user_id, id) IN (SELECT user_id, id FROM comments WHERE user_id = $1 LIMIT 1)", [uid])
                    default: try shard.query("INSERT INTO comments VALUES ($1, $2, 1, 'new comment')", [uid, next])
                    }
                    lock.withLock { committed += 1 }
                    usleep(3_000)
                } catch {
                    conns = nil
                }
            }
            done.leave()
        }.start()
    }

    /// Stops writing and returns the number of committed write transactions.
    func stop() -> Int {
        lock.withLock { running = false }
        done.wait()
        return lock.withLock { committed }
    }
}
