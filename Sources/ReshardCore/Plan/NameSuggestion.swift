/// "did you mean users?" for a table name that does not exist: the closest existing name by edit
/// distance, when it is close enough to be a typo rather than another table.
public enum NameSuggestion {
    public static func closest(to wanted: String, among names: [String]) -> String? {
        let limit = max(1, min(3, wanted.count / 3))
        let scored = names.map { ($0, distance(wanted.lowercased(), $0.lowercased())) }.filter { $0.1 <= limit && $0.0 != wanted }
        return scored.min { $0.1 != $1.1 ? $0.1 < $1.1 : $0.0 < $1.0 }?.0
    }

    /// Levenshtein distance (insertions, deletions, substitutions).
    static func distance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        if a.isEmpty { return b.count }
        var previous = Array(0...b.count)
        for i in 1...a.count {
            var current = [i] + [Int](repeating: 0, count: b.count)
            for j in stride(from: 1, through: b.count, by: 1) {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }
}
