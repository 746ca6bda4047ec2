import Foundation

/// Keeps passwords out of anything we print.
///
/// Connection strings are only ever shown through `ConnectionString.description`, which is built
/// from parsed fields without the password. As a second line of defence every message that comes
/// from libpq passes through `scrub`, which blanks `password=...` pairs and URI user-info secrets.
enum Redaction {
    static let mask = "********"

    /// Collapses a (possibly multi-line) libpq message into one line and scrubs it.
    static func oneLine(_ text: String) -> String {
        let collapsed = text.split(whereSeparator: { $0 == "\n" || $0 == "\r" || $0 == "\t" })
            .map { $0.trimmingSpaces() }
            .filter { !$0.isEmpty }
            .joined(separator: " ")
        return scrub(collapsed)
    }

    /// What stands for a value libpq quoted back from a connection string.
    static let hiddenValue = "(value not shown)"

    /// A `PQconninfoParse` error without the parts of the string libpq quotes back: a mistyped
    /// string may hold the password anywhere (`invalid percent-encoded token: "100%S3cr3t"`), so
    /// only quoted option names (`keywords`), simple option names in "invalid connection option"
    /// and single punctuation characters (`missing "=" after ...`) are kept.
    static func parseError(_ reason: String, keywords: Set<String>) -> String {
        let text = hidingOptionValues(oneLine(reason))
        let namesAnOption = text.hasPrefix("invalid connection option") || text.hasPrefix("invalid URI query parameter")
        var result = ""
        var rest = Substring(text)
        while let open = rest.firstIndex(of: "\"") {
            result += rest[..<open]
            let afterOpen = rest.index(after: open)
            guard let close = rest[afterOpen...].firstIndex(of: "\"") else {
                result += hiddenValue
                return result
            }
            let quoted = rest[afterOpen..<close]
            let isName = !quoted.isEmpty && quoted.count <= 40 && quoted.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") }
            let isPunctuation = quoted.count == 1 && quoted.allSatisfy { $0.isASCII && !$0.isLetter && !$0.isNumber }
            if keywords.contains(String(quoted)) || isPunctuation || (namesAnOption && isName) {
                result += rest[open...close]
            } else {
                result += hiddenValue
            }
            rest = rest[rest.index(after: close)...]
        }
        result += rest
        return result
    }

    /// Messages libpq gives on connecting that quote an option's value back
    /// (`invalid integer value "S3cr3t" for connection option "port"`): the option is named, the
    /// value is not (it may be a password in the wrong place).
    static func hidingOptionValues(_ text: String) -> String {
        var out = text
        out = out.replacing(#/invalid integer value "[^"]*" for connection option "([A-Za-z_]+)"/#) {
            "invalid integer value for connection option \"\($0.1)\" \(hiddenValue)"
        }
        out = out.replacing(#/invalid ([A-Za-z_ ]+) value: "[^"]*"/#) { "invalid \($0.1) value \(hiddenValue)" }
        out = out.replacing(#/invalid port number: "[^"]*"/#) { _ in "invalid port number \(hiddenValue)" }
        out = out.replacing(#/could not parse network address "[^"]*"/#) { _ in "could not parse network address (hostaddr) \(hiddenValue)" }
        return out
    }

    /// Removes `password=secret` (also quoted) and `scheme://user:secret@` from a text.
    static func scrub(_ text: String) -> String {
        var out = scrubKeywordPasswords(text)
        out = scrubURIPasswords(out)
        return out
    }

    private static func scrubKeywordPasswords(_ text: String) -> String {
        var result = ""
        var rest = Substring(text)
        while let range = rest.range(of: "password", options: .caseInsensitive) {
            result += rest[..<range.upperBound]
            var cursor = range.upperBound
            // optional spaces, '=', optional spaces
            while cursor < rest.endIndex, rest[cursor] == " " { cursor = rest.index(after: cursor) }
            guard cursor < rest.endIndex, rest[cursor] == "=" else {
                rest = rest[range.upperBound...]
                continue
            }
            cursor = rest.index(after: cursor)
            while cursor < rest.endIndex, rest[cursor] == " " { cursor = rest.index(after: cursor) }
            result += "=" + mask
            if cursor < rest.endIndex, rest[cursor] == "'" {
                // quoted value: skip to the closing unescaped quote
                cursor = rest.index(after: cursor)
                while cursor < rest.endIndex, rest[cursor] != "'" {
                    if rest[cursor] == "\\" { cursor = rest.index(after: cursor) }
                    if cursor < rest.endIndex { cursor = rest.index(after: cursor) }
                }
                if cursor < rest.endIndex { cursor = rest.index(after: cursor) }
            } else {
                while cursor < rest.endIndex, rest[cursor] != " ", rest[cursor] != "&", rest[cursor] != "\"" {
                    cursor = rest.index(after: cursor)
                }
            }
            rest = rest[cursor...]
        }
        return result + rest
    }

    private static func scrubURIPasswords(_ text: String) -> String {
        var result = ""
        var rest = Substring(text)
        while let scheme = rest.range(of: "://") {
            result += rest[..<scheme.upperBound]
            rest = rest[scheme.upperBound...]
            // user-info ends at the last '@' before the next '/', '?' or space
            let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" || $0 == " " }) ?? rest.endIndex
            let authority = rest[..<authorityEnd]
            if let at = authority.lastIndex(of: "@"), let colon = authority[..<at].firstIndex(of: ":") {
                result += authority[..<colon] + ":" + mask + authority[at...]
                rest = rest[authorityEnd...]
            }
        }
        return result + rest
    }
}

extension Substring {
    func trimmingSpaces() -> Substring {
        var s = self
        while let f = s.first, f == " " { s = s.dropFirst() }
        while let l = s.last, l == " " { s = s.dropLast() }
        return s
    }
}
