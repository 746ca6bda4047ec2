import ReshardRouting

/// The SQL twins of the shard functions, run by the servers. They must agree bit for bit with
/// `ShardFunction.shard(for:)` (a test checks it for every supported key type); they live here,
/// not in ReshardRouting, because applications that route keys never need them.
extension ShardFunction {
    /// A SQL condition true exactly for the rows of target `target`: for hash and range a plain
    /// interval test on the hash or key (cheaper per row than `sqlShardIndex(...) = target`, and
    /// an interval the planner can reason about).
    public func sqlShardFilter(quotedColumn column: String, type: KeyType, target: Int) -> String {
        switch kind {
        case .modulo:
            return "\(sqlShardIndex(quotedColumn: column, type: type)) = \(target)"
        case .hash, .range:
            let value = kind == .hash ? "\(type.hashFunction)(\(column))" : "(\(column))::bigint"
            var parts: [String] = []
            if target > 0 { parts.append("\(value) >= \(boundaries[target - 1])") }
            if target < boundaries.count { parts.append("\(value) < \(boundaries[target])") }
            return parts.isEmpty ? "true" : "(" + parts.joined(separator: " AND ") + ")"
        }
    }

    /// A SQL expression giving the target shard index (0-based) of `quotedColumn` of `type`. For
    /// hash and range a binary search written out as nested CASEs: cheaper per row than
    /// `width_bucket(value, array)`, which re-reads its array on every call.
    public func sqlShardIndex(quotedColumn column: String, type: KeyType) -> String {
        switch kind {
        case .modulo:
            return "(((\(column))::bigint % \(shardCount) + \(shardCount)) % \(shardCount))::int"
        case .hash, .range:
            let value = kind == .hash ? "\(type.hashFunction)(\(column))" : "(\(column))::bigint"
            /// Shards `low...high`: shard i starts at boundaries[i - 1].
            func search(_ low: Int, _ high: Int) -> String {
                if low == high { return "\(low)" }
                let mid = (low + high + 1) / 2
                return "CASE WHEN \(value) < \(boundaries[mid - 1]) THEN \(search(low, mid - 1)) ELSE \(search(mid, high)) END"
            }
            return search(0, boundaries.count)
        }
    }
}
