import CLibPQ

/// Quoting through libpq (`PQescapeIdentifier`, `PQescapeLiteral`), which knows the connection's
/// encoding. Use it for every identifier that goes into SQL text; values go as parameters.
extension PGConnection {
    /// `we"ird; table` -> `"we""ird; table"`
    public func quoteIdentifier(_ identifier: String) throws -> String {
        try escape(identifier) { PQescapeIdentifier(handle, $0, $1) }
    }

    /// `it's` -> `'it''s'` (or an `E'...'` literal when backslashes need it)
    public func quoteLiteral(_ literal: String) throws -> String {
        try escape(literal) { PQescapeLiteral(handle, $0, $1) }
    }

    /// A schema-qualified name, each part quoted: `"public"."users"`.
    public func quote(_ name: QualifiedName) throws -> String {
        let table = try quoteIdentifier(name.name)
        guard let schema = name.schema else { return table }
        return try quoteIdentifier(schema) + "." + table
    }

    private func escape(
        _ text: String, _ call: (UnsafePointer<CChar>, Int) -> UnsafeMutablePointer<CChar>?
    ) throws -> String {
        try lock.withLock {
            let utf8 = Array(text.utf8CString)
            guard let escaped = utf8.withUnsafeBufferPointer({ call($0.baseAddress!, utf8.count - 1) }) else {
                throw PostgresError(code: .server, message: lastErrorMessage(), endpoint: endpoint)
            }
            defer { PQfreemem(escaped) }
            return String(cString: escaped)
        }
    }
}

/// A table name with an optional schema, kept as separate parts so no parsing of quoted text is
/// ever needed to build SQL.
public struct QualifiedName: Hashable, Sendable, CustomStringConvertible, Codable {
    public var schema: String?
    public var name: String

    public init(schema: String? = nil, _ name: String) {
        self.schema = schema
        self.name = name
    }

    /// `public.users` for people; quoted form comes from `PGConnection.quote(_:)`.
    public var description: String { schema.map { "\($0).\(name)" } ?? name }
}
