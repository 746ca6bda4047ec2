import Foundation
import LocalCluster
import PostgresClient
import XCTest

final class CopyTests: XCTestCase {
    /// Acceptance: 1,000,000 rows through a binary COPY relay, identical by an independent
    /// checksum, with the process's peak memory under 100 MB.
    func testBinaryRelayOfAMillionRowsIsIdenticalAndUsesBoundedMemory() throws {
        let clusters = try TestClusters.shared.clusters()
        let source = try PGConnection.connect(try freshDatabase(on: clusters[0], "src"))
        let target = try PGConnection.connect(try freshDatabase(on: clusters[1], "dst"))
        let ddl = """
            CREATE TABLE big (id bigint PRIMARY KEY, user_id int NOT NULL, title text, body text,
                              score numeric(12,3), created timestamptz, tags text[], doc jsonb, flag boolean)
            """
        try source.execute(ddl)
        try target.execute(ddl)
        try source.execute(
            """
            INSERT INTO big
            SELECT g, g % 9973, 'title ' || g, repeat(md5(g::text), 2), g / 7.0,
                   timestamptz '2020-01-01' + g * interval '1 second', ARRAY['a' || g % 5, 'b'],
                   jsonb_build_object('k', g, 'nested', jsonb_build_array(g % 3, null)), g % 2 = 0
            FROM generate_series(1, 1000000) g
            """)

        let peakBefore = try resetPeakMemory()
        let stats = try PGConnection.relayCopy(
            from: source, "COPY big TO STDOUT (FORMAT binary)", to: target, "COPY big FROM STDIN (FORMAT binary)")
        let peakMB = Double(try peakResidentBytes()) / 1_048_576
        XCTAssertEqual(stats.rows, 1_000_000)
        XCTAssertGreaterThan(stats.bytes, 100_000_000, "the relay must really have carried the table")
        XCTAssertLessThan(peakMB, 100, "peak RSS \(peakMB) MB (reset: \(peakBefore))")

        let checksum = "SELECT count(*), sum(hashtextextended(b::text, 0)) FROM big b"
        let a = try source.query(checksum), b = try target.query(checksum)
        XCTAssertEqual(a[0, 0], "1000000")
        XCTAssertEqual(a[0, 0], b[0, 0])
        XCTAssertEqual(a[0, 1], b[0, 1])
    }

    func testTextCopyOutAndInRoundTrip() throws {
        let cluster = try TestClusters.shared.clusters()[0]
        let conn = try PGConnection.connect(try freshDatabase(on: cluster))
        try conn.execute("CREATE TABLE t (id int, v text)")
        let loaded = try conn.copyIn("COPY t FROM STDIN") { writer in
            for i in 1...1000 { try writer.write("\(i)\tvalue \(i)\n") }
        }
        XCTAssertEqual(loaded.rows, 1000)
        var text = ""
        let out = try conn.copyOut("COPY (SELECT * FROM t WHERE id <= 3 ORDER BY id) TO STDOUT") { chunk in
            text += String(decoding: chunk, as: UTF8.self)
        }
        XCTAssertEqual(out.rows, 3)
        XCTAssertEqual(text, "1\tvalue 1\n2\tvalue 2\n3\tvalue 3\n")
    }

    func testAFailingProducerAbortsTheCopyAndLoadsNothing() throws {
        struct Stop: Error {}
        let cluster = try TestClusters.shared.clusters()[0]
        let conn = try PGConnection.connect(try freshDatabase(on: cluster))
        try conn.execute("CREATE TABLE t (id int)")
        XCTAssertThrowsError(try conn.copyIn("COPY t FROM STDIN") { writer in
            try writer.write("1\n2\n")
            throw Stop()
        }) { XCTAssertTrue($0 is Stop) }
        XCTAssertEqual(try conn.query("SELECT count(*) FROM t").get(0, 0, as: Int.self), 0)
    }

    func testARelayRejectedByTheDestinationFailsCleanlyAndBothSidesStayUsable() throws {
        let clusters = try TestClusters.shared.clusters()
        let source = try PGConnection.connect(try freshDatabase(on: clusters[0]))
        let target = try PGConnection.connect(try freshDatabase(on: clusters[1]))
        try source.execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 50000)")
        try target.execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (40000)")
        XCTAssertThrowsError(
            try PGConnection.relayCopy(from: source, "COPY t TO STDOUT (FORMAT binary)", to: target, "COPY t FROM STDIN (FORMAT binary)")
        ) { error in
            XCTAssertEqual((error as? PostgresError)?.sqlState, "23505")
        }
        XCTAssertEqual(try target.query("SELECT count(*) FROM t").get(0, 0, as: Int.self), 1)
        XCTAssertEqual(try source.query("SELECT count(*) FROM t").get(0, 0, as: Int.self), 50000)
    }

    /// Acceptance: hostile identifiers work when quoted through libpq.
    func testHostileTableAndColumnNamesCanBeCreatedCopiedAndQueried() throws {
        let clusters = try TestClusters.shared.clusters()
        let source = try PGConnection.connect(try freshDatabase(on: clusters[0]))
        let target = try PGConnection.connect(try freshDatabase(on: clusters[1]))
        let table = QualifiedName(schema: "public", #"we"ird; table"#)
        let column = #"sel"ect"#
        for conn in [source, target] {
            try conn.execute(
                "CREATE TABLE \(try conn.quote(table)) (id int PRIMARY KEY, \(try conn.quoteIdentifier(column)) text)")
        }
        let t = try source.quote(table), c = try source.quoteIdentifier(column)
        try source.query("INSERT INTO \(t) (id, \(c)) SELECT g, $1 || g FROM generate_series(1, 100) g", [#"it's "x"; "#])
        let stats = try PGConnection.relayCopy(
            from: source, "COPY \(t) TO STDOUT (FORMAT binary)", to: target, "COPY \(t) FROM STDIN (FORMAT binary)")
        XCTAssertEqual(stats.rows, 100)
        let row = try target.query("SELECT \(c) FROM \(t) WHERE id = $1", [7])
        XCTAssertEqual(row[0, 0], #"it's "x"; 7"#)
        XCTAssertEqual(
            try target.query("SELECT count(*) FROM pg_tables WHERE tablename = $1", [table.name]).get(0, 0, as: Int.self), 1)
        XCTAssertEqual(try source.quoteLiteral("it's"), "'it''s'")
    }
}

/// Resets the kernel's peak-RSS counter for this process (Linux: write 5 to clear_refs) and
/// returns the value before the reset, so a test can measure the peak of one operation.
func resetPeakMemory() throws -> Int {
    let before = try peakResidentBytes()
    try "5".write(toFile: "/proc/self/clear_refs", atomically: false, encoding: .utf8)
    return before
}

/// VmHWM: the peak resident set size of this process.
func peakResidentBytes() throws -> Int {
    let status = try String(contentsOfFile: "/proc/self/status", encoding: .utf8)
    guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
        let kb = Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
    else { throw NSError(domain: "no VmHWM", code: 1) }
    return kb * 1024
}
