import Foundation
import LocalCluster
import PostgresClient
import XCTest

@testable import LocalCluster

final class ConnectionTests: XCTestCase {
    func testParametersTypedResultsAndTransactions() throws {
        let cluster = try TestClusters.shared.clusters()[0]
        let conn = try PGConnection.connect(try freshDatabase(on: cluster))
        try conn.execute("CREATE TABLE t (id bigint PRIMARY KEY, name text, score double precision, ok boolean)")
        try conn.query("INSERT INTO t VALUES ($1, $2, $3, $4)", [Int64(1), "O'Brien; DROP TABLE t", 2.5, true])
        try conn.query("INSERT INTO t VALUES ($1, $2, $3, $4)", [Int64(2), nil, nil, false] as [(any PGBindable)?])
        let rows = try conn.query("SELECT id, name, score, ok FROM t ORDER BY id")
        XCTAssertEqual(rows.rowCount, 2)
        XCTAssertEqual(rows.columnNames, ["id", "name", "score", "ok"])
        XCTAssertEqual(try rows.get(0, "id", as: Int64.self), 1)
        XCTAssertEqual(try rows.get(0, "name", as: String.self), "O'Brien; DROP TABLE t")
        XCTAssertEqual(try rows.get(0, "score", as: Double.self), 2.5)
        XCTAssertEqual(try rows.get(1, "ok", as: Bool.self), false)
        XCTAssertNil(try rows.get(1, "name", as: String?.self))
        XCTAssertThrowsError(try rows.get(1, "name", as: String.self))

        // A throwing transaction body rolls back.
        XCTAssertThrowsError(
            try conn.transaction { c in
                try c.query("INSERT INTO t VALUES (3, 'x', 0, true)")
                try c.query("INSERT INTO t VALUES (1, 'dup', 0, true)")
            })
        XCTAssertEqual(try conn.query("SELECT count(*) FROM t").get(0, 0, as: Int.self), 2)
        try conn.transaction { c in try c.query("INSERT INTO t VALUES (3, 'x', 0, true)") }
        XCTAssertEqual(try conn.query("SELECT count(*) FROM t").get(0, 0, as: Int.self), 3)
    }

    /// `exclusive` keeps other threads' statements off the connection until it returns: the
    /// router declares its epoch and runs the write under one hold, so another thread's
    /// declaration cannot land between them.
    func testExclusiveKeepsOtherThreadsStatementsOutUntilItReturns() throws {
        let cluster = try TestClusters.shared.clusters()[0]
        let conn = try PGConnection.connect(try freshDatabase(on: cluster))
        let entered = DispatchSemaphore(value: 0), proceed = DispatchSemaphore(value: 0)
        let otherDone = DispatchSemaphore(value: 0), firstDone = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var seen: String?  // written before firstDone is signalled, read after
        Thread {
            let value = try? conn.exclusive { c -> String? in
                try c.query("SELECT pg_catalog.set_config('reshard.test', 'first', false)")
                entered.signal()
                proceed.wait()
                return try c.query("SELECT current_setting('reshard.test')").get(0, 0, as: String.self)
            }
            seen = value ?? nil
            firstDone.signal()
        }.start()
        entered.wait()
        Thread {
            _ = try? conn.query("SELECT pg_catalog.set_config('reshard.test', 'second', false)")
            otherDone.signal()
        }.start()
        // The other thread's statement must still be waiting for the connection.
        let otherWaited = otherDone.wait(timeout: .now() + 0.5) == .timedOut
        XCTAssertTrue(otherWaited, "a statement ran inside another thread's exclusive hold")
        proceed.signal()
        firstDone.wait()
        if otherWaited { otherDone.wait() }
        XCTAssertEqual(seen, "first")
        XCTAssertEqual(try conn.query("SELECT current_setting('reshard.test')").get(0, 0, as: String.self), "second")
    }

    func testServerErrorsCarrySQLStateDetailHintAndEndpoint() throws {
        let cluster = try TestClusters.shared.clusters()[0]
        let dsn = try freshDatabase(on: cluster)
        let conn = try PGConnection.connect(try ConnectionString(dsn.unsafeRawValue, label: "s7"))
        try conn.execute("CREATE TABLE u (id int PRIMARY KEY)")
        try conn.execute("INSERT INTO u VALUES (1)")
        XCTAssertThrowsError(try conn.execute("INSERT INTO u VALUES (1)")) { error in
            let error = error as! PostgresError
            XCTAssertEqual(error.code, .server)
            XCTAssertEqual(error.sqlState, "23505")
            XCTAssertEqual(error.detail, "Key (id)=(1) already exists.")
            XCTAssertEqual(error.endpoint?.label, "s7")
            XCTAssertEqual(error.endpoint?.port, String(cluster.port))
            XCTAssertEqual(error.endpoint?.database, dsn.endpoint.database)
            XCTAssertTrue(error.summary.hasPrefix("s7 (127.0.0.1:\(cluster.port) database"), error.summary)
        }
        XCTAssertThrowsError(try conn.execute("SELECT no_such_function(1)")) { error in
            let error = error as! PostgresError
            XCTAssertEqual(error.sqlState, "42883")
            XCTAssertNotNil(error.hint)
        }
        // The connection is still usable after errors.
        XCTAssertEqual(try conn.query("SELECT 1").get(0, 0, as: Int.self), 1)
    }

