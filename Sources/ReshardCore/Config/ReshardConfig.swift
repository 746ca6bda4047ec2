import ReshardRouting
import Foundation
import PostgresClient

/// `reshard.yml`: where the data is, where it must go, and which tables move together.
public struct ReshardConfig: Sendable {
    public struct Shard: Sendable {
        public var name: String
        public var dsn: ConnectionString
        /// Where it was written, for messages.
        public var line: Int
        /// Read replicas of the shard (`replicas:`): published in the shard map, and on a source
        /// watched by `apply --max-replica-lag`, which pauses the backfill while one lags (`ReplicaLag`).
        public var replicas: [ConnectionString]

        public init(name: String, dsn: ConnectionString, line: Int, replicas: [ConnectionString] = []) {
            self.name = name
            self.dsn = dsn
            self.line = line
            self.replicas = replicas
        }
    }

    public struct Table: Sendable {
        public var name: QualifiedName
        /// The shard key column, as PostgreSQL names it (unquoted names fold to lower case).
        public var key: String
        /// The column today's placement (`sourceFunction`) reads, when it is not `key`.
        public var sourceKey: String?
        public var line: Int

        public init(name: QualifiedName, key: String, sourceKey: String? = nil, line: Int) {
            self.name = name
            self.key = key
            self.sourceKey = sourceKey
            self.line = line
        }
    }

    public var file: String
    public var migration: String
    public var metadata: ConnectionString
    public var sources: [Shard]
    public var targets: [Shard]
    public var function: ShardFunction
    /// How rows are placed on the sources today, when the config says (`source.function`). Verify
    /// needs it to tell a source's own rows from the copies reshard wrote into it as a target.
    public var sourceFunction: ShardFunction?
    public var tables: [Table]

    /// Builds a config in code (the demo, tests); `load(path:)` reads one from YAML.
    public init(
        file: String, migration: String, metadata: ConnectionString, sources: [Shard], targets: [Shard],
        function: ShardFunction, sourceFunction: ShardFunction? = nil, tables: [Table]
    ) {
        self.sourceFunction = sourceFunction
        self.file = file
        self.migration = migration
        self.metadata = metadata
        self.sources = sources
        self.targets = targets
        self.function = function
        self.tables = tables
    }
}

extension QualifiedName {
    /// Parses a table name as SQL would: `users`, `public.users`, `"We.ird"."T"`. Unquoted parts
    /// fold to lower case; quoted parts keep everything, `""` standing for one `"`.
    public static func parse(_ text: String) throws -> QualifiedName {
        let parts = try parseIdentifierList(text)
        switch parts.count {
        case 1: return QualifiedName(parts[0])
        case 2: return QualifiedName(schema: parts[0], parts[1])
        default: throw ReshardError.badInput("'\(text)' is not a table name (expected table or schema.table)")
        }
    }

    /// Parses one identifier (a column name) with the same rules.
    public static func parseIdentifier(_ text: String) throws -> String {
        let parts = try parseIdentifierList(text)
        guard parts.count == 1 else { throw ReshardError.badInput("'\(text)' is not a column name") }
        return parts[0]
    }

    private static func parseIdentifierList(_ text: String) throws -> [String] {
        var parts: [String] = []
        let chars = Array(text.trimmingCharacters(in: .whitespaces))
        guard !chars.isEmpty else { throw ReshardError.badInput("empty name") }
        var i = 0
        while true {
            var part = ""
            if i < chars.count, chars[i] == "\"" {
                i += 1
                while true {
                    guard i < chars.count else { throw ReshardError.badInput("unterminated quoted name in '\(text)'") }
                    if chars[i] == "\"" {
                        if i + 1 < chars.count, chars[i + 1] == "\"" {
                            part.append("\"")
                            i += 2
                            continue
                        }
                        i += 1
                        break
                    }
                    part.append(chars[i])
                    i += 1
                }
                guard !part.isEmpty else { throw ReshardError.badInput("empty quoted name in '\(text)'") }
            } else {
                while i < chars.count, chars[i] != ".", chars[i] != "\"" {
                    part.append(chars[i].isASCII ? Character(chars[i].lowercased()) : chars[i])
                    i += 1
                }
                part = part.trimmingCharacters(in: .whitespaces)
                guard !part.isEmpty, !part.contains(" ") else { throw ReshardError.badInput("'\(text)' is not a valid name (quote it)") }
            }
            parts.append(part)
            if i == chars.count { return parts }
            guard chars[i] == "." else { throw ReshardError.badInput("'\(text)' is not a valid name") }
            i += 1
        }
    }
}
