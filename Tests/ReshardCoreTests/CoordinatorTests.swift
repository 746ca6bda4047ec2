import Foundation
import PostgresClient
import XCTest

@testable import ReshardCore

final class CoordinatorTests: XCTestCase {
    /// A slice the plan does not know cannot be copied: that fails the migration with a message
    /// naming it, instead of returning silently and being claimed again forever.
    func testASliceNotInThePlanFailsLoudly() throws {
        let shard = { (name: String) in Plan.Shard(name: name, endpoint: "", dsn: "", sameAsSource: nil) }
        let plan = Plan(
            migration: "m", metadata: "", function: try ShardFunction(kind: .hash, shardCount: 1),
            sources: [shard("s0")], targets: [shard("t0")], tables: [])
        let coordinator = Coordinator(
            plan: plan, shards: [:], metadata: try ConnectionString("host=127.0.0.1 dbname=none"), options: ApplyOptions())
        coordinator.copySlice(.init(table: "nosuch", source: "s0", target: "t0"))
        let failure = try XCTUnwrap(coordinator.state.firstFailure as? ReshardError)
        XCTAssertEqual(failure.code, .failed)
        XCTAssertEqual(failure.message, "slice nosuch s0 -> t0 is not part of the plan")
        XCTAssertTrue(coordinator.state.isStopping)
    }
}
