import Foundation

/// How long each step of a fixed part of `apply` took (preparing the shards, finishing the
/// targets), for the event that says so: the backfill benchmark prints them, so the time `apply`
/// spends besides copying is visible step by step.
struct StepTimes: CustomStringConvertible {
    private var steps: [(name: String, seconds: Double)] = []
    private let started = Date()

    /// Runs `body`, adding its duration to the step `name` (a step timed several times sums up).
    @discardableResult
    mutating func time<T>(_ name: String, _ body: () throws -> T) rethrows -> T {
        let start = Date()
        defer {
            let seconds = Date().timeIntervalSince(start)
            if let index = steps.firstIndex(where: { $0.name == name }) { steps[index].seconds += seconds } else { steps.append((name, seconds)) }
        }
        return try body()
    }

    /// Records `seconds` for the step `name` (one measured elsewhere, on another thread).
    mutating func add(_ name: String, _ seconds: Double) { steps.append((name, seconds)) }

    /// `0.412 s (target tables 0.201 s, shim 0.050 s, ...)`.
    var description: String {
        String(format: "%.3f s", Date().timeIntervalSince(started))
            + " (" + steps.map { String(format: "%@ %.3f s", $0.name, $0.seconds) }.joined(separator: ", ") + ")"
    }
}
