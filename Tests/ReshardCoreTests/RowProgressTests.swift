import XCTest

@testable import ReshardCore

final class RowProgressTests: XCTestCase {
    /// Issue 14: "247,325/216,000" was shown; an exceeded estimate is shown as copied/copied.
    func testAnExceededEstimateIsShownAgainstTheRowsCopied() {
        let p = RowProgress(copied: 247_325, estimated: 216_000, done: false)
        XCTAssertTrue(p.estimateExceeded)
        XCTAssertEqual(p.text, "247,325/247,325 (estimate exceeded)")
        XCTAssertLessThanOrEqual(p.fraction, 1)
    }

    func testAFinishedCopyIsComplete() {
        let under = RowProgress(copied: 900, estimated: 1_000, done: true)
        XCTAssertEqual(under.fraction, 1)
        XCTAssertEqual(under.text, "900/900")
        XCTAssertEqual(RowProgress(copied: 0, estimated: 0, done: true).fraction, 1)
    }

    func testRunningCopyIsAFractionOfTheEstimate() {
        let p = RowProgress(copied: 250, estimated: 1_000, done: false)
        XCTAssertEqual(p.fraction, 0.25)
        XCTAssertEqual(p.text, "250/1,000")
        XCTAssertEqual(RowProgress(copied: 0, estimated: 0, done: false).fraction, 0)
    }
}
