import PostgresClient
import XCTest

@testable import ReshardCore

/// `replicas:` per source shard: connection strings with `${VAR}` like the rest, never printed
/// with their password, and file:line errors.
final class ReplicasConfigTests: XCTestCase {
    private func config(_ replicas: String) -> String {
        """
        migration: m
        metadata: postgres://postgres@127.0.0.1:5432/reshard
        source:
          shards:
            - postgres://app@10.0.0.1/app
            - name: east
              dsn: postgres://app@10.0.0.2/app
              replicas: \(replicas)
        target:
          shards: [postgres://app@10.0.0.3/app]
        tables:
          - {name: users, key: id}
        """
    }

    func testReplicasAreConnectionStringsWithVariablesAndNeverShowTheirPassword() throws {
        let parsed = try ReshardConfig.parse(
            config(#"["postgres://app:${REPLICA_PASSWORD}@10.0.0.5/app", "host=10.0.0.6 dbname=app user=app password=secret"]"#),
            file: "reshard.yml", environment: ["REPLICA_PASSWORD": "hunter2"])
        XCTAssertEqual(parsed.sources[0].replicas, [])
        let replicas = parsed.sources[1].replicas
        XCTAssertEqual(replicas.count, 2)
        XCTAssertEqual(replicas[0].options["password"], "hunter2")
        XCTAssertEqual(replicas[0].description, "replica of east (app@10.0.0.5:5432/app)")
        XCTAssertFalse(replicas.map(\.description).joined().contains("secret"))
        // What a plan file would keep: the ${VAR} reference, or nothing of the password.
        XCTAssertEqual(replicas[0].planFileValue, "postgres://app:${REPLICA_PASSWORD}@10.0.0.5/app")
        XCTAssertFalse(replicas[1].planFileValue.contains("secret"))
    }

    func testReplicasMustBeAList() {
        XCTAssertThrowsError(try ReshardConfig.parse(config("postgres://app@10.0.0.5/app"), file: "reshard.yml")) { error in
            XCTAssertEqual((error as? ReshardError)?.description, "reshard.yml:8: replicas of shard east must be a list of connection strings")
        }
        XCTAssertThrowsError(try ReshardConfig.parse(config(#"["${NOPE}"]"#), file: "reshard.yml")) { error in
            XCTAssertEqual((error as? ReshardError)?.code, .badInput)
            XCTAssertTrue("\(error)".contains("NOPE"), "\(error)")
        }
    }
}
