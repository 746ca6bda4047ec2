/// An error from PostgreSQL or from libpq, with enough context to act on it.
///
/// Following postgres-nio, `description` is deliberately bland (it may end up in logs that
/// should not carry data), `debugDescription` has everything, and `summary` is the one line the
/// CLI prints. No field ever contains a password: libpq messages are scrubbed on the way in.
public struct PostgresError: Error, Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Sendable {
            case invalidConnectionString, connectionFailed, connectionLost, server, cancelled, copyFailed
            case unexpectedResult, decoding
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The connection string could not be parsed by libpq.
        public static let invalidConnectionString = Code(.invalidConnectionString)
        /// Connecting failed: wrong password, unreachable host, unknown database...
        public static let connectionFailed = Code(.connectionFailed)
        /// An established connection broke while in use.
        public static let connectionLost = Code(.connectionLost)
        /// The server reported an error for a statement (see `sqlState`).
        public static let server = Code(.server)
        /// The statement was cancelled (SQLSTATE 57014), by `PGConnection.cancel()` or a timeout.
        public static let cancelled = Code(.cancelled)
        /// A COPY stream failed on the client side.
        public static let copyFailed = Code(.copyFailed)
        /// The server answered with a result of a kind the caller did not expect.
        public static let unexpectedResult = Code(.unexpectedResult)
        /// A result value could not be converted to the requested Swift type.
        public static let decoding = Code(.decoding)

        public var description: String { base.rawValue }
    }

    public var code: Code
    /// Five-character SQLSTATE when the server sent one.
    public var sqlState: String?
    /// The primary message: the server's, or libpq's, on one line.
    public var message: String
    public var detail: String?
    public var hint: String?
    /// Where it happened: host, port, database and (when known) the shard's name.
    public var endpoint: Endpoint?
    /// The statement that failed, when there was one. Statements carry no passwords: secrets are
    /// only ever sent as connection parameters.
    public var statement: String?

    public init(
        code: Code, message: String, sqlState: String? = nil, detail: String? = nil, hint: String? = nil,
        endpoint: Endpoint? = nil, statement: String? = nil
    ) {
        self.code = code
        self.message = Redaction.oneLine(message)
        self.sqlState = sqlState
        self.detail = detail.map(Redaction.oneLine)
        self.hint = hint.map(Redaction.oneLine)
        self.endpoint = endpoint
        self.statement = statement
    }

    /// SQLSTATEs that mean "try again": serialization failures, deadlocks, and the server going away.
    public var isTransient: Bool {
        if code == .connectionLost { return true }
        guard let state = sqlState else { return false }
        return state == "40001" || state == "40P01" || state.hasPrefix("08") || state == "57P01"
            || state == "57P02" || state == "57P03"
    }

    public var description: String {
        "PostgresError(code: \(code)\(sqlState.map { ", sqlState: \($0)" } ?? ""))"
    }

    /// One line for people: where, what, and the server's detail and hint.
    public var summary: String {
        var parts: [String] = []
        if let endpoint { parts.append(endpoint.description + ":") }
        if let sqlState, code != .connectionFailed { parts.append("[\(sqlState)]") }
        parts.append(message)
        var line = parts.joined(separator: " ")
        if let detail, !detail.isEmpty { line += " (detail: \(detail))" }
        if let hint, !hint.isEmpty { line += " (hint: \(hint))" }
        return line
    }

    public var debugDescription: String {
        var fields = ["code: \(code)"]
        if let sqlState { fields.append("sqlState: \(sqlState)") }
        fields.append("message: \(message)")
        if let detail { fields.append("detail: \(detail)") }
        if let hint { fields.append("hint: \(hint)") }
        if let endpoint { fields.append("endpoint: \(endpoint)") }
        if let statement { fields.append("statement: \(statement)") }
        return "PostgresError(\(fields.joined(separator: ", ")))"
    }
}

/// Where a connection goes, for messages: never holds a password.
public struct Endpoint: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: String
    public var database: String
    public var user: String
    /// The shard's name in the topology (`s0`, `t1`, `metadata`...), when there is one.
    public var label: String?

    public init(host: String, port: String, database: String, user: String, label: String? = nil) {
        self.host = host
        // A port that is not a number (list) is a mistyped string, perhaps a password in the wrong
        // place (`postgres://app:S3cr3t/db`): never shown.
        self.port = !port.isEmpty && port.allSatisfy { $0.isASCII && ($0.isNumber || $0 == ",") } ? port : "?"
        self.database = database
        self.user = user
        self.label = label
    }

    /// `shard s1 (127.0.0.1:5432 database "app")`
    public var description: String {
        let place = "\(host):\(port) database \"\(database)\""
        guard let label else { return place }
        return "\(label) (\(place))"
    }
}
