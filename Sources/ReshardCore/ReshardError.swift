/// An error of reshard's own (as opposed to `PostgresError` from a server), with the exit code the
/// CLI uses: 2 for bad input or a refusal (nothing was changed), 1 for a runtime failure.
///
/// Following `PostgresError`: a `Code` to branch on, the one-line `description` the CLI prints
/// (`file:line: message` when it comes from a file), and `debugDescription` with everything,
/// including the underlying error. Callers never branch on message text.
public struct ReshardError: Error, Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Base: String, Sendable {
            case badInput, refused, failed, newerMetadata, stoppedEarly
        }
        private let base: Base
        private init(_ base: Base) { self.base = base }

        /// The input is wrong: config, flags, topology. Exit code 2.
        public static let badInput = Code(.badInput)
        /// The input is fine but the state of the world says no (lease held, wrong phase). Exit code 2.
        public static let refused = Code(.refused)
        /// Something failed while working. Exit code 1.
        public static let failed = Code(.failed)
        /// The metadata was written by a newer reshard (an unknown phase or schema version). Exit code 1.
        public static let newerMetadata = Code(.newerMetadata)
        /// A command was stopped (Ctrl-C, SIGTERM) before reaching the goal it was given. Exit code 4.
        public static let stoppedEarly = Code(.stoppedEarly)

        public var description: String { base.rawValue }

        public var exitCode: Int32 {
            switch base {
            case .badInput, .refused: 2
            case .failed, .newerMetadata: 1
            case .stoppedEarly: 4
            }
        }
    }

    /// Where in a file the problem is (the config, a plan file).
    public struct Location: Sendable, Hashable, CustomStringConvertible {
        public var file: String
        public var line: Int
        public init(file: String, line: Int) {
            self.file = file
            self.line = line
        }
        public var description: String { "\(file):\(line)" }
    }

    public var code: Code
    /// The problem, on one line per problem, without the location.
    public var message: String
    public var location: Location?
    /// The shard the problem is on, when there is one.
    public var shard: String?
    /// What caused it, for `debugDescription`.
    public var underlying: (any Error & Sendable)?

    public init(
        _ code: Code, _ message: String, at location: Location? = nil, shard: String? = nil,
        underlying: (any Error & Sendable)? = nil
    ) {
        self.code = code
        self.message = message
        self.location = location
        self.shard = shard
        self.underlying = underlying
    }

    public static func badInput(_ message: String, at location: Location? = nil, shard: String? = nil) -> ReshardError {
        ReshardError(.badInput, message, at: location, shard: shard)
    }

    public static func refused(_ message: String, at location: Location? = nil, shard: String? = nil) -> ReshardError {
        ReshardError(.refused, message, at: location, shard: shard)
    }

    public static func failed(_ message: String, shard: String? = nil, underlying: (any Error & Sendable)? = nil) -> ReshardError {
        ReshardError(.failed, message, shard: shard, underlying: underlying)
    }

    public var exitCode: Int32 { code.exitCode }

    /// The same error, placed in a file (for errors raised before the location was known).
    public func located(at location: Location) -> ReshardError {
        var copy = self
        if copy.location == nil { copy.location = location }
        return copy
    }

    public var description: String { location.map { "\($0): \(message)" } ?? message }

    public var debugDescription: String {
        var fields = ["code: \(code)", "message: \(message)"]
        if let location { fields.append("location: \(location)") }
        if let shard { fields.append("shard: \(shard)") }
        if let underlying { fields.append("underlying: \(String(reflecting: underlying))") }
        return "ReshardError(\(fields.joined(separator: ", ")))"
    }
}
