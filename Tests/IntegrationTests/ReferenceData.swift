import Foundation
import PostgresClient
import XCTest

/// The apply issue's reference data on two sources: users (keyed by id), posts (keyed by
/// user_id), likes (composite key user_id, id) and handles (keyed by text), split today by
/// user id % 2, about `scale` x 1,000,000 rows in all.
enum ReferenceData {
    static let tables: [(name: String, key: String)] = [("users", "id"), ("posts", "user_id"), ("likes", "user_id"), ("handles", "handle")]

    /// Today's router: which source a row lives on (the app writes there).
    static func route(userID: Int64) -> Int { Int(((userID % 2) + 2) % 2) }

    static func load(_ fixture: PlanFixture, scale: Double = 1.0) throws {
        let users = Int(300_000 * scale), posts = Int(500_000 * scale), likes = Int(150_000 * scale), handles = Int(50_000 * scale)
        for (k, source) in fixture.sources.enumerated() {
            try PGConnection.connect(source).execute(
                """
                CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL, email text, created timestamptz NOT NULL DEFAULT now());
                CREATE INDEX users_email ON users (email);
                CREATE TABLE posts (id bigint PRIMARY KEY, user_id bigint NOT NULL, body text NOT NULL, score numeric(10,2));
                CREATE TABLE likes (user_id bigint NOT NULL, id bigint NOT NULL, weight int NOT NULL, PRIMARY KEY (user_id, id));
                CREATE TABLE handles (handle text PRIMARY KEY, user_id bigint NOT NULL, note text);
                INSERT INTO users SELECT g, 'user ' || g, 'u' || g || '@example.com', timestamptz '2024-01-01' + g * interval '1 min'
                  FROM generate_series(1, \(users)) g WHERE g % 2 = \(k);
                INSERT INTO posts SELECT g, 1 + (g::bigint * 7919) % \(users), 'post ' || md5(g::text), (g % 1000) / 10.0
                  FROM generate_series(1, \(posts * 2)) g WHERE (1 + (g::bigint * 7919) % \(users)) % 2 = \(k);
                INSERT INTO likes SELECT 1 + (g::bigint * 104729) % \(users), g, g % 5
                  FROM generate_series(1, \(likes * 2)) g WHERE (1 + (g::bigint * 104729) % \(users)) % 2 = \(k);
                INSERT INTO handles SELECT 'h' || g || '-é', g, CASE WHEN g % 3 = 0 THEN NULL ELSE 'note' END
                  FROM generate_series(1, \(handles * 2)) g WHERE g % 2 = \(k);
                ANALYZE;
                """)
        }
    }

    /// Checks with independent SQL (Citus ranges written out, not reshard's functions) that every
    /// target holds exactly the source rows whose key maps to it.
    static func assertTargetsMatchSources(_ fixture: PlanFixture, file: StaticString = #filePath, line: UInt = #line) throws {
        let ranges: [(Int64, Int64)] = [(-2_147_483_648, -715_827_884), (-715_827_883, 715_827_881), (715_827_882, 2_147_483_647)]
        let sources = try fixture.sources.map { try PGConnection.connect($0) }
        let targets = try fixture.targets.map { try PGConnection.connect($0) }
        for (table, key) in tables {
            let hash = key == "handle" ? "hashtext(\(key))" : "hashint8(\(key))"
            let userColumn = table == "users" ? "id" : "user_id"
            for (t, (lo, hi)) in ranges.enumerated() {
                let inRange = "\(hash) BETWEEN \(lo) AND \(hi)"
                let checksum = "count(*)::text || '/' || coalesce(sum(hashtextextended(x::text, 0)), 0)::text"
                // Each source's own rows (today's placement, checked: s0's live table holds no copies).
                var expectedCount = 0, expectedSum = Decimal(0)
                for (s, source) in sources.enumerated() {
                    let row = try source.query(
                        "SELECT count(*), coalesce(sum(hashtextextended(x::text, 0)), 0)::text FROM \(table) x WHERE \(inRange) AND \(userColumn) % 2 = \(s)")
                    expectedCount += try row.get(0, 0, as: Int.self)
                    expectedSum += Decimal(string: row[0, 1]!)!
                }
                let built = fixture.targetTable(table, t)
                let actual = try targets[t].query("SELECT \(checksum) FROM \(built) x WHERE \(inRange)")[0, 0]!
                XCTAssertEqual(actual, "\(expectedCount)/\(expectedSum)", "\(table) on t\(t)", file: file, line: line)
                let stray = try targets[t].query("SELECT count(*) FROM \(built) x WHERE NOT (\(inRange))").get(0, 0, as: Int.self)
                XCTAssertEqual(stray, 0, "\(table) on t\(t) holds rows of other targets", file: file, line: line)
            }
        }
    }
}

