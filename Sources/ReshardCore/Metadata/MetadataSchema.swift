import PostgresClient

/// The versioned metadata schema: the SQL files of `migrations/`, embedded in the binary.
///
/// File names are `NNNN_name.sql`; NNNN is the version. Each pending file is applied in its own
/// transaction together with its `reshard.schema_version` row, under an advisory lock so two
/// coordinators starting at once do not race. A database already at the newest version is only
/// read, never written.
public struct MetadataSchema: Sendable {
    public struct Step: Sendable, Equatable {
        public var version: Int
        public var file: String
        public var sql: String
        /// FNV-1a of the SQL text: tells whether an applied file was edited afterwards.
        public var checksum: String { fnv1a64Hex(sql) }
    }

    public let steps: [Step]

    /// The schema compiled into this binary.
    public static let current = try! MetadataSchema(files: embedded)

    public init(files: [(file: String, sql: String)]) throws {
        var steps: [Step] = []
        for (file, sql) in files {
            guard let prefix = file.split(separator: "_").first, let version = Int(prefix), version > 0 else {
                throw ReshardError.badInput("migration file \(file): name must start with a version number, like 0001_name.sql")
            }
            if let last = steps.last, last.version >= version {
                throw ReshardError.badInput("migration file \(file): version \(version) does not follow \(last.version)")
            }
            steps.append(Step(version: version, file: file, sql: sql))
        }
        self.steps = steps
    }

    public var latestVersion: Int { steps.last?.version ?? 0 }

    /// What applying the schema would do, given the versions (and checksums) a database records.
    public func pending(applied: [Int: String]) throws -> [Step] {
        if let newest = applied.keys.max(), newest > latestVersion {
            throw ReshardError.refused(
                "metadata schema is at version \(newest), newer than this reshard knows (\(latestVersion)): upgrade reshard")
        }
        for step in steps {
            if let recorded = applied[step.version], recorded != step.checksum {
                throw ReshardError.refused(
                    "metadata schema version \(step.version) (\(step.file)) differs from the one applied to this database")
            }
        }
        return steps.filter { applied[$0.version] == nil }
    }
}

/// What `MetadataSchema.apply(to:)` did.
public struct MetadataSchemaReport: Sendable, Codable, Equatable {
    public var versionBefore: Int
    public var versionAfter: Int
    public var applied: [String]
}

extension MetadataSchema {
    /// Brings the metadata database up to `latestVersion`. Running it again is a no-op that
    /// writes nothing.
    public func apply(to connection: PGConnection) throws -> MetadataSchemaReport {
        let before = try appliedVersions(connection)
        let versionBefore = before.keys.max() ?? 0
        if try pending(applied: before).isEmpty {
            return MetadataSchemaReport(versionBefore: versionBefore, versionAfter: versionBefore, applied: [])
        }
        var appliedFiles: [String] = []
        for step in steps {
            let done: Bool = try connection.transaction { conn in
                try MetadataLock.schema.lockForTransaction(on: conn)
                try conn.execute(
                    """
                    SET LOCAL client_min_messages = warning;
                    CREATE SCHEMA IF NOT EXISTS reshard;
                    CREATE TABLE IF NOT EXISTS reshard.schema_version (
                        version    integer PRIMARY KEY,
                        file       text NOT NULL,
                        checksum   text NOT NULL,
                        applied_at timestamptz NOT NULL DEFAULT now(),
                        applied_by text NOT NULL DEFAULT current_user
                    )
                    """)
                // Another coordinator may have applied it while we waited for the lock.
                let now = try appliedVersions(conn)
                guard try pending(applied: now).contains(step) else { return false }
                try conn.execute(step.sql)
                try conn.query(
                    "INSERT INTO reshard.schema_version (version, file, checksum) VALUES ($1, $2, $3)",
                    [step.version, step.file, step.checksum])
                return true
            }
            if done { appliedFiles.append(step.file) }
        }
        let after = try appliedVersions(connection).keys.max() ?? 0
        return MetadataSchemaReport(versionBefore: versionBefore, versionAfter: after, applied: appliedFiles)
    }

    /// Versions and checksums recorded in the database; empty when the schema was never applied.
    public func appliedVersions(_ connection: PGConnection) throws -> [Int: String] {
        let exists = try connection.query("SELECT to_regclass('reshard.schema_version') IS NOT NULL")
        guard try exists.get(0, 0, as: Bool.self) else { return [:] }
        let rows = try connection.query("SELECT version, checksum FROM reshard.schema_version")
        var versions: [Int: String] = [:]
        for row in 0..<rows.rowCount {
            versions[try rows.get(row, 0, as: Int.self)] = try rows.get(row, 1, as: String.self)
        }
        return versions
    }
}

/// 64-bit FNV-1a as 16 hex digits: a stable fingerprint, not a security measure.
public func fnv1a64Hex(_ text: String) -> String {
    var hash: UInt64 = 0xcbf2_9ce4_8422_2325
    for byte in text.utf8 {
        hash ^= UInt64(byte)
        hash = hash &* 0x0000_0100_0000_01b3
    }
    let hex = String(hash, radix: 16)
    return String(repeating: "0", count: 16 - hex.count) + hex
}
