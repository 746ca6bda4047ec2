import Foundation
import XCTest

@testable import ReshardCore

final class MetadataSchemaTests: XCTestCase {
    /// The binary must carry exactly what `migrations/` holds.
    func testEmbeddedMigrationsMatchTheMigrationsDirectory() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let dir = root.appendingPathComponent("migrations")
        let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasSuffix(".sql") }.sorted()
        XCTAssertEqual(MetadataSchema.current.steps.map(\.file), files)
        for step in MetadataSchema.current.steps {
            let onDisk = try String(contentsOf: dir.appendingPathComponent(step.file), encoding: .utf8)
            XCTAssertEqual(step.sql.trimmingCharacters(in: .whitespacesAndNewlines), onDisk.trimmingCharacters(in: .whitespacesAndNewlines), step.file)
        }
        XCTAssertGreaterThanOrEqual(MetadataSchema.current.latestVersion, 1)
    }

    func testPendingStepsAreThoseNotRecorded() throws {
        let schema = try MetadataSchema(files: [("0001_a.sql", "A"), ("0002_b.sql", "B"), ("0003_c.sql", "C")])
        let recorded = [1: schema.steps[0].checksum]
        XCTAssertEqual(try schema.pending(applied: recorded).map(\.version), [2, 3])
        XCTAssertEqual(try schema.pending(applied: [:]).map(\.version), [1, 2, 3])
        let all = Dictionary(uniqueKeysWithValues: schema.steps.map { ($0.version, $0.checksum) })
        XCTAssertEqual(try schema.pending(applied: all), [])
    }

    func testRefusesADatabaseNewerThanTheBinary() throws {
        let schema = try MetadataSchema(files: [("0001_a.sql", "A")])
        XCTAssertThrowsError(try schema.pending(applied: [1: schema.steps[0].checksum, 2: "x"])) { error in
            XCTAssertEqual((error as? ReshardError)?.exitCode, 2)
            XCTAssertTrue("\(error)".contains("version 2"), "\(error)")
        }
    }

    func testRefusesAnEditedAppliedMigration() throws {
        let schema = try MetadataSchema(files: [("0001_a.sql", "A")])
        XCTAssertThrowsError(try schema.pending(applied: [1: fnv1a64Hex("A changed")]))
    }

    func testFileNamesMustBeVersionedAndAscending() {
        XCTAssertThrowsError(try MetadataSchema(files: [("init.sql", "A")]))
        XCTAssertThrowsError(try MetadataSchema(files: [("0002_b.sql", "B"), ("0001_a.sql", "A")]))
        XCTAssertThrowsError(try MetadataSchema(files: [("0001_a.sql", "A"), ("0001_b.sql", "B")]))
    }

    func testFNV1aMatchesReferenceVectors() {
        XCTAssertEqual(fnv1a64Hex(""), "cbf29ce484222325")
        XCTAssertEqual(fnv1a64Hex("a"), "af63dc4c8601ec8c")
        XCTAssertEqual(fnv1a64Hex("foobar"), "85944171f73967e8")
    }
}
