import Foundation
import PostgresClient
import XCTest

/// `--log-format json`: every event is one JSON object on stderr, and the same events are in
/// `reshard.events` with their time.
final class LogFormatTests: XCTestCase {
    func testJSONLinesParseAndMatchTheEventTable() throws {
        let fixture = try PlanFixture(self)
        // Each source its own keys: a key held by two sources would be refused.
        for (k, source) in fixture.sources.enumerated() {
            try PGConnection.connect(source).execute(
                "CREATE TABLE users (id bigint PRIMARY KEY, name text); INSERT INTO users SELECT g, 'u' FROM generate_series(1, 500) g WHERE g % 2 = \(k)")
        }
        let config = try fixture.writeConfig()
        let outcome = try ReshardCLI.run(["apply", "-c", config, "--until", "caught-up", "--log-format", "json"])
        XCTAssertEqual(outcome.status, 0, outcome.stderr)

        var logged: [String] = []
        for line in outcome.stderr.split(separator: "\n") where line.hasPrefix("{") {
            let object = try XCTUnwrap(
                try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: String], "not a JSON object of strings: \(line)")
            XCTAssertEqual(object["migration"], "plan-test", String(line))
            XCTAssertNotNil(object["at"].flatMap { try? Date($0, strategy: .iso8601) }, String(line))
            XCTAssertNotNil(object["level"], String(line))
            logged.append(try XCTUnwrap(object["message"]))
        }
        let meta = try PGConnection.connect(fixture.metadata)
        let rows = try meta.query("SELECT message FROM reshard.events WHERE migration = 'plan-test' AND at IS NOT NULL ORDER BY id")
        let recorded = (0..<rows.rowCount).map { rows[$0, 0]! }
        XCTAssertTrue(recorded.contains("phase in-sync"), "\(recorded)")
        XCTAssertEqual(logged, recorded, "every recorded event is logged once, in order")
        XCTAssertFalse(outcome.stderr.contains("password"), outcome.stderr)
    }

    func testTextIsTheDefaultAndUnknownFormatsAreRefused() throws {
        let outcome = try ReshardCLI.run(["status", "-c", "/nonexistent.yml", "--log-format", "xml"])
        XCTAssertEqual(outcome.status, 2, outcome.stderr)
        XCTAssertEqual(outcome.stderr.split(separator: "\n").count, 1, outcome.stderr)
        XCTAssertTrue(outcome.stderr.contains("log-format"), outcome.stderr)
    }
}
