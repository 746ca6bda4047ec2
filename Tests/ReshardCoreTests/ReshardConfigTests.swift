import PostgresClient
import XCTest

@testable import ReshardCore

final class ReshardConfigTests: XCTestCase {
    let valid = """
        migration: users-2-to-3
        metadata: postgres://postgres@127.0.0.1:5432/reshard
        source:
          shards:
            - postgres://app@10.0.0.1/app
            - name: east
              dsn: postgres://app:${APP_PASSWORD}@10.0.0.2/app
        target:
          function: hash
          shards:
            - postgres://app@10.0.0.1/app
            - postgres://app@10.0.0.3/app
            - postgres://app@10.0.0.4/app
        tables:
          - name: users
            key: id
          - name: Public.Posts
            key: '"User_Id"'
        """

    func testParsesAValidConfig() throws {
        let config = try ReshardConfig.parse(valid, file: "reshard.yml", environment: ["APP_PASSWORD": "pw"])
        XCTAssertEqual(config.migration, "users-2-to-3")
        XCTAssertEqual(config.sources.map(\.name), ["s0", "east"])
        XCTAssertEqual(config.targets.map(\.name), ["t0", "t1", "t2"])
        XCTAssertEqual(config.sources[1].dsn.options["password"], "pw")
        XCTAssertEqual(config.function, try ShardFunction(kind: .hash, shardCount: 3))
        XCTAssertEqual(config.tables.map(\.name), [QualifiedName("users"), QualifiedName(schema: "public", "posts")])
        XCTAssertEqual(config.tables.map(\.key), ["id", "User_Id"])
        XCTAssertEqual(config.tables[1].line, 17)
    }

    /// Issue 15.7: the metadata database may come from RESHARD_METADATA instead of the file.
    func testMetadataFromTheEnvironmentWhenTheFileHasNone() throws {
        let withoutMetadata = valid.replacingOccurrences(of: "metadata: postgres://postgres@127.0.0.1:5432/reshard\n", with: "")
        let config = try ReshardConfig.parse(
            withoutMetadata, file: "reshard.yml",
            environment: ["APP_PASSWORD": "pw", "RESHARD_METADATA": "postgres://meta:secret@10.0.0.9/reshard"])
        XCTAssertEqual(config.metadata.endpoint.host, "10.0.0.9")
        XCTAssertThrowsError(try ReshardConfig.parse(withoutMetadata, file: "reshard.yml", environment: ["APP_PASSWORD": "pw"])) { error in
            XCTAssertEqual((error as? ReshardError)?.code, .badInput)
            XCTAssertTrue("\(error)".contains("missing key 'metadata' in the config file (or set RESHARD_METADATA)"), "\(error)")
        }
        // The file's own value wins over the variable.
        let both = try ReshardConfig.parse(valid, file: "reshard.yml", environment: ["APP_PASSWORD": "pw", "RESHARD_METADATA": "host=elsewhere"])
        XCTAssertEqual(both.metadata.endpoint.host, "127.0.0.1")
    }

    func testErrorsNameFileLineAndKey() {
        let cases: [(String, String, String)] = [
            // (replace, with, expected message)
            ("  function: hash", "  fucntion: hash", "reshard.yml:9: unknown key 'fucntion' in target"),
            ("  function: hash", "  function: consistent", "reshard.yml:9: target.function must be hash, modulo or range"),
            ("  function: hash", "  function: hash\n  split_points: [1, 0]", "reshard.yml:10: target: split_points must be strictly ascending"),
            ("  function: hash", "  function: hash\n  split_points: [1]", "reshard.yml:10: target: split_points must have 2 values"),
            ("  function: hash", "  function: range\n  boundaries: [5, x]", "reshard.yml:10: target.boundaries must hold integers"),
            ("    key: id\n", "", "missing key 'key' in tables entry"),
            ("migration: users-2-to-3\n", "", "reshard.yml:1: missing key 'migration'"),
            ("  - name: users", "  - name: [users]", "reshard.yml:15: tables.name must be a single value"),
            ("${APP_PASSWORD}", "${NOPE_UNSET}", "reshard.yml:7: environment variable NOPE_UNSET is not set"),
            ("source:\n", "source:\n  shard: x\n", "reshard.yml:4: unknown key 'shard' in source"),
            ("- name: users", "- name: users\n    extra: 1", "reshard.yml:16: unknown key 'extra' in tables entry"),
            ("metadata: postgres", "metadata: [postgres", "reshard.yml:"),
            ("source:\n", "source:\n  function: modulus\n", "reshard.yml:4: source.function must be hash, modulo or range"),
            ("source:\n", "source:\n  function: range\n  boundaries: [1, 2]\n", "source: boundaries must have 1 values for 2 shards"),
            ("    key: id\n", "    key: id\n    source_key: user_id\n", "reshard.yml:17: source_key needs source.function"),
        ]
        for (old, new, expected) in cases {
            let yaml = valid.replacingOccurrences(of: old, with: new)
            XCTAssertNotEqual(yaml, valid, old)
            XCTAssertThrowsError(try ReshardConfig.parse(yaml, file: "reshard.yml", environment: ["APP_PASSWORD": "pw"])) { error in
                XCTAssertEqual((error as? ReshardError)?.exitCode, 2)
                XCTAssertTrue("\(error)".contains(expected), "expected «\(expected)», got «\(error)»")
                XCTAssertFalse("\(error)".contains("\n"), "one line: \(error)")
            }
        }
    }

    /// Today's placement is optional; when given it is a function over the sources, and a table
    /// may name the column it reads.
    func testParsesTodaysPlacement() throws {
        let plain = try ReshardConfig.parse(valid, file: "reshard.yml", environment: ["APP_PASSWORD": "pw"])
        XCTAssertNil(plain.sourceFunction)
        let yaml = valid.replacingOccurrences(of: "source:\n", with: "source:\n  function: modulo\n")
            .replacingOccurrences(of: "    key: id\n", with: "    key: id\n    source_key: Region\n")
        let config = try ReshardConfig.parse(yaml, file: "reshard.yml", environment: ["APP_PASSWORD": "pw"])
        XCTAssertEqual(config.sourceFunction, try ShardFunction(kind: .modulo, shardCount: 2))
        XCTAssertEqual(config.tables.map(\.sourceKey), ["region", nil])
    }

    func testTableNamesParseLikeSQL() throws {
        XCTAssertEqual(try QualifiedName.parse("Users"), QualifiedName("users"))
        XCTAssertEqual(try QualifiedName.parse("app.Users"), QualifiedName(schema: "app", "users"))
        XCTAssertEqual(try QualifiedName.parse(#""We.ird"."T""#), QualifiedName(schema: "We.ird", "T"))
        XCTAssertEqual(try QualifiedName.parse(#""we""ird; table""#), QualifiedName(#"we"ird; table"#))
        XCTAssertEqual(try QualifiedName.parseIdentifier(#""sel""ect""#), #"sel"ect"#)
        XCTAssertThrowsError(try QualifiedName.parse("a.b.c"))
        XCTAssertThrowsError(try QualifiedName.parse(#""open"#))
        XCTAssertThrowsError(try QualifiedName.parse("two words"))
    }
}