    func testCancelFromAnotherThreadStopsARunningStatementQuickly() throws {
        let cluster = try TestClusters.shared.clusters()[0]
        let conn = try PGConnection.connect(cluster.connectionString())
        let observer = try PGConnection.connect(cluster.connectionString())
        let done = DispatchSemaphore(value: 0)
        let outcome = OutcomeBox()
        let thread = Thread {
            let started = Date()
            do {
                try conn.query("SELECT pg_sleep(30)")
                outcome.set(nil, Date().timeIntervalSince(started))
            } catch {
                outcome.set(error, Date().timeIntervalSince(started))
            }
            done.signal()
        }
        thread.start()
        // Wait until the server is really running the sleep before cancelling.
        XCTAssertTrue(try eventually {
            try observer.query(
                "SELECT 1 FROM pg_stat_activity WHERE pid = $1 AND state = 'active' AND query LIKE '%pg_sleep%'",
                [conn.backendPID]
            ).rowCount == 1
        })
        let cancelledAt = Date()
        XCTAssertTrue(conn.cancel())
        XCTAssertEqual(done.wait(timeout: .now() + 10), .success)
        let (error, _) = outcome.get()
        XCTAssertLessThan(Date().timeIntervalSince(cancelledAt), 2.0)
        let pgError = try XCTUnwrap(error as? PostgresError)
        XCTAssertEqual(pgError.code, .cancelled)
        XCTAssertEqual(pgError.sqlState, "57014")
        XCTAssertEqual(try conn.query("SELECT 2").get(0, 0, as: Int.self), 2)
    }

    func testConnectionFailuresNameHostPortAndDatabaseButNeverThePassword() throws {
        let cluster = try TestClusters.shared.clusters()[0]
        let secret = "Wr0ng-S3cret-\(UUID().uuidString.prefix(6))"
        let closedPort = try LocalClusterSet.freeLoopbackPort()
        let cases: [(String, String, String)] = [
            // (connection string, expected host:port, expected fragment of the reason)
            ("postgres://postgres:\(secret)@127.0.0.1:\(cluster.port)/postgres", "127.0.0.1:\(cluster.port)", "password authentication failed"),
            ("host=127.0.0.1 port=\(closedPort) dbname=reshard user=postgres password=\(secret)", "127.0.0.1:\(closedPort)", "Connection refused"),
            ("host=127.0.0.1 port=\(cluster.port) dbname=no_such_db user=postgres passfile=\(cluster.passwordFile) password=\(secret)x",
             "127.0.0.1:\(cluster.port)", "password authentication failed"),
            ("host=127.0.0.1 port=\(cluster.port) dbname=no_such_db user=postgres passfile=\(cluster.passwordFile)",
             "127.0.0.1:\(cluster.port)", "does not exist"),
        ]
        for (raw, place, reason) in cases {
            let database = try ConnectionString(raw).endpoint.database
            // Through the library...
            XCTAssertThrowsError(try PGConnection.connect(try ConnectionString(raw, label: "s0"))) { error in
                let error = error as! PostgresError
                XCTAssertEqual(error.code, .connectionFailed)
                XCTAssertFalse(error.debugDescription.contains(secret))
            }
            // ...and through the CLI, as a user sees it.
            let outcome = try ReshardCLI.run(["init", "--metadata", raw])
            XCTAssertEqual(outcome.status, 2, outcome.stderr)
            let lines = outcome.stderr.split(separator: "\n")
            XCTAssertEqual(lines.count, 1, outcome.stderr)
            XCTAssertTrue(outcome.stderr.contains(place), outcome.stderr)
            XCTAssertTrue(outcome.stderr.contains("database \"\(database)\""), outcome.stderr)
            XCTAssertTrue(outcome.stderr.contains(reason), outcome.stderr)
            XCTAssertFalse(outcome.stderr.contains(secret), outcome.stderr)
            XCTAssertFalse(outcome.stdout.contains(secret))
        }
    }
}

