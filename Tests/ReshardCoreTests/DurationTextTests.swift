import ReshardCore
import XCTest

final class DurationTextTests: XCTestCase {
    func testDurationsAsPeopleWriteThem() {
        XCTAssertEqual(DurationText.seconds("30"), 30)
        XCTAssertEqual(DurationText.seconds("0.5"), 0.5)
        XCTAssertEqual(DurationText.seconds("30s"), 30)
        XCTAssertEqual(DurationText.seconds("500ms"), 0.5)
        XCTAssertEqual(DurationText.seconds("2m"), 120)
        XCTAssertEqual(DurationText.seconds("1m30s"), 90)
        XCTAssertEqual(DurationText.seconds("1h"), 3600)
        for bad in ["", "s", "10x", "ten", "1s2", "-"] { XCTAssertNil(DurationText.seconds(bad), bad) }
    }
}
