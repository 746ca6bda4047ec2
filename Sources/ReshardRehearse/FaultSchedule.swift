/// Which faults a rehearsal injects, and where in the plan. Pure: the same seed, crash count and
/// available kinds give the same schedule, so a failing rehearsal can be run again exactly.
public struct FaultSchedule: Sendable, Equatable, Codable {
    public enum Kind: String, Sendable, Codable, CaseIterable, Comparable {
        /// `kill -9` of the running reshard command; rehearse then runs the same command again.
        case killCoordinator = "kill-coordinator"
        /// `pg_ctl restart -m immediate` of a source's, a target's, the metadata database's cluster.
        case restartSource = "restart-source"
        case restartTarget = "restart-target"
        case restartMetadata = "restart-metadata"
        /// `pg_terminate_backend` of every session reshard has open on one shard.
        case terminateSessions = "terminate-sessions"
        /// An application transaction that takes a row lock on a source table and holds it for
        /// seconds before committing (across a cutover attempt once cutover runs).
        case holdLocks = "hold-locks"

        public static func < (a: Kind, b: Kind) -> Bool { a.rawValue < b.rawValue }
    }

    /// A point of the plan: a step and how far into it.
    public struct Point: Sendable, Equatable, Codable, Comparable, CustomStringConvertible {
        public enum Step: String, Sendable, Codable, CaseIterable {
            /// `apply --until caught-up`: `at` is the fraction of rows copied.
            case backfill
            /// `apply` keeping the targets in sync under writes: `at` is the fraction of the phase's duration.
            case catchUp = "catch-up"
        }
        public var step: Step
        public var at: Double

        public static func < (a: Point, b: Point) -> Bool {
            let order = Step.allCases
            return (order.firstIndex(of: a.step)!, a.at) < (order.firstIndex(of: b.step)!, b.at)
        }

        public var description: String {
            step == .backfill ? "backfill at \(Int(at * 100))% of rows" : "catch-up at \(Int(at * 100))% of its time"
        }
    }

    public struct Fault: Sendable, Equatable, Codable {
        public var kind: Kind
        public var point: Point
        /// Which shard of its kind (source or target index), where that matters.
        public var shard: Int
    }

    public var faults: [Fault]

    /// `crashes` faults: every available kind once (in a seeded order) before any kind twice,
    /// each at a seeded point; points are at least a few percent apart so faults do not pile up.
    public static func make(seed: UInt64, crashes: Int, kinds: [Kind], sources: Int, targets: Int) -> FaultSchedule {
        guard crashes > 0, !kinds.isEmpty else { return FaultSchedule(faults: []) }
        var rng = SeededRandom(seed: seed, ["faults"])
        var order: [Kind] = []
        while order.count < crashes {
            var round = kinds.sorted()
            round.shuffle(using: &rng)
            order += round
        }
        order = Array(order.prefix(crashes))
        // Slots spread over both steps, then dealt out in a seeded order.
        let steps = Point.Step.allCases
        let perStep = (crashes + steps.count - 1) / steps.count
        var slots: [Point] = []
        for step in steps {
            for i in 0..<perStep {
                let width = 0.8 / Double(perStep)
                let jitter = Double(rng.next() % 1000) / 1000 * width * 0.5
                slots.append(Point(step: step, at: 0.1 + Double(i) * width + jitter))
            }
        }
        slots.shuffle(using: &rng)
        var faults: [Fault] = []
        for (i, kind) in order.enumerated() {
            let count = kind == .restartTarget ? targets : (kind == .restartSource || kind == .holdLocks ? sources : sources + targets)
            faults.append(Fault(kind: kind, point: slots[i], shard: Int(rng.next() % UInt64(max(count, 1)))))
        }
        return FaultSchedule(faults: faults.sorted { $0.point < $1.point })
    }
}
