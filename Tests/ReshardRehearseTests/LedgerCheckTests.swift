import PostgresClient
import ReshardRehearse
import XCTest

final class LedgerCheckTests: XCTestCase {
    let users = QualifiedName("users")
    func key(_ k: String) -> Ledger.Key { Ledger.Key(table: users, key: k) }
    func present(_ row: String, shard: Int) -> Ledger.State { .present(row: row, shardKey: String(shard), placementKey: String(shard)) }

    func check(_ ledger: Ledger, _ observations: [LedgerCheck.Observation]) -> LedgerCheck.Result {
        LedgerCheck.check(
            layout: "new", expectations: ledger.expectations(), failedLast: ledger.failedLast(), observations: observations,
            shardNames: ["t0", "t1"]
        ) { state in
            guard case .present(_, let shardKey, _) = state else { return -1 }
            return Int(shardKey)!
        }
    }

    func testEveryKindOfDifferenceIsCountedAndNamed() {
        let ledger = Ledger()
        let now = Date()
        ledger.loaded(key("(1)"), present("(1,a)", shard: 0))
        ledger.loaded(key("(2)"), present("(2,a)", shard: 1))
        ledger.loaded(key("(3)"), present("(3,a)", shard: 0))
        ledger.loaded(key("(4)"), present("(4,a)", shard: 1))
        ledger.record(key("(4)"), present("(4,b)", shard: 1), .acknowledged, started: now, latency: 0.001)
        ledger.record(key("(5)"), .absent, .acknowledged, started: now, latency: 0.001)
        ledger.loaded(key("(6)"), present("(6,a)", shard: 0))
        ledger.record(key("(6)"), present("(6,b)", shard: 0), .failed, started: now, latency: 0)
        ledger.loaded(key("(7)"), present("(7,a)", shard: 0))
        ledger.record(key("(7)"), .absent, .inDoubt, started: now, latency: 0)
        let result = check(ledger, [
            .init(key: key("(1)"), shard: 0, row: "(1,a)"),  // found
            // (2) missing: lost
            .init(key: key("(3)"), shard: 1, row: "(3,a)"),  // misplaced
            .init(key: key("(4)"), shard: 1, row: "(4,b)"), .init(key: key("(4)"), shard: 0, row: "(4,b)"),  // duplicated
            .init(key: key("(5)"), shard: 0, row: "(5,z)"),  // acknowledged delete lost
            .init(key: key("(6)"), shard: 0, row: "(6,b)"),  // the failed update landed
            // (7) in doubt: absent is fine
            .init(key: key("(8)"), shard: 1, row: "(8,x)"),  // nobody wrote it
        ])
        XCTAssertEqual(result.totals.found, 1)
        XCTAssertEqual(result.totals.lost, 2)
        XCTAssertEqual(result.totals.misplaced, 1)
        XCTAssertEqual(result.totals.duplicated, 1)
        XCTAssertEqual(result.totals.unacknowledgedSeen, 2)
        XCTAssertFalse(result.totals.clean)
        let text = result.problems.joined(separator: "\n")
        for expected in ["lost: users key (2)", "misplaced: users key (3) is on t1, owned by t0", "duplicated: users key (4)",
                         "acknowledged delete of users key (5)", "unacknowledged write appeared: users key (6)", "unacknowledged row: users key (8)"] {
            XCTAssertTrue(text.contains(expected), "\(expected) in\n\(text)")
        }
    }

    func testAWriteInDoubtMayBeEitherAndAnAcknowledgedOneMustBeExact() {
        let ledger = Ledger()
        let now = Date()
        ledger.loaded(key("(1)"), present("(1,a)", shard: 0))
        ledger.record(key("(1)"), .present(row: Ledger.anyRow, shardKey: "1", placementKey: "1"), .inDoubt, started: now, latency: 0)
        XCTAssertTrue(check(ledger, [.init(key: key("(1)"), shard: 0, row: "(1,a)")]).totals.clean)
        XCTAssertTrue(check(ledger, [.init(key: key("(1)"), shard: 1, row: "(1,moved)")]).totals.clean)
        XCTAssertFalse(check(ledger, []).totals.clean)
        XCTAssertFalse(check(ledger, [.init(key: key("(1)"), shard: 0, row: "(1,stale)")]).totals.clean)
    }
}
