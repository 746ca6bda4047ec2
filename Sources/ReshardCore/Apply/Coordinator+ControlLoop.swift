import Foundation

/// Wakes the coordinator's control loop early: it polls about ten times a second (Ctrl-C, the
/// once-a-second tick), and a backfill worker that ends a slice tells it at once, so the step
/// after the copy (finishing the targets, then the phase) starts when the last slice is done,
/// not up to a tenth of a second later. A wait that nothing wakes ends at its timeout, as before.
/// Why `@unchecked Sendable`: `signalled` is read and written under `condition`.
final class ControlLoopSignal: @unchecked Sendable {
    private let condition = NSCondition()
    private var signalled = false

    /// Ends the loop's current (or next) wait.
    func signal() {
        condition.withLock {
            signalled = true
            condition.broadcast()
        }
    }

    /// Waits up to `seconds`, or until `signal()` (also one given since the last wait).
    func wait(_ seconds: TimeInterval) {
        let deadline = Date().addingTimeInterval(max(seconds, 0))
        condition.withLock {
            while !signalled && condition.wait(until: deadline) {}
            signalled = false
        }
    }
}
