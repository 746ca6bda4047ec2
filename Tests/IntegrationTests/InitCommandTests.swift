import Foundation
import LocalCluster
import PostgresClient
import ReshardCore
import XCTest

final class InitCommandTests: XCTestCase {
    /// Acceptance: `reshard init` twice; both exit 0, the second changes nothing, the version is recorded.
    func testInitTwiceIsIdempotentAndRecordsTheVersion() throws {
        let cluster = try TestClusters.shared.clusters()[0]
        let dsn = try freshDatabase(on: cluster, "meta")
        let first = try ReshardCLI.run(["init", "--metadata", dsn.unsafeRawValue])
        XCTAssertEqual(first.status, 0, first.stderr)
        XCTAssertTrue(first.stdout.contains("applied 0001_metadata_schema.sql"), first.stdout)

        let conn = try PGConnection.connect(dsn)
        let snapshot = """
            SELECT (SELECT string_agg(format('%s:%s:%s', c.relname, c.relkind, c.relfilenode), ',' ORDER BY c.relname)
                      FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'reshard'),
                   (SELECT string_agg(format('%s:%s:%s', version, xmin, applied_at), ',' ORDER BY version)
                      FROM reshard.schema_version),
                   (SELECT sum(n_tup_ins + n_tup_upd + n_tup_del) FROM pg_stat_xact_user_tables),
                   txid_current_if_assigned()
            """
        let before = try conn.query(snapshot)
        let second = try ReshardCLI.run(["init", "--metadata", dsn.unsafeRawValue, "--json"])
        XCTAssertEqual(second.status, 0, second.stderr)
        let after = try conn.query(snapshot)
        for column in 0..<2 { XCTAssertEqual(before[0, column], after[0, column]) }

        let report = try JSONDecoder().decode(InitJSON.self, from: Data(second.stdout.utf8))
        XCTAssertEqual(report.report.applied, [])
        XCTAssertEqual(report.report.versionAfter, MetadataSchema.current.latestVersion)
        XCTAssertFalse(second.stdout.contains(cluster.passwordFile) && second.stdout.contains("password="))
        let recorded = try conn.query("SELECT max(version) FROM reshard.schema_version").get(0, 0, as: Int.self)
        XCTAssertEqual(recorded, MetadataSchema.current.latestVersion)
    }

    func testConcurrentInitsApplyEachVersionOnce() throws {
        let cluster = try TestClusters.shared.clusters()[0]
        let dsn = try freshDatabase(on: cluster, "meta")
        let runs = try (0..<4).map { _ in try ReshardCLI.start(["init", "--metadata", dsn.unsafeRawValue]) }
        for run in runs { XCTAssertEqual(run.wait(), 0, run.stderr) }
        let conn = try PGConnection.connect(dsn)
        XCTAssertEqual(
            try conn.query("SELECT count(*) FROM reshard.schema_version").get(0, 0, as: Int.self),
            MetadataSchema.current.steps.count)
    }

    func testInitRefusesAMetadataSchemaNewerThanTheBinary() throws {
        let cluster = try TestClusters.shared.clusters()[0]
        let dsn = try freshDatabase(on: cluster, "meta")
        XCTAssertEqual(try ReshardCLI.run(["init", "--metadata", dsn.unsafeRawValue]).status, 0)
        let conn = try PGConnection.connect(dsn)
        try conn.execute("INSERT INTO reshard.schema_version (version, file, checksum) VALUES (9999, 'future.sql', 'x')")
        let outcome = try ReshardCLI.run(["init", "--metadata", dsn.unsafeRawValue])
        XCTAssertEqual(outcome.status, 2)
        XCTAssertTrue(outcome.stderr.contains("newer than this reshard"), outcome.stderr)
    }

    func testUsageErrorsExitTwoWithOneLine() throws {
        let outcome = try ReshardCLI.run(["init"])
        XCTAssertEqual(outcome.status, 2)
        XCTAssertEqual(outcome.stderr.split(separator: "\n").count, 1, outcome.stderr)
        XCTAssertTrue(outcome.stderr.contains("--metadata"), outcome.stderr)
        let version = try ReshardCLI.run(["--version"])
        XCTAssertEqual(version.status, 0)
        XCTAssertEqual(version.stdout.trimmingCharacters(in: .whitespacesAndNewlines), ReshardVersion.string)
        let help = try ReshardCLI.run(["--help"])
        for subcommand in ["init", "plan", "apply", "status", "verify"] {
            XCTAssertTrue(help.stdout.contains("  \(subcommand) "), help.stdout)
        }
    }
}

private struct InitJSON: Decodable {
    var metadata: String
    var report: MetadataSchemaReport
}
