import XCTest

@testable import PostgresClient

final class RedactionTests: XCTestCase {
    func testScrubsKeywordPasswordsPlainAndQuoted() {
        XCTAssertEqual(
            Redaction.scrub("host=db password=s3cret user=app"), "host=db password=******** user=app")
        XCTAssertEqual(
            Redaction.scrub(#"host=db password = 'it\'s \\ x' user=app"#), "host=db password=******** user=app")
        XCTAssertEqual(Redaction.scrub("PASSWORD=abc"), "PASSWORD=********")
    }

    func testScrubsURIUserInfo() {
        XCTAssertEqual(
            Redaction.scrub("postgres://app:s3cr@t@db.example:5432/app?sslmode=require"),
            "postgres://app:********@db.example:5432/app?sslmode=require")
        // No password: unchanged.
        XCTAssertEqual(Redaction.scrub("postgresql://app@db/app"), "postgresql://app@db/app")
    }

    func testLeavesOrdinaryTextAlone() {
        let message = #"password authentication failed for user "app""#
        XCTAssertEqual(Redaction.scrub(message), message)
    }

    /// Issue 15.7: what libpq quotes back from a mistyped string is not shown, option names are.
    func testParseErrorsHideQuotedValuesButNameTheOption() {
        let keywords: Set<String> = ["password", "port", "host"]
        XCTAssertEqual(
            Redaction.parseError(#"invalid percent-encoded token: "100%S3cr3tPw""#, keywords: keywords),
            "invalid percent-encoded token: (value not shown)")
        XCTAssertEqual(
            Redaction.parseError(#"missing "=" after "S3cr3tPw" in connection info string"#, keywords: keywords),
            #"missing "=" after (value not shown) in connection info string"#)
        XCTAssertEqual(
            Redaction.parseError(#"missing "=" after "password" in connection info string"#, keywords: keywords),
            #"missing "=" after "password" in connection info string"#)
        XCTAssertEqual(
            Redaction.parseError(#"invalid connection option "bogus_option""#, keywords: keywords),
            #"invalid connection option "bogus_option""#)
        XCTAssertEqual(
            Redaction.hidingOptionValues(#"invalid integer value "S3cr3tPw" for connection option "port""#),
            #"invalid integer value for connection option "port" (value not shown)"#)
        XCTAssertEqual(Redaction.hidingOptionValues(#"invalid sslmode value: "S3cr3tPw""#), "invalid sslmode value (value not shown)")
        XCTAssertEqual(Endpoint(host: "app", port: "S3cr3tPw", database: "db", user: "u").port, "?")
        XCTAssertEqual(Endpoint(host: "a,b", port: "5432,5433", database: "db", user: "u").port, "5432,5433")
    }

    func testOneLineCollapsesLibpqMessages() {
        let libpq = "connection to server at \"127.0.0.1\", port 1 failed: Connection refused\n\tIs the server running?\n"
        XCTAssertEqual(
            Redaction.oneLine(libpq),
            "connection to server at \"127.0.0.1\", port 1 failed: Connection refused Is the server running?")
    }
}

final class ConnectionStringTests: XCTestCase {
    func testDescriptionNeverShowsThePassword() throws {
        for raw in [
            "postgres://app:hunter2secret@10.0.0.1:6432/appdb",
            "host=10.0.0.1 port=6432 dbname=appdb user=app password=hunter2secret",
        ] {
            let dsn = try ConnectionString(raw, label: "s1")
            XCTAssertEqual(dsn.description, "s1 (app@10.0.0.1:6432/appdb)")
            XCTAssertFalse("\(dsn) \(dsn.endpoint) \(String(reflecting: dsn.endpoint))".contains("hunter2secret"))
            XCTAssertEqual(dsn.options["password"], "hunter2secret")
        }
    }

    func testInvalidStringIsRejectedWithoutEchoingSecrets() {
        XCTAssertThrowsError(try ConnectionString("host=x password=hunter2secret bogus_option=1")) { error in
            let error = error as! PostgresError
            XCTAssertEqual(error.code, .invalidConnectionString)
            XCTAssertTrue(error.summary.contains("bogus_option"), error.summary)
            XCTAssertFalse(error.debugDescription.contains("hunter2secret"))
        }
    }

    /// A plan file keeps `${VAR}` references as the config wrote them, never an expanded secret.
    func testPlanFileValueKeepsVariablesNeverSecrets() throws {
        var fromVariable = try ConnectionString("postgres://app:hunter2secret@db/app")
        fromVariable.template = "postgres://app:${DB_PASSWORD}@db/app"
        XCTAssertEqual(fromVariable.planFileValue, "postgres://app:${DB_PASSWORD}@db/app")
        var literal = try ConnectionString("host=db password=hunter2secret dbname=x")
        literal.template = "host=${DB_HOST} password=hunter2secret dbname=x"
        XCTAssertEqual(literal.planFileValue, "dbname='x' host='${DB_HOST}'")
        var wholeString = try ConnectionString("host=db password=hunter2secret")
        wholeString.template = "${DB_DSN}"
        XCTAssertFalse(wholeString.planFileValue.contains("hunter2secret"))
        XCTAssertFalse(try ConnectionString("host=db password=hunter2secret").planFileValue.contains("hunter2secret"))
    }

    func testSameDatabaseComparesHostPortAndName() throws {
        let a = try ConnectionString("postgres://app:x@10.0.0.1:5432/app")
        let b = try ConnectionString("host=10.0.0.1 port=5432 dbname=app user=other")
        let c = try ConnectionString("host=10.0.0.1 port=5432 dbname=app2")
        XCTAssertTrue(a.sameDatabase(as: b))
        XCTAssertFalse(a.sameDatabase(as: c))
    }

    func testErrorDescriptionIsBlandAndSummaryIsOneLine() {
        let error = PostgresError(
            code: .server, message: "duplicate key value\nviolates", sqlState: "23505", detail: "Key (id)=(1) already exists.",
            endpoint: Endpoint(host: "h", port: "1", database: "d", user: "u", label: "t0"), statement: "INSERT ...")
        XCTAssertEqual(error.description, "PostgresError(code: server, sqlState: 23505)")
        XCTAssertEqual(
            error.summary,
            #"t0 (h:1 database "d"): [23505] duplicate key value violates (detail: Key (id)=(1) already exists.)"#)
        XCTAssertTrue(error.debugDescription.contains("INSERT ..."))
    }
}