final class ConnectionStringMistakeTests: XCTestCase {
    /// Issue 15.7: libpq quotes back pieces of a mistyped string, which may be the password; no
    /// piece of it (4 characters or more) may appear in anything reshard prints.
    func testMistypedStringsNeverEchoAnyPartOfThePassword() throws {
        let cluster = try TestClusters.shared.clusters()[0]
        let secret = "S3cr3tPw\(UUID().uuidString.prefix(4))"
        let cases: [(String, String)] = [
            ("postgres://app:100%\(secret)@127.0.0.1:\(cluster.port)/db", "percent-encoded"),
            ("postgres://app:\(secret)/db", "connection option \"port\""),
            ("host=127.0.0.1 port=\(cluster.port) password \(secret)", "missing \"=\""),
            ("postgres://app:\(secret)@[::1/db", "IPv6"),
            ("host=127.0.0.1 port=\(cluster.port) sslmode=\(secret)", "sslmode"),
            ("host=127.0.0.1 port=\(cluster.port) hostaddr=\(secret)", "network address"),
        ]
        let pieces = (0...(secret.count - 4)).map { String(secret.dropFirst($0).prefix(4)) }
        for (raw, problem) in cases {
            let outcome = try ReshardCLI.run(["init", "--metadata", raw])
            XCTAssertEqual(outcome.status, 2, outcome.stderr)
            XCTAssertEqual(outcome.stderr.split(separator: "\n").count, 1, outcome.stderr)
            XCTAssertTrue(outcome.stderr.contains(problem), outcome.stderr)
            for piece in pieces {
                XCTAssertFalse(outcome.stderr.contains(piece) || outcome.stdout.contains(piece), "\(piece) leaked: \(outcome.stderr)")
            }
        }
    }

    /// `init` takes the metadata database from RESHARD_METADATA or the config file, so no password
    /// needs to be on the command line (where `ps` shows it).
    func testInitTakesTheMetadataFromTheEnvironmentOrTheConfig() throws {
        let cluster = try TestClusters.shared.clusters()[0]
        let fromEnvironment = try freshDatabase(on: cluster, "meta")
        let outcome = try ReshardCLI.run(["init"], environment: ["RESHARD_METADATA": fromEnvironment.unsafeRawValue])
        XCTAssertEqual(outcome.status, 0, outcome.stderr)
        XCTAssertTrue(outcome.stdout.contains(fromEnvironment.endpoint.database), outcome.stdout)
        XCTAssertEqual(try PGConnection.connect(fromEnvironment).query("SELECT to_regclass('reshard.migrations') IS NOT NULL").get(0, 0, as: Bool.self), true)

        let fixture = try PlanFixture(self)
        let config = try fixture.writeConfig()
        let fromConfig = try ReshardCLI.run(["init", "-c", config], environment: ["RESHARD_METADATA": ""])
        XCTAssertEqual(fromConfig.status, 0, fromConfig.stderr)
        XCTAssertEqual(try PGConnection.connect(fixture.metadata).query("SELECT to_regclass('reshard.migrations') IS NOT NULL").get(0, 0, as: Bool.self), true)

        let neither = try ReshardCLI.run(["init"], environment: ["RESHARD_METADATA": ""])
        XCTAssertEqual(neither.status, 2)
        XCTAssertTrue(neither.stderr.contains("RESHARD_METADATA"), neither.stderr)
        let help = try ReshardCLI.run(["help", "init"])
        XCTAssertTrue(help.stdout.contains("visible in 'ps'"), help.stdout)
    }
}

final class NoticeTests: XCTestCase {
    /// What this process writes on stderr while `body` runs.
    private func capturingStderr(_ body: () throws -> Void) throws -> String {
        var fds: [Int32] = [0, 0]
        XCTAssertEqual(pipe(&fds), 0)
        let saved = dup(2)
        dup2(fds[1], 2)
        close(fds[1])
        var failure: Error?
        do { try body() } catch { failure = error }
        dup2(saved, 2)
        close(saved)
        var captured = Data()
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(fds[0], &buffer, buffer.count)
            if n <= 0 { break }
            captured.append(contentsOf: buffer[0..<n])
        }
        close(fds[0])
        if let failure { throw failure }
        return String(decoding: captured, as: UTF8.self)
    }

    /// Issue 14: server NOTICEs ("does not exist, skipping") went straight to stderr.
    func testNoticesAreDroppedAndWarningsAreOneScrubbedLine() throws {
        let conn = try PGConnection.connect(try TestClusters.shared.clusters()[0].connectionString())
        let notices = try capturingStderr { try conn.execute("DROP TABLE IF EXISTS nosuch_\(UUID().uuidString.prefix(6).lowercased())") }
        XCTAssertEqual(notices, "")
        let warning = try capturingStderr {
            try conn.execute("DO $$ BEGIN RAISE WARNING 'careful with password=hunter2secret'; END $$")
        }
        XCTAssertEqual(warning, "reshard: warning from the server: careful with password=********\n")
    }
}

/// Carries a result out of a thread.
final class OutcomeBox: @unchecked Sendable {
    private let lock = NSLock()
    private var error: Error?
    private var elapsed: TimeInterval = 0
    func set(_ error: Error?, _ elapsed: TimeInterval) { lock.withLock { (self.error, self.elapsed) = (error, elapsed) } }
    func get() -> (Error?, TimeInterval) { lock.withLock { (error, elapsed) } }
}
