import Foundation
import LocalCluster
import PostgresClient
import ReshardRehearse
import XCTest
import Yams

/// The Docker harness cannot run here (no engine), so its layout is rehearsed on local clusters:
/// one per PostgreSQL service of docker/compose.yml, with the databases its environment names,
/// and docker/map.yml pointed at them. A service renamed in one file and not the other fails this.
final class RehearseDockerLayoutTests: XCTestCase {
    static var dockerDirectory: String {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("docker").path
    }

    /// PostgreSQL services of the compose file and the database each creates.
    static func postgresServices() throws -> [String: String] {
        let text = try String(contentsOfFile: dockerDirectory + "/compose.yml", encoding: .utf8)
        guard let root = try Yams.load(yaml: text) as? [String: Any], let services = root["services"] as? [String: Any] else {
            throw NSError(domain: "compose.yml has no services", code: 1)
        }
        var databases: [String: String] = [:]
        for (name, value) in services {
            guard let service = value as? [String: Any], (service["image"] as? String)?.hasPrefix("postgres:") == true,
                service["command"] == nil
            else { continue }
            let environment = service["environment"] as? [String: Any] ?? [:]
            databases[name] = environment["POSTGRES_DB"] as? String ?? "postgres"
        }
        return databases
    }

    func testExternalRehearsalRunsOnClustersLaidOutAsTheComposeFile() throws {
        let services = try Self.postgresServices()
        XCTAssertEqual(services.keys.sorted(), ["metadata", "source0", "source1", "target1", "target2"])
        let map = try RehearsalTopology.readMap(Self.dockerDirectory + "/map.yml")
        XCTAssertEqual(map.sources.count, 2)
        XCTAssertEqual(map.targets.count, 3)
        try LocalClusterSet.with(count: services.count) { set in
            var clusters: [String: LocalCluster] = [:]
            for (i, name) in services.keys.sorted().enumerated() {
                clusters[name] = set.clusters[i]
                try set.clusters[i].createDatabase(services[name]!)
            }
            // Every connection string of the map names a compose service and the database it creates.
            func local(_ raw: String) throws -> String {
                let options = try ConnectionString(raw).options
                let host = try XCTUnwrap(options["host"]), database = try XCTUnwrap(options["dbname"])
                let cluster = try XCTUnwrap(clusters[host], "map.yml names \(host), which compose.yml does not run")
                XCTAssertEqual(services[host], database, "map.yml's database on \(host) is not the one compose.yml creates")
                return cluster.connectionString(database: database, user: options["user"] ?? "postgres").unsafeRawValue
            }
            func quoted(_ s: String) -> String { "\"" + s.replacingOccurrences(of: "\"", with: "\\\"") + "\"" }
            let yaml = """
                metadata: \(quoted(try local(map.metadata)))
                sources: [\(try map.sources.map { quoted(try local($0)) }.joined(separator: ", "))]
                targets: [\(try map.targets.map { quoted(try local($0)) }.joined(separator: ", "))]
                function: \(map.function ?? "hash")
                source_function: \(map.source_function ?? "modulo")
                """
            let path = NSTemporaryDirectory() + "reshard-map-\(UUID().uuidString).yml"
            try yaml.write(toFile: path, atomically: true, encoding: .utf8)
            defer { try? FileManager.default.removeItem(atPath: path) }
            let outcome = try ReshardCLI.run([
                "rehearse", "--external", path, "--rows", "900", "--writes-per-second", "50", "--crashes", "2", "--seed", "2",
                "--catch-up-seconds", "3", "--json",
            ])
            let report = (try? JSONSerialization.jsonObject(with: Data(outcome.stdout.utf8))) as? [String: Any] ?? [:]
            XCTAssertEqual(report["external"] as? Bool, true)
            XCTAssertEqual(report["sharedTargets"] as? [String], ["t0 = s0"])
            let faults = report["faults"] as? [[String: Any]] ?? []
            // The two scheduled, and the lock holder across the first cutover attempt (shared cutover goes through).
            XCTAssertEqual(faults.filter { ($0["point"] as? String) != "the first cutover attempt" }.count, 2)
            XCTAssertFalse(faults.contains { ($0["kind"] as? String)?.hasPrefix("restart") == true }, "external servers are not restarted")
            XCTAssertEqual(outcome.status, 0, "\(outcome.stdout.suffix(3000))\n\(outcome.stderr.suffix(2000))")
            XCTAssertEqual(report["verdict"] as? String, "pass")
        }
    }
}
