import Foundation
import PostgresClient
import ReshardCore
import XCTest

/// Issue 9: one output convention for every command. With `--json`: the result as one JSON
/// object on stdout, progress as JSON lines on stderr. Without: human output on stdout, progress
/// on stderr.
final class OutputConventionTests: XCTestCase {
    private func lines(_ text: String) -> [String] { text.split(separator: "\n").map(String.init) }

    /// Progress lines: every stderr line is a JSON object; events are the ones with `level`.
    private func progressLines(_ text: String) throws -> [String] {
        try lines(text).filter { line in
            let object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], line)
            return object["level"] == nil
        }
    }

    func testApplyAndVerifyPutTheResultOnStdoutAndProgressOnStderr() throws {
        let fixture = try PlanFixture(self)
        try ReferenceData.load(fixture, scale: 0.01)
        let config = try fixture.writeConfig(tables: ReferenceData.tables, sourceFunction: "modulo", sourceKeys: ["handles": "user_id"])

        let apply = try ReshardCLI.run(["apply", "-c", config, "--until", "backfilled", "--json"])
        XCTAssertEqual(apply.status, 0, apply.stderr)
        XCTAssertEqual(lines(apply.stdout).count, 1, "one result object: \(apply.stdout)")
        let outcome = try JSONDecoder().decode(ApplyOutcome.self, from: Data(apply.stdout.utf8))
        XCTAssertTrue(outcome.reachedGoal)
        XCTAssertEqual(outcome.goal, .backfilled)
        XCTAssertEqual(outcome.progress.rowsCopied, try XCTUnwrap(try ReshardCLI.status(config)).rowsCopied)
        let progress = try progressLines(apply.stderr).map { try JSONDecoder().decode(ApplyProgress.self, from: Data($0.utf8)) }
        XCTAssertFalse(progress.isEmpty, "progress lines on stderr")

        let human = try ReshardCLI.run(["apply", "-c", config, "--until", "caught-up"])
        XCTAssertEqual(human.status, 0, human.stderr)
        XCTAssertEqual(lines(human.stdout).count, 1, human.stdout)
        XCTAssertTrue(human.stdout.hasPrefix("migration plan-test: reached caught-up"), human.stdout)
        XCTAssertFalse(human.stderr.isEmpty, "the progress goes to stderr")
        XCTAssertFalse(human.stdout.contains("rows/s"), "no progress on stdout: \(human.stdout)")

        let verify = try ReshardCLI.run(["verify", "-c", config, "--json", "--chunk-rows", "1000"])
        XCTAssertEqual(verify.status, 0, verify.stdout + verify.stderr)
        XCTAssertEqual(lines(verify.stdout).count, 1, verify.stdout)
        XCTAssertEqual(try JSONDecoder().decode(VerifyResult.self, from: Data(verify.stdout.utf8)).identical, true)
        for line in try progressLines(verify.stderr) {
            XCTAssertNoThrow(try JSONDecoder().decode(VerifyProgress.self, from: Data(line.utf8)), line)
        }
        for command in [["status", "-c", config, "--json"], ["plan", "-c", config, "--json"]] {
            let outcome = try ReshardCLI.run(command)
            XCTAssertEqual(outcome.status, 0, outcome.stderr)
            XCTAssertEqual(lines(outcome.stdout).count, 1, "\(command): \(outcome.stdout)")
            XCTAssertNoThrow(try JSONSerialization.jsonObject(with: Data(outcome.stdout.utf8)), "\(command)")
        }
    }
}

extension ReshardCLI {
    /// `reshard status --json`, decoded; nil when it fails.
    static func status(_ config: String) throws -> MigrationStatus? {
        let outcome = try run(["status", "-c", config, "--json"])
        guard outcome.status == 0 else { return nil }
        return try JSONDecoder().decode(MigrationStatus.self, from: Data(outcome.stdout.utf8))
    }
}

final class HelpTests: XCTestCase {
    /// Issue 14: `reshard help nosuch` exited 0 with the overview.
    func testHelpOnAnUnknownCommandIsAUsageError() throws {
        let unknown = try ReshardCLI.run(["help", "nosuch"])
        XCTAssertEqual(unknown.status, 2, unknown.stdout)
        XCTAssertEqual(unknown.stderr, "reshard: error: unknown command 'nosuch' (see 'reshard help')\n")
        XCTAssertEqual(unknown.stdout, "")
        let known = try ReshardCLI.run(["help", "apply"])
        XCTAssertEqual(known.status, 0, known.stderr)
        XCTAssertTrue(known.stdout.contains("--until"), known.stdout)
        XCTAssertEqual(try ReshardCLI.run(["help"]).status, 0)
    }
}