/// An application writing to the sources while reshard runs: inserts, updates, deletes,
/// shard-key changes (within a source and across sources), and transactions that stay open for
/// seconds. A failed write is not acknowledged and the writer goes on; every failure is counted
/// by SQLSTATE, and `assertHealthy` fails the test when the load committed (nearly) nothing or
/// met an error it was not told to expect, so a test cannot pass on a load that never wrote.
final class WriteLoad: @unchecked Sendable {
    private let sources: [ConnectionString]
    private let tolerated: Set<String>
    private let lock = NSLock()
    private var running = true
    private var threads: [Thread] = []
    private let done = DispatchGroup()
    private var nextID: Int64 = 10_000_000
    private var commits = 0
    private var failures: [String: Int] = [:]
    private var unexpected: [String] = []

    /// - Parameter tolerating: SQLSTATEs or two-character classes of errors the test causes on
    ///   purpose (`"08"` and `"57P01"` while it restarts a source); a connection that cannot be
    ///   made or is lost counts as class 08. Every other error is unexpected.
    init(sources: [ConnectionString], writers: Int = 2, longTransactions: Bool = true, tolerating: Set<String> = []) {
        self.sources = sources
        self.tolerated = tolerating
        for w in 0..<writers { start("writer \(w)") { [self] conns in try writeOnce(conns) } }
        if longTransactions { start("long transactions") { [self] conns in try longTransaction(conns) } }
    }

    private func start(_ name: String, _ body: @escaping @Sendable ([PGConnection]) throws -> Void) {
        done.enter()
        let sources = self.sources
        let thread = Thread { [self] in
            var conns: [PGConnection]?
            while isRunning {
                do {
                    if conns == nil { conns = try sources.map { try PGConnection.connect($0) } }
                    try body(conns!)
                } catch {
                    failed(error)
                    conns = nil
                    usleep(100_000)
                }
            }
            done.leave()
        }
        thread.name = name
        threads.append(thread)
        thread.start()
    }

    var isRunning: Bool { lock.withLock { running } }

    /// Writes (or transactions) committed so far.
    var committed: Int { lock.withLock { commits } }

    /// Failed writes so far by SQLSTATE (`08000` for a connection that failed or was lost).
    var failuresByState: [String: Int] { lock.withLock { failures } }

    static func state(of error: Error) -> String {
        guard let error = error as? PostgresError else { return "not a PostgresError" }
        if let state = error.sqlState { return state }
        return error.code == .connectionFailed || error.code == .connectionLost ? "08000" : "\(error.code)"
    }

    private func failed(_ error: Error) {
        let state = Self.state(of: error)
        lock.withLock {
            failures[state, default: 0] += 1
            if !tolerated.contains(state), !tolerated.contains(String(state.prefix(2))), unexpected.count < 5 {
                unexpected.append("[\(state)] \((error as? PostgresError)?.summary ?? "\(error)")")
            }
        }
    }

    /// What makes the load unfit as evidence: too few commits, errors not tolerated.
    func problems(minimumCommits: Int = 50) -> [String] {
        lock.withLock {
            var problems = unexpected.map { "unexpected write error: \($0)" }
            if commits < minimumCommits { problems.append("the load committed only \(commits) write(s), fewer than \(minimumCommits)") }
            return problems
        }
    }

