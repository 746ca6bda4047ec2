import Foundation

/// Whether a source's changelog grows or drains: changes produced (written by the application)
/// and applied (by the catch-up) per second, over the last few seconds. Produced is not counted
/// anywhere directly; it is what the backlog grew by plus what was applied meanwhile.
///
/// Pure: the coordinator adds a sample a second; unit-tested without a database.
struct BacklogTrend: Sendable, Equatable {
    struct Sample: Sendable, Equatable {
        var at: Date
        var backlog: Int64
        var applied: Int64
    }

    /// The rates are measured over about this long.
    var window: TimeInterval = 5
    private(set) var samples: [Sample] = []

    mutating func add(at: Date, backlog: Int64, applied: Int64) {
        samples.append(Sample(at: at, backlog: backlog, applied: applied))
        // Keep one sample older than the window, so the rates span all of it.
        while samples.count > 2, at.timeIntervalSince(samples[1].at) >= window { samples.removeFirst() }
    }

    /// Changes per second produced and applied, once two samples at least a second apart exist.
    var rates: (produced: Double, applied: Double)? {
        guard let first = samples.first, let last = samples.last else { return nil }
        let seconds = last.at.timeIntervalSince(first.at)
        guard seconds >= 1 else { return nil }
        let applied = Double(last.applied - first.applied) / seconds
        let produced = max(0, Double(last.backlog - first.backlog) / seconds + applied)
        return (produced, applied)
    }
}
