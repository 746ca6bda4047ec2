import XCTest

@testable import ReshardCore

final class NameSuggestionTests: XCTestCase {
    func testSuggestsTheClosestNameOnlyWhenItLooksLikeATypo() {
        XCTAssertEqual(NameSuggestion.closest(to: "userz", among: ["posts", "users", "likes"]), "users")
        XCTAssertEqual(NameSuggestion.closest(to: "public.postz", among: ["public.posts", "public.users"]), "public.posts")
        XCTAssertNil(NameSuggestion.closest(to: "invoices", among: ["posts", "users"]))
        XCTAssertNil(NameSuggestion.closest(to: "ab", among: ["xy"]))
        XCTAssertEqual(NameSuggestion.distance("kitten", "sitting"), 3)
    }
}
