import PostgresClient
import XCTest

@testable import ReshardCore

/// The shard map built from a plan: what applications will route by, so every field matters.
final class ShardMapPlanTests: XCTestCase {
    private func plan(sourceFunction: ShardFunction?) throws -> Plan {
        func shard(_ name: String, _ dsn: String, replicas: [String]? = nil, same: String? = nil) -> Plan.Shard {
            Plan.Shard(name: name, endpoint: "-", dsn: dsn, sameAsSource: same, replicas: replicas)
        }
        var users = Plan.Table(
            name: QualifiedName(schema: "app", "users"), key: "id", keyType: .bigint, columns: [], uniqueKey: ["id"], fingerprint: "f",
            estimateMethod: "exact", slices: [])
        users.sourceKey = "tenant"
        users.sourceKeyType = .integer
        let posts = Plan.Table(
            name: QualifiedName("posts"), key: "user_id", keyType: .bigint, columns: [], uniqueKey: ["id"], fingerprint: "f",
            estimateMethod: "exact", slices: [])
        return Plan(
            migration: "m", metadata: "dbname=meta", function: try ShardFunction(kind: .hash, shardCount: 3), sourceFunction: sourceFunction,
            sources: [
                shard("s0", "host=a dbname=app password=secret", replicas: ["host=a2 dbname=app password=secret2 sslpassword=secret3"]),
                shard("s1", "postgres://app:${S1_PASSWORD}@b/app"),
            ],
            targets: [
                shard("t0", "host=a dbname=app", same: "s0"), shard("t1", "host=c dbname=app"),
                shard("t2", "host=d dbname=app", replicas: ["host=d2 dbname=app"]),
            ],
            tables: [users, posts], recordedPhase: nil)
    }

    func testOldLayoutIsTheSourcesPlacedByTodaysFunctionAndSourceKey() throws {
        let modulo = try ShardFunction(kind: .modulo, shardCount: 2)
        let map = ShardMap(plan: try plan(sourceFunction: modulo), layout: .old, environment: ["S1_PASSWORD": "pw1"])
        XCTAssertEqual(map.migration, "m")
        XCTAssertEqual(map.epoch, 0)
        XCTAssertEqual(map.function, modulo)
        XCTAssertEqual(map.shards.map(\.name), ["s0", "s1"])
        XCTAssertEqual(map.shards[0].dsn, "dbname='app' host='a'")
        XCTAssertEqual(map.shards[0].replicas, ["dbname='app' host='a2'"])
        XCTAssertEqual(map.shards[1].dsn, "dbname='app' host='b' user='app'")
        XCTAssertEqual(map.shards[1].replicas, [])
        XCTAssertEqual(
            map.tables,
            [.init(name: "app.users", key: "tenant", keyType: .integer), .init(name: "posts", key: "user_id", keyType: .bigint)])
    }

    func testNewLayoutIsTheTargetsPlacedByTheTargetFunction() throws {
        let map = ShardMap(plan: try plan(sourceFunction: nil), layout: .new, environment: [:])
        XCTAssertEqual(map.function, try ShardFunction(kind: .hash, shardCount: 3))
        XCTAssertEqual(map.shards.map(\.name), ["t0", "t1", "t2"])
        XCTAssertEqual(map.shards.map(\.dsn), ["dbname='app' host='a'", "dbname='app' host='c'", "dbname='app' host='d'"])
        XCTAssertEqual(map.shards[2].replicas, ["dbname='app' host='d2'"])
        XCTAssertEqual(map.tables.map(\.key), ["id", "user_id"])
    }

    /// Without source.function the old layout is reshard's default: hash split evenly over the sources.
    func testOldLayoutWithoutSourceFunctionAssumesAnEvenHashSplit() throws {
        let map = ShardMap(plan: try plan(sourceFunction: nil), layout: .old, environment: [:])
        XCTAssertEqual(map.function, try ShardFunction(kind: .hash, shardCount: 2))
        // A password the environment does not provide is not published either.
        XCTAssertFalse(map.shards[1].dsn.contains("S1_PASSWORD"), map.shards[1].dsn)
        XCTAssertFalse(map.shards.contains { $0.dsn.contains("password") || $0.replicas.contains { $0.contains("secret") } })
    }

    func testConfigListsReplicasOfAShard() throws {
        let yaml = """
            migration: m
            metadata: postgres://postgres@127.0.0.1:5432/reshard
            source:
              shards:
                - {name: east, dsn: "postgres://app@10.0.0.2/app", replicas: ["postgres://app:${PW}@10.0.0.12/app"]}
            target:
              shards: [postgres://app@10.0.0.3/app]
            tables: [{name: users, key: id}]
            """
        let config = try ReshardConfig.parse(yaml, file: "reshard.yml", environment: ["PW": "pw"])
        XCTAssertEqual(config.sources[0].replicas.map(\.endpoint.host), ["10.0.0.12"])
        XCTAssertEqual(config.targets[0].replicas, [])
        XCTAssertEqual(Planner.replicas(config.sources[0]), ["postgres://app:${PW}@10.0.0.12/app"])
        XCTAssertNil(Planner.replicas(config.targets[0]))

        let bad = yaml.replacingOccurrences(of: "replicas: [\"postgres://app:${PW}@10.0.0.12/app\"]", with: "replicas: nope")
        XCTAssertThrowsError(try ReshardConfig.parse(bad, file: "reshard.yml")) { error in
            XCTAssertEqual((error as? ReshardError)?.description, "reshard.yml:5: replicas of shard east must be a list of connection strings")
        }
    }
}