    /// Stops the load and fails the test for each of its `problems`.
    func assertHealthy(minimumCommits: Int = 50, file: StaticString = #filePath, line: UInt = #line) {
        stop()
        for problem in problems(minimumCommits: minimumCommits) { XCTFail(problem, file: file, line: line) }
    }

    /// Stops the writers and waits for their last transactions to finish.
    func stop() {
        lock.withLock { running = false }
        done.wait()
    }

    private func newID() -> Int64 { lock.withLock { nextID += 1; return nextID } }
    private func count() { lock.withLock { commits += 1 } }

    private func writeOnce(_ conns: [PGConnection]) throws {
        let uid = Int64.random(in: 1...300_000)
        let s = ReferenceData.route(userID: uid)
        switch Int.random(in: 0..<10) {
        case 0, 1:
            let id = newID()
            try conns[ReferenceData.route(userID: id)].query("INSERT INTO users (id, name) VALUES ($1, 'new')", [id])
            try conns[s].query("INSERT INTO posts (id, user_id, body) VALUES ($1, $2, 'fresh')", [newID(), uid])
        case 2, 3:
            try conns[s].query("UPDATE users SET name = name || '!', email = NULL WHERE id = $1", [uid])
            try conns[s].query("UPDATE posts SET body = body || '+', score = 1.5 WHERE id = (SELECT min(id) FROM posts WHERE user_id = $1)", [uid])
        case 4:
            try conns[s].query("DELETE FROM likes WHERE user_id = $1", [uid])
            try conns[s].query("DELETE FROM posts WHERE id = (SELECT max(id) FROM posts WHERE user_id = $1)", [uid])
        case 5:
            try conns[s].query("INSERT INTO likes VALUES ($1, $2, 9) ON CONFLICT DO NOTHING", [uid, newID()])
            try conns[s].query("INSERT INTO handles VALUES ($1, $2, 'n') ON CONFLICT DO NOTHING", ["new-\(newID())", uid])
        case 6:
            // Shard-key change within a source: the post moves to another user of the same parity.
            let other = uid + 2 <= 300_000 ? uid + 2 : uid - 2
            try conns[s].query("UPDATE posts SET user_id = $2 WHERE id = (SELECT min(id) FROM posts WHERE user_id = $1)", [uid, other])
            try conns[s].query("UPDATE handles SET handle = handle || 'x' WHERE handle = (SELECT min(handle) FROM handles WHERE user_id = $1)", [uid])
        case 7:
            // Shard-key change across sources: the app moves the like to the other shard.
            let other = uid + 1 <= 300_000 ? uid + 1 : uid - 1
            let moved = try conns[s].query("DELETE FROM likes WHERE (user_id, id) = (SELECT user_id, id FROM likes WHERE user_id = $1 LIMIT 1) RETURNING id, weight", [uid])
            if moved.rowCount == 1 {
                try conns[1 - s].query("INSERT INTO likes VALUES ($1, $2, $3) ON CONFLICT DO NOTHING", [other, moved[0, 0]!, moved[0, 1]!])
            }
        default:
            try conns[s].transaction { c in
                try c.query("UPDATE users SET created = created + interval '1 second' WHERE id = $1", [uid])
                try c.query("UPDATE likes SET weight = weight + 1 WHERE user_id = $1", [uid])
            }
        }
        count()
        usleep(2_000)
    }

    /// Writes early in a transaction, keeps it open for seconds, then commits: its changelog ids
    /// are lower than entries written and applied meanwhile.
    private func longTransaction(_ conns: [PGConnection]) throws {
        let uid = Int64.random(in: 1...300_000)
        try conns[ReferenceData.route(userID: uid)].transaction { c in
            try c.query("UPDATE users SET name = 'slow ' || id WHERE id = $1", [uid])
            try c.query("INSERT INTO posts (id, user_id, body) VALUES ($1, $2, 'slow')", [newID(), uid])
            try c.query("SELECT pg_sleep(2.5)")
            try c.query("UPDATE posts SET body = 'slow, committed' WHERE user_id = $1", [uid])
        }
        count()
    }
}
