import PostgresClient
@testable import ReshardCore
import XCTest

/// Where each layout's tables are on each database, before cutover, after it and after rollback
/// (`TableLocations`), and the names the reversed plan writes on a shared database.
final class TableLocationsTests: XCTestCase {
    /// 2 -> 3, t0 being s0's database.
    private func plan() throws -> Plan {
        Plan(
            migration: "m", metadata: "", function: try .init(kind: .hash, shardCount: 3), sourceFunction: try .init(kind: .hash, shardCount: 2),
            sources: [.init(name: "s0", endpoint: "", dsn: "", sameAsSource: nil), .init(name: "s1", endpoint: "", dsn: "", sameAsSource: nil)],
            targets: [.init(name: "t0", endpoint: "", dsn: "", sameAsSource: "s0"), .init(name: "t1", endpoint: "", dsn: "", sameAsSource: nil),
                      .init(name: "t2", endpoint: "", dsn: "", sameAsSource: nil)],
            tables: [.init(name: .init(schema: nil, "users"), key: "id", keyType: .bigint, columns: [], uniqueKey: ["id"], fingerprint: "",
                           estimateMethod: "exact", slices: [], sourceKey: "id", sourceKeyType: .bigint),
                     .init(name: .init(schema: "app", "posts"), key: "user_id", keyType: .bigint, columns: [], uniqueKey: ["id"], fingerprint: "",
                           estimateMethod: "exact", slices: [], sourceKey: "user_id", sourceKeyType: .bigint)],
            recordedPhase: nil)
    }

    private func text(_ names: [QualifiedName]) -> [String] { names.map(\.description) }

    func testBeforeCutoverTheNewLayoutIsBuiltInReshardBuildOnTheSharedDatabaseOnly() throws {
        let plan = try plan()
        let before = TableLocations(plan, swapped: [])
        XCTAssertEqual(text(before.names(.old, on: "s0")), ["users", "app.posts"])
        XCTAssertEqual(text(before.names(.new, on: "t0")), ["reshard_build.users", "reshard_build.posts"])
        XCTAssertEqual(text(before.names(.old, on: "s1")), ["users", "app.posts"])
        XCTAssertEqual(text(before.names(.new, on: "t1")), ["users", "app.posts"])
        let places = before.places(plan, .cutover)
        XCTAssertEqual(places.from.map(\.shard), ["s0", "s1"])
        XCTAssertEqual(places.to.map { "\($0.shard): \(text($0.names))" },
                       ["t0: [\"reshard_build.users\", \"reshard_build.posts\"]", "t1: [\"users\", \"app.posts\"]", "t2: [\"users\", \"app.posts\"]"])
        // The forward plan's catch-up writes the built tables there.
        XCTAssertEqual(plan.builtName(of: plan.tables[1], on: plan.targets[0]).description, "reshard_build.posts")
    }

    func testAfterCutoverTheNewLayoutHasTheLiveNamesAndTheOldOneIsInReshardOld() throws {
        let plan = try plan()
        let after = TableLocations(plan, swapped: ["t0"])
        XCTAssertEqual(text(after.names(.new, on: "t0")), ["users", "app.posts"])
        XCTAssertEqual(text(after.names(.old, on: "s0")), ["reshard_old.users", "reshard_old.posts"])
        XCTAssertEqual(text(after.names(.old, on: "s1")), ["users", "app.posts"])
        let rollback = after.places(plan, .rollback)
        XCTAssertEqual(rollback.from.map(\.shard), ["t0", "t1", "t2"])
        XCTAssertEqual(text(rollback.to[0].names), ["reshard_old.users", "reshard_old.posts"])
        // Rollback's catch-up (the reversed plan) writes the old layout's tables in reshard_old.
        let reversed = plan.reversed()
        XCTAssertEqual(reversed.targets.map { "\($0.name)=\($0.sameAsSource ?? "-")" }, ["s0=t0", "s1=-"])
        XCTAssertEqual(reversed.builtName(of: reversed.tables[1], on: reversed.targets[0]).description, "reshard_old.posts")
        XCTAssertEqual(reversed.builtName(of: reversed.tables[1], on: reversed.targets[1]).description, "app.posts")
    }

    func testATableOnADatabaseThatIsNotSharedAlwaysHasItsOwnName() {
        for layout in [TableLocations.Layout.old, .new] {
            for swapped in [false, true] {
                XCTAssertEqual(TableLocations.name(of: .init(schema: "app", "t"), layout: layout, shared: false, swapped: swapped).description, "app.t")
            }
        }
    }

    /// An interrupted cleanup may have dropped `reshard_old` (the old tables) on a swapped database:
    /// with the built tables gone as well, it is still swapped (the new layout has the live names).
    func testADatabaseIsSwappedWhenItsOldTablesAreParkedOrItsBuiltOnesAreGone() {
        XCTAssertFalse(TableLocations.isSwapped(parked: false, built: true), "before cutover")
        XCTAssertTrue(TableLocations.isSwapped(parked: true, built: false), "after cutover")
        XCTAssertTrue(TableLocations.isSwapped(parked: false, built: false), "after a cleanup interrupted once reshard_old was dropped")
    }

    /// A shared database (s0 = t0) is one fence: a switch flips it once, by the name of the layout
    /// it starts from (whose sessions the barrier holds).
    func testASharedDatabaseIsOneDatabaseOfTheSwitch() throws {
        let plan = try plan()
        XCTAssertEqual(TableLocations(plan, swapped: []).places(plan, .cutover).databases, ["s0", "s1", "t1", "t2"])
        XCTAssertEqual(TableLocations(plan, swapped: ["t0"]).places(plan, .rollback).databases, ["t0", "t1", "t2", "s1"])
    }
}
