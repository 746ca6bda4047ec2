import Foundation
import PostgresClient
import XCTest

@testable import ReshardCore

final class RetryPolicyTests: XCTestCase {
    private let t0 = Date(timeIntervalSince1970: 1_000_000)
    private let refused = PostgresError(
        code: .connectionFailed, message: "connection refused",
        endpoint: Endpoint(host: "127.0.0.1", port: "5432", database: "app", user: "app", label: "s1"))

    func testDelaysDoubleUpToTheCap() {
        let policy = RetryPolicy()
        XCTAssertEqual((1...7).map { policy.delay(afterFailures: $0) }, [0.2, 0.4, 0.8, 1.6, 3.2, 5, 5])
    }

    func testOnlyTransientErrorsAreRetried() {
        XCTAssertTrue(RetryPolicy.isTransient(refused))
        XCTAssertTrue(RetryPolicy.isTransient(PostgresError(code: .connectionLost, message: "server closed the connection")))
        XCTAssertTrue(RetryPolicy.isTransient(PostgresError(code: .server, message: "shutting down", sqlState: "57P01")))
        XCTAssertTrue(RetryPolicy.isTransient(PostgresError(code: .server, message: "deadlock", sqlState: "40P01")))
        XCTAssertFalse(RetryPolicy.isTransient(PostgresError(code: .server, message: "no such table", sqlState: "42P01")))
        XCTAssertFalse(RetryPolicy.isTransient(ReshardError.failed("no")))
        var run = RetryPolicy.Run(RetryPolicy())
        XCTAssertNil(run.failed(PostgresError(code: .server, message: "duplicate key", sqlState: "23505"), at: t0))
    }

    func testARunOfFailuresEndsAfterTheWindowAndASuccessStartsAnew() throws {
        var run = RetryPolicy.Run(RetryPolicy(window: 60))
        let first = try XCTUnwrap(run.failed(refused, at: t0))
        XCTAssertEqual(first, .init(failures: 1, since: t0, delay: 0.2, error: refused.summary, shard: "s1"))
        let second = try XCTUnwrap(run.failed(refused, at: t0 + 30))
        XCTAssertEqual(second.failures, 2)
        XCTAssertEqual(second.since, t0, "the run started at the first failure")
        XCTAssertNil(run.failed(refused, at: t0 + 61), "the window is spent")
        XCTAssertTrue(run.succeeded())
        XCTAssertFalse(run.succeeded(), "nothing to recover from")
        XCTAssertEqual(run.failed(refused, at: t0 + 100)?.since, t0 + 100)
    }
}
