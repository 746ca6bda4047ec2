/// A Swift value that can be sent as a text-format query parameter.
public protocol PGBindable: Sendable {
    var pgText: String? { get }
}

/// A Swift value that can be read from a text-format result column.
public protocol PGDecodable {
    /// `nil` when the text does not convert (or is NULL for a non-optional type).
    static func decode(pgText: String?) throws -> Self?
}

extension String: PGBindable, PGDecodable {
    public var pgText: String? { self }
    public static func decode(pgText: String?) -> String? { pgText }
}

extension Int: PGBindable, PGDecodable {
    public var pgText: String? { String(self) }
    public static func decode(pgText: String?) -> Int? { pgText.flatMap { Int($0) } }
}

extension Int64: PGBindable, PGDecodable {
    public var pgText: String? { String(self) }
    public static func decode(pgText: String?) -> Int64? { pgText.flatMap { Int64($0) } }
}

extension Int32: PGBindable, PGDecodable {
    public var pgText: String? { String(self) }
    public static func decode(pgText: String?) -> Int32? { pgText.flatMap { Int32($0) } }
}

extension Double: PGBindable, PGDecodable {
    public var pgText: String? { "\(self)" }
    public static func decode(pgText: String?) -> Double? { pgText.flatMap { Double($0) } }
}

extension Bool: PGBindable, PGDecodable {
    public var pgText: String? { self ? "t" : "f" }
    public static func decode(pgText: String?) -> Bool? {
        switch pgText {
        case "t", "true", "on", "1": true
        case "f", "false", "off", "0": false
        default: nil
        }
    }
}

extension Optional: PGDecodable where Wrapped: PGDecodable {
    /// NULL decodes to `.some(nil)`: present, and empty.
    public static func decode(pgText: String?) throws -> Self? {
        guard let pgText else { return .some(nil) }
        guard let value = try Wrapped.decode(pgText: pgText) else { return nil }
        return .some(value)
    }
}

extension Array: PGBindable where Element == String {
    /// A text[] literal: `{"a","b\"c"}`.
    public var pgText: String? {
        "{" + map { "\"" + $0.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") + "\"" }
            .joined(separator: ",") + "}"
    }
}
