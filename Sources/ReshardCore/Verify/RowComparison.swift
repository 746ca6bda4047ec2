/// A set of rows as verify compares them without reading them: how many, and the sum of a 64-bit
/// hash of each row's canonical text, wrapping. A sum does not depend on row order, and sums of
/// disjoint sets add, so the N sources' figures for a target can be added up and compared with
/// the target's. One changed row goes unnoticed only if its two hashes differ by a multiple of
/// 2^64, about one chance in 1.8e19.
public struct RowSet: Sendable, Equatable, Codable {
    public var rows: Int64 = 0
    public var hashSum: UInt64 = 0

    public init(rows: Int64 = 0, hashSum: UInt64 = 0) {
        self.rows = rows
        self.hashSum = hashSum
    }

    public static func += (lhs: inout RowSet, rhs: RowSet) {
        lhs.rows += rhs.rows
        lhs.hashSum &+= rhs.hashSum
    }

    /// Reads the server's `sum(hash) % 2^64`, which may be negative, as a wrapping 64-bit value.
    public static func hashSum(fromServer text: String) -> UInt64? {
        let negative = text.hasPrefix("-")
        guard let magnitude = UInt64(negative ? String(text.dropFirst()) : text) else { return nil }
        return negative ? 0 &- magnitude : magnitude
    }
}

/// One row that differs between the layouts, as `verify` reports it.
public struct RowDifference: Sendable, Equatable, Hashable, Codable {
    public enum Kind: String, Sendable, Codable, CaseIterable {
        /// A source holds the row for this target; the target does not.
        case missing
        /// The target holds a row for itself that no source holds.
        case extra
        /// Both hold the key, with different contents.
        case different
        /// Two or more sources hold the key, all destined for this target.
        case duplicate
    }

    public var table: String
    public var kind: Kind
    /// The unique key's values as text, in key column order.
    public var key: [String]
    /// The source(s) holding the row, comma-separated for a duplicate; nil for an extra row.
    public var source: String?
    public var target: String

    public init(table: String, kind: Kind, key: [String], source: String?, target: String) {
        self.table = table
        self.kind = kind
        self.key = key
        self.source = source
        self.target = target
    }
}

/// Row-level comparison of one chunk for one target, once the sums said it differs.
public enum RowComparison {
    public struct SourceRow: Sendable, Equatable {
        public var source: String
        public var key: [String]
        public var hash: Int64

        public init(source: String, key: [String], hash: Int64) {
            self.source = source
            self.key = key
            self.hash = hash
        }
    }

    /// A key as PostgreSQL compares it: by its UTF-8 bytes. Swift's `String ==` treats canonically
    /// equivalent text as equal (NFC `café` and NFD `café`, U+212B and U+00C5), which the database
    /// does not; keyed by `[String]`, two such rows would collapse into one.
    struct KeyBytes: Hashable, Comparable {
        let key: [String]
        let bytes: [[UInt8]]

        init(_ key: [String]) {
            self.key = key
            bytes = key.map { Array($0.utf8) }
        }

        static func == (a: KeyBytes, b: KeyBytes) -> Bool { a.bytes == b.bytes }
        func hash(into hasher: inout Hasher) { hasher.combine(bytes) }
        static func < (a: KeyBytes, b: KeyBytes) -> Bool {
            a.bytes.lexicographicallyPrecedes(b.bytes) { $0.lexicographicallyPrecedes($1) }
        }
    }

    /// Every key that is missing, extra, different or held by several sources, sorted by kind
    /// then key (bytewise) so reports are stable.
    public static func differences(
        table: String, target: String, sourceRows: [SourceRow], targetRows: [(key: [String], hash: Int64)]
    ) -> [RowDifference] {
        var bySource: [KeyBytes: [SourceRow]] = [:]
        for row in sourceRows { bySource[KeyBytes(row.key), default: []].append(row) }
        var onTarget: [KeyBytes: [Int64]] = [:]
        for row in targetRows { onTarget[KeyBytes(row.key), default: []].append(row.hash) }
        var found: [(KeyBytes, RowDifference)] = []
        for (key, rows) in bySource {
            let holders = rows.map(\.source).sorted().joined(separator: ",")
            if rows.count > 1 {
                found.append((key, RowDifference(table: table, kind: .duplicate, key: key.key, source: holders, target: target)))
            } else if let hashes = onTarget[key] {
                if hashes != [rows[0].hash] {
                    found.append((key, RowDifference(table: table, kind: .different, key: key.key, source: holders, target: target)))
                }
            } else {
                found.append((key, RowDifference(table: table, kind: .missing, key: key.key, source: holders, target: target)))
            }
        }
        for key in onTarget.keys where bySource[key] == nil {
            found.append((key, RowDifference(table: table, kind: .extra, key: key.key, source: nil, target: target)))
        }
        let order = Dictionary(uniqueKeysWithValues: RowDifference.Kind.allCases.enumerated().map { ($1, $0) })
        return found.sorted { a, b in
            a.1.kind == b.1.kind ? a.0 < b.0 : order[a.1.kind]! < order[b.1.kind]!
        }.map(\.1)
    }
}

/// How a table is cut into key ranges for verification.
public enum ChunkBoundaries {
    /// Picks `chunks - 1` boundaries from a sorted key sample, evenly spaced, without repeats:
    /// chunk i covers [boundary i-1, boundary i), the first and last being open-ended.
    public static func pick(sortedSample sample: [[String]], chunks: Int) -> [[String]] {
        guard chunks > 1, !sample.isEmpty else { return [] }
        var result: [[String]] = []
        for i in 1..<chunks {
            let candidate = sample[min(sample.count - 1, sample.count * i / chunks)]
            if result.last != candidate { result.append(candidate) }
        }
        // A boundary equal to the sample's first key would leave the first chunk empty.
        if result.first == sample.first { result.removeFirst() }
        return result
    }

    /// The (lower, upper) key of each chunk from its boundaries.
    public static func ranges(_ boundaries: [[String]]) -> [(lower: [String]?, upper: [String]?)] {
        let lowers: [[String]?] = [nil] + boundaries.map { Optional($0) }
        let uppers: [[String]?] = boundaries.map { Optional($0) } + [nil]
        return Array(zip(lowers, uppers)).map { (lower: $0.0, upper: $0.1) }
    }
}
