import Foundation

/// Durations as people write them on the command line: `30s`, `500ms`, `2m`, `1h`, `1m30s`, or a
/// plain number of seconds (`30`, `0.5`).
public enum DurationText {
    /// The duration in seconds, or nil when `text` is not one.
    public static func seconds(_ text: String) -> Double? {
        let text = text.trimmingCharacters(in: .whitespaces)
        if let plain = Double(text) { return plain.isFinite ? plain : nil }
        let units: [(String, Double)] = [("ms", 0.001), ("h", 3600), ("m", 60), ("s", 1)]
        var rest = Substring(text)
        var total = 0.0
        guard !rest.isEmpty else { return nil }
        while !rest.isEmpty {
            let number = rest.prefix { $0.isNumber || $0 == "." }
            guard let value = Double(number) else { return nil }
            rest = rest.dropFirst(number.count)
            guard let (unit, factor) = units.first(where: { rest.hasPrefix($0.0) }) else { return nil }
            rest = rest.dropFirst(unit.count)
            total += value * factor
        }
        return total
    }
}
