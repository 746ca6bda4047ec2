import PostgresClient
import XCTest

@testable import ReshardCore

/// Issue 13: what the fault matrix relies on in the retry policy.
final class RetryPolicyFaultTests: XCTestCase {
    /// A server refusing writes for now (a failover's standby, `default_transaction_read_only`)
    /// is waited out; a statement cancelled (our own stop) or a read-only error of another kind is not.
    func testAReadOnlyServerIsTransient() {
        XCTAssertTrue(RetryPolicy.isTransient(PostgresError(code: .server, message: "read-only transaction", sqlState: "25006")))
        XCTAssertFalse(RetryPolicy.isTransient(PostgresError(code: .cancelled, message: "canceling statement", sqlState: "57014")))
        XCTAssertFalse(RetryPolicy.isTransient(PostgresError(code: .server, message: "no active transaction", sqlState: "25P01")))
    }

    /// `--max-retry` is the window: retries until it is spent, then the error says so.
    func testGivingUpSaysForHowLongAndWhichOption() throws {
        var run = RetryPolicy.Run(RetryPolicy(window: 6))
        let lost = PostgresError(code: .connectionLost, message: "server closed the connection", endpoint: Endpoint(
            host: "127.0.0.1", port: "5432", database: "app", user: "u", label: "t1"))
        let start = Date()
        XCTAssertNotNil(run.failed(lost, at: start))
        XCTAssertNotNil(run.failed(lost, at: start.addingTimeInterval(5.9)))
        XCTAssertNil(run.failed(lost, at: start.addingTimeInterval(6.1)))
        let error = run.gaveUp("catch-up s0", lost, shard: "t1")
        XCTAssertEqual(error.code, .failed)
        XCTAssertEqual(error.shard, "t1")
        XCTAssertTrue(error.message.hasPrefix("catch-up s0: gave up after retrying for 6 s (--max-retry): t1 ("), error.message)
    }
}
