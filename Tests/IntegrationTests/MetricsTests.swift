import Foundation
import PostgresClient
import XCTest

/// `--metrics-listen`: a real scrape of `/metrics` while `apply` runs, in Prometheus' text format.
final class MetricsTests: XCTestCase {
    /// `name{labels} value` lines, summed per metric name (over label sets).
    private func parse(_ text: String) -> [String: Double] {
        var values: [String: Double] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            let parts = line.split(separator: " ")
            guard parts.count == 2, let value = Double(parts[1]) else {
                XCTFail("not a sample line: \(line)")
                continue
            }
            let name = String(parts[0].prefix { $0 != "{" })
            values[name, default: 0] += value
        }
        return values
    }

    private func scrape(_ address: String) throws -> String {
        let outcome = try Self.run(["/usr/bin/curl", "-sS", "--max-time", "5", "http://\(address)/metrics"])
        XCTAssertEqual(outcome.status, 0, outcome.output)
        return outcome.output
    }

    private static func run(_ command: [String], input: String? = nil) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: command[0])
        process.arguments = Array(command.dropFirst())
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        let stdin = Pipe()
        process.standardInput = stdin
        try process.run()
        if let input { stdin.fileHandleForWriting.write(Data(input.utf8)) }
        try stdin.fileHandleForWriting.close()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    func testScrapeDuringApplyParsesAndShowsProgress() throws {
        let fixture = try PlanFixture(self)
        try ReferenceData.load(fixture, scale: 0.05)
        let config = try fixture.writeConfig(tables: ReferenceData.tables)
        let load = WriteLoad(sources: fixture.sources, longTransactions: false)
        defer { load.stop() }
        let apply = try ReshardCLI.start(["apply", "-c", config, "--metrics-listen", "127.0.0.1:0"])

        var address: String?
        XCTAssertTrue(eventually(timeout: 60) {
            address = apply.stderr.split(separator: "\n").first { $0.hasPrefix("metrics: http://") }
                .map { String($0.dropFirst("metrics: http://".count).dropLast("/metrics".count)) }
            return address != nil
        }, apply.stderr)
        let url = try XCTUnwrap(address)

        // Copied rows rise to the whole data set; the catch-up's counter keeps rising under writes.
        var copied: [Double] = [], applied: [Double] = []
        XCTAssertTrue(try eventually(timeout: 120) {
            let figures = parse(try scrape(url))
            copied.append(figures["reshard_rows_copied_total"] ?? 0)
            applied.append(figures["reshard_catchup_applied_total"] ?? 0)
            return (figures["reshard_phase"] ?? 0) == 1 && applied.filter { $0 > 0 }.count >= 2
                && Set(applied).count >= 2 && figures["reshard_table_copied"] == Double(ReferenceData.tables.count)
        }, "copied \(copied.suffix(5)) applied \(applied.suffix(5)) \(apply.stderr)")
        XCTAssertEqual(copied, copied.sorted(), "a counter never goes down")
        XCTAssertEqual(applied, applied.sorted(), "a counter never goes down")
        XCTAssertGreaterThan(copied.last ?? 0, 0)

        let text = try scrape(url)
        XCTAssertTrue(text.contains("reshard_phase{"), text)
        XCTAssertFalse(text.contains("password"), text)
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/promtool") {
            let check = try Self.run(["/usr/bin/promtool", "check", "metrics"], input: text)
            // promtool exits 0 for valid text; lint warnings (missing HELP) are printed but not errors.
            XCTAssertFalse(check.output.contains("error"), check.output)
        }
        apply.signal(SIGTERM)
        apply.wait()
    }

    func testAMalformedListenAddressIsRefused() throws {
        let outcome = try ReshardCLI.run(["apply", "-c", "/nonexistent.yml", "--metrics-listen", "localhost"])
        XCTAssertEqual(outcome.status, 2)
        XCTAssertTrue(outcome.stderr.contains("--metrics-listen must be HOST:PORT"), outcome.stderr)
        XCTAssertEqual(outcome.stderr.split(separator: "\n").count, 1, outcome.stderr)
    }
}
