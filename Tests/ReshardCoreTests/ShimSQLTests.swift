import PostgresClient
import XCTest

@testable import ReshardCore

/// The capture functions as text: who they run as, and which settings they pin.
final class ShimSQLTests: XCTestCase {
    private func table(key: String = "user_id", keyTypes: [String]) -> Plan.Table {
        var columns = [TableSchema.Column(name: "user_id", type: "bigint", notNull: true)]
        for (i, type) in keyTypes.enumerated() { columns.append(.init(name: "k\(i)", type: type, notNull: true)) }
        return Plan.Table(
            name: QualifiedName(schema: nil, "t"), key: key, keyType: .bigint, columns: columns,
            uniqueKey: keyTypes.indices.map { "k\($0)" }, fingerprint: "f", estimateMethod: "exact", slices: [])
    }

    func testSettingsArePinnedExactlyWhenAKeyTypePrintsBySessionSettings() {
        XCTAssertFalse(Shim.pinsTextSettings(table(keyTypes: ["bigint", "text", "uuid", "character varying(40)", "numeric(10,2)"])))
        for type in ["timestamp with time zone", "date", "double precision", "real", "interval", "bytea", "money", "time without time zone"] {
            XCTAssertTrue(Shim.pinsTextSettings(table(keyTypes: ["bigint", type])), type)
        }
    }

    func testCaptureFunctionsRunAsTheirOwnerWithAPinnedSearchPath() {
        let pinned = Shim.captureFunction("reshard_shim.capture_x", body: "BEGIN RETURN NULL; END", pinningText: true)
        XCTAssertTrue(pinned.contains("SECURITY DEFINER\nSET search_path = pg_catalog, pg_temp SET \"DateStyle\" TO 'ISO, YMD'"), pinned)
        XCTAssertTrue(pinned.contains("SET \"TimeZone\" TO 'UTC'"), pinned)
        let plain = Shim.captureFunction("reshard_shim.capture_x", body: "BEGIN RETURN NULL; END", pinningText: false)
        XCTAssertTrue(plain.contains("SECURITY DEFINER\nSET search_path = pg_catalog, pg_temp\nAS $reshard$"), plain)
        XCTAssertFalse(plain.contains("TimeZone"))
        // A body holding the dollar-quote tag gets another tag.
        XCTAssertTrue(Shim.captureFunction("f", body: "-- $reshard$", pinningText: false).contains("AS $reshard_$"))
    }
}
