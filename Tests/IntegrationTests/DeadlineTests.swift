import Foundation
import PostgresClient
import XCTest

/// `PGConnection.execute(_:timeout:)`: a statement bounded on the client's side.
final class DeadlineTests: XCTestCase {
    func testAStatementIsBoundedAndOtherwiseAnsweredLikeExecute() throws {
        let dsn = try freshDatabase(on: try TestClusters.shared.clusters()[0], "deadline")
        let conn = try PGConnection.connect(dsn)
        XCTAssertEqual(try conn.execute("SELECT 1; SELECT 'last'", timeout: 5)[0, 0], "last")
        XCTAssertThrowsError(try conn.execute("SELECT 1; SELECT 1/0; SELECT 2", timeout: 5)) {
            XCTAssertEqual(($0 as? PostgresError)?.sqlState, "22012")
        }

        let started = Date()
        XCTAssertThrowsError(try conn.execute("SELECT pg_sleep(30)", timeout: 0.3)) {
            XCTAssertEqual(($0 as? PostgresError)?.code, .cancelled)
        }
        XCTAssertLessThan(Date().timeIntervalSince(started), 3)
        // The server was asked to cancel: the statement is not left running.
        let observer = try PGConnection.connect(dsn)
        XCTAssertTrue(try eventually(timeout: 10) {
            try observer.query("SELECT count(*) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)' AND state = 'active'")[0, 0] == "0"
        })
    }
}
