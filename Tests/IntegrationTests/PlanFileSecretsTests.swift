import Foundation
import LocalCluster
import PostgresClient
import ReshardCore
import XCTest

/// Issue 14: `plan --output` then `apply --plan` must find the passwords the way `--config`
/// does: the plan file keeps the config's `${VAR}` references, never the secret itself.
final class PlanFileSecretsTests: XCTestCase {
    func testApplyFromAPlanFileExpandsTheConfigsVariablesAndStoresNoSecret() throws {
        let clusters = try TestClusters.shared.clusters()
        // A role that can only log in with its password (the clusters require scram-sha-256 over TCP).
        let role = "pw_\(UUID().uuidString.prefix(8).lowercased())"
        let secret = "Pl4nS3cret-\(UUID().uuidString.prefix(8))"
        for cluster in clusters {
            let admin = try PGConnection.connect(cluster.connectionString())
            try admin.query("SELECT set_config('reshard_test.pw', $1, false)", [secret])
            try admin.execute("DO $$ BEGIN EXECUTE format('CREATE ROLE %I LOGIN SUPERUSER PASSWORD %L', '\(role)', current_setting('reshard_test.pw')); END $$")
        }
        addTeardownBlock {
            for cluster in clusters {
                let admin = try PGConnection.connect(cluster.connectionString())
                try admin.execute("DROP ROLE IF EXISTS \(try admin.quoteIdentifier(role))")
            }
        }
        // After the role's teardown is registered, so its databases are dropped before it.
        let fixture = try PlanFixture(self)
        try ReferenceData.load(fixture, scale: 0.005)
        /// The same database, as the role, with the password left to ${RESHARD_TEST_PASSWORD}.
        func withVariable(_ dsn: ConnectionString) throws -> ConnectionString {
            let e = dsn.endpoint
            return try ConnectionString("postgresql://\(role):${RESHARD_TEST_PASSWORD}@127.0.0.1:\(e.port)/\(e.database)")
        }
        var protected = fixture
        protected.metadata = try withVariable(fixture.metadata)
        let config = try protected.writeConfig(
            tables: ReferenceData.tables, sources: try fixture.sources.map(withVariable), targets: try fixture.targets.map(withVariable))
        let environment = ["RESHARD_TEST_PASSWORD": secret, "PGPASSWORD": "", "PGPASSFILE": "/nonexistent"]

        // The password is really needed: without it the role cannot connect.
        let e = fixture.sources[0].endpoint
        XCTAssertThrowsError(try PGConnection.connect(
            try ConnectionString("host=127.0.0.1 port=\(e.port) dbname=\(e.database) user=\(role) passfile=/nonexistent"))) { error in
            XCTAssertTrue((error as? PostgresError)?.summary.contains("no password supplied") ?? false, "\(error)")
        }

        let planFile = fixture.directory + "/plan.json"
        let plan = try ReshardCLI.run(["plan", "-c", config, "--output", planFile], environment: environment)
        XCTAssertEqual(plan.status, 0, plan.stderr)
        let written = try String(contentsOfFile: planFile, encoding: .utf8)
        XCTAssertFalse(written.contains(secret), "the plan file must not hold the password")
        XCTAssertTrue(written.contains("${RESHARD_TEST_PASSWORD}"), written)

        let unset = try ReshardCLI.run(["apply", "--plan", planFile, "--until", "caught-up"], environment: ["RESHARD_TEST_PASSWORD": ""])
        XCTAssertEqual(unset.status, 2, unset.stderr)
        XCTAssertTrue(unset.stderr.contains("environment variable RESHARD_TEST_PASSWORD is not set"), unset.stderr)
        XCTAssertTrue(unset.stderr.contains(planFile), unset.stderr)

        let apply = try ReshardCLI.run(["apply", "--plan", planFile, "--until", "caught-up"], environment: environment)
        XCTAssertEqual(apply.status, 0, apply.stderr)
        XCTAssertFalse(apply.stdout.contains(secret) || apply.stderr.contains(secret))
        let status = try ReshardCLI.run(["status", "--plan", planFile], environment: environment)
        XCTAssertEqual(status.status, 0, status.stderr)
        XCTAssertTrue(status.stdout.contains("phase in-sync"), status.stdout)
        try ReferenceData.assertTargetsMatchSources(fixture)
    }
}
