import Foundation
import PostgresClient
import ReshardCore
import XCTest

/// Issue 14: `plan` warns (without refusing) about a lopsided new layout, and suggests the table
/// a mistyped name probably meant.
final class PlanWarningTests: XCTestCase {
    func testSkewedOrFewValuedKeysAreWarnedAboutAndTyposGetASuggestion() throws {
        let fixture = try PlanFixture(self)
        // tenant: three values, 73% of the rows on tenant 1; kind: two values for three targets.
        // Each source holds its own ids (a key on two sources would be refused).
        for (k, source) in fixture.sources.enumerated() {
            try PGConnection.connect(source).execute(
                """
                CREATE TABLE users (id bigint PRIMARY KEY, tenant int NOT NULL, kind int NOT NULL);
                INSERT INTO users SELECT g, CASE WHEN g % 100 < 73 THEN 1 WHEN g % 100 < 87 THEN 2 ELSE 3 END, (g / 2) % 2
                  FROM generate_series(1, 2000) g WHERE g % 2 = \(k);
                CREATE TABLE even (id bigint PRIMARY KEY);
                INSERT INTO even SELECT g FROM generate_series(1, 2000) g WHERE g % 2 = \(k);
                ANALYZE;
                """)
        }
        let skewed = try ReshardCLI.run(["plan", "-c", try fixture.writeConfig(tables: [("users", "tenant")]), "--json"])
        XCTAssertEqual(skewed.status, 0, skewed.stderr)
        let warnings = try JSONDecoder().decode(Plan.self, from: Data(skewed.stdout.utf8)).warnings ?? []
        let skew = try XCTUnwrap(warnings.first { $0.hasPrefix("table users: target t") }, "\(warnings)")
        XCTAssertTrue(skew.hasSuffix("the mean share); the shard key may be skewed"), skew)
        // Tenant 1 alone is 73% of the rows (exact: the table is small enough to count).
        let share = skew.firstMatch(of: /~(\d+)% of the rows/).flatMap { Int($0.1) }
        XCTAssertGreaterThanOrEqual(share ?? 0, 73, skew)

        let fewValues = try ReshardCLI.run(["plan", "-c", try fixture.writeConfig(tables: [("users", "kind")])])
        XCTAssertEqual(fewValues.status, 0, fewValues.stderr)
        XCTAssertTrue(
            fewValues.stdout.contains("warning: table users: shard key kind has about 2 distinct value(s) for 3 targets"), fewValues.stdout)

        let even = try ReshardCLI.run(["plan", "-c", try fixture.writeConfig(tables: [("even", "id")])])
        XCTAssertEqual(even.status, 0, even.stderr)
        XCTAssertFalse(even.stdout.contains("warning:"), "an even key gets no warning: \(even.stdout)")

        let typo = try ReshardCLI.run(["plan", "-c", try fixture.writeConfig(tables: [("userz", "id")])])
        XCTAssertEqual(typo.status, 2, typo.stderr)
        XCTAssertTrue(typo.stderr.contains("table userz is missing on source s0 (did you mean users?)"), typo.stderr)
    }
}
