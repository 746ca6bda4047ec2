/// Which target shard a row belongs to. Each function exists twice: here, for planning and
/// routing, and as the SQL expression from `sqlShardIndex`, run by the servers. The two must
/// agree bit for bit (a test checks it for every supported key type).
public struct ShardFunction: Sendable, Equatable, Codable {
    public enum Kind: String, Sendable, Codable, CaseIterable {
        /// The key type's PostgreSQL hash onto the signed 32-bit space, cut into contiguous
        /// ranges (as Citus does) or at explicit split points.
        case hash
        /// `((key % M) + M) % M`, integer keys only.
        case modulo
        /// Explicit ascending key boundaries, integer keys only.
        case range
    }

    public var kind: Kind
    public var shardCount: Int
    /// For `hash`: where shards 1..M-1 start in the hash space. For `range`: where shards
    /// 1..M-1 start in the key space. Empty for `modulo`.
    public var boundaries: [Int64]

    /// - Parameter boundaries: `split_points` (hash) or `boundaries` (range); `nil` for the
    ///   default even split of the hash space.
    public init(kind: Kind, shardCount: Int, boundaries: [Int64]? = nil) throws {
        guard shardCount >= 1 else { throw ShardFunctionError("a shard function needs at least one target shard") }
        self.kind = kind
        self.shardCount = shardCount
        switch kind {
        case .modulo:
            guard boundaries == nil else { throw ShardFunctionError("modulo takes no boundaries or split_points") }
            self.boundaries = []
        case .hash:
            let points = boundaries ?? Self.evenHashSplit(shardCount)
            try Self.check(points, count: shardCount, name: "split_points")
            guard points.allSatisfy({ $0 > Int64(Int32.min) && $0 <= Int64(Int32.max) }) else {
                throw ShardFunctionError("split_points must lie inside the int32 hash space, above \(Int32.min)")
            }
            self.boundaries = points
        case .range:
            guard let boundaries else {
                throw ShardFunctionError("range needs boundaries: \(shardCount - 1) ascending key values")
            }
            try Self.check(boundaries, count: shardCount, name: "boundaries")
            self.boundaries = boundaries
        }
    }

    /// Citus's layout: shard i starts at INT32_MIN + i * (2^32 / M); the last ends at INT32_MAX.
    public static func evenHashSplit(_ shardCount: Int) -> [Int64] {
        let increment = (Int64(1) << 32) / Int64(shardCount)
        return (1..<max(shardCount, 1)).map { Int64(Int32.min) + Int64($0) * increment }
    }

    private static func check(_ values: [Int64], count: Int, name: String) throws {
        guard values.count == count - 1 else {
            throw ShardFunctionError("\(name) must have \(count - 1) values for \(count) shards, found \(values.count)")
        }
        for (previous, next) in zip(values, values.dropFirst()) where next <= previous {
            throw ShardFunctionError("\(name) must be strictly ascending: \(next) follows \(previous)")
        }
    }

    /// The shard owning a position (a hash for `hash`, a key for `range`): how many boundaries
    /// are at or below it, exactly as SQL's `width_bucket(value, thresholds)` counts.
    public func bucket(_ value: Int64) -> Int {
        var low = 0, high = boundaries.count
        while low < high {
            let mid = (low + high) / 2
            if boundaries[mid] <= value { low = mid + 1 } else { high = mid }
        }
        return low
    }

    /// The target shard of a key.
    public func shard(for key: ShardKey) throws -> Int {
        switch (kind, key) {
        case (.hash, _): return bucket(Int64(key.postgresHash))
        case (.modulo, .int(let v, _)):
            let m = Int64(shardCount)
            return Int(((v % m) + m) % m)
        case (.range, .int(let v, _)): return bucket(v)
        default: throw ShardFunctionError("\(kind.rawValue) sharding needs an integer key")
        }
    }

    /// Whether this function can shard a key column of `type` (as `format_type` prints it).
    public func supports(_ type: KeyType) -> Bool {
        kind == .hash || type.isInteger
    }
}

/// The key column types reshard can shard on.
public enum KeyType: String, Sendable, Codable, CaseIterable {
    case smallint, integer, bigint, text, varchar = "character varying", uuid

    /// From `format_type(atttypid, atttypmod)`: `character varying(40)` is a varchar too.
    public init?(formatType: String) {
        if formatType.hasPrefix("character varying") { self = .varchar; return }
        self.init(rawValue: formatType)
    }

    public var isInteger: Bool { self == .smallint || self == .integer || self == .bigint }

    /// The PostgreSQL hash function of the type.
    public var hashFunction: String {
        switch self {
        case .smallint: "hashint2"
        case .integer: "hashint4"
        case .bigint: "hashint8"
        case .text, .varchar: "hashtext"
        case .uuid: "uuid_hash"
        }
    }
}

/// A shard key value as the planner and router see it.
public enum ShardKey: Sendable, Equatable {
    case int(Int64, KeyType)
    case text(String)
    case uuid([UInt8])

    /// Parses the text form PostgreSQL prints for a value of `type`.
    public init?(text: String, type: KeyType) {
        switch type {
        case .smallint, .integer, .bigint:
            guard let v = Int64(text) else { return nil }
            self = .int(v, type)
        case .text, .varchar: self = .text(text)
        case .uuid:
            let hex = text.filter { $0 != "-" && $0 != "{" && $0 != "}" }
            guard hex.count == 32 else { return nil }
            var bytes: [UInt8] = []
            var index = hex.startIndex
            while index < hex.endIndex {
                let next = hex.index(index, offsetBy: 2)
                guard let byte = UInt8(hex[index..<next], radix: 16) else { return nil }
                bytes.append(byte)
                index = next
            }
            self = .uuid(bytes)
        }
    }

    /// The value the type's PostgreSQL hash function returns.
    public var postgresHash: Int32 {
        switch self {
        case .int(let v, .smallint): PostgresHash.int2(Int16(truncatingIfNeeded: v))
        case .int(let v, .integer): PostgresHash.int4(Int32(truncatingIfNeeded: v))
        case .int(let v, _): PostgresHash.int8(v)
        case .text(let s): PostgresHash.text(s)
        case .uuid(let bytes): PostgresHash.uuid(bytes)
        }
    }
}

/// A shard function that cannot exist: too few shards, boundaries out of order. The config
/// loader adds the file and line.
public struct ShardFunctionError: Error, Sendable, CustomStringConvertible, Equatable {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
