/// The order of a switch between layouts (`cutover`, and `rollback`, which is a cutover the other
/// way), and what a command does when it finds a switch left half-done by a coordinator that
/// died. A value with no database: `CutoverStateMachineTests` covers every case.
///
/// A switch is undone until its new epoch is published and completed after: publishing is the
/// point of no return, because applications may route by the new map as soon as they can read it.
public enum CutoverStateMachine {
    public enum Direction: String, Sendable, Codable {
        /// The targets take the writes.
        case cutover
        /// The sources take them again.
        case rollback

        /// The phase a switch in this direction starts from and the one it is recorded in meanwhile.
        public var phaseWhileSwitching: MigrationPhase { self == .cutover ? .cuttingOver : .rollingBack }
    }

    /// One step of a switch, in order. Those from `barrier` to `release` hold the application's
    /// writes up, so together they are bounded by `--max-stall`.
    public enum Step: String, Sendable, CaseIterable, Codable {
        /// What must hold before anything changes (exit 2 otherwise).
        case checks
        /// Sequences and identity columns of the layout taking over advanced past every value the
        /// other layout handed out, plus a margin, before the stall.
        case sequences
        /// The shim on the layout taking over, feeding the other one, before writes reach it.
        case reverseCapture = "reverse-capture"
        /// The changelogs applied until their backlog is small, before the stall.
        case catchUp = "catch-up"
        /// `LOCK TABLE ... IN EXCLUSIVE MODE` on every database of the serving layout (waits for
        /// writers in flight), then the fence flipped to "neither layout serves".
        case barrier
        /// The changelogs applied to zero (nothing can be added to them now).
        case drain
        /// The sequences checked again (and advanced if writes outran the margin).
        case sequenceCheck = "sequence-check"
        /// The built tables swapped into place on shared databases.
        case swap
        /// The new epoch published in the metadata: from here on the switch only goes forward.
        case publish
        /// The fence flipped on every database: the layout taking over serves.
        case release

        /// Whether the step holds the application's writes up.
        public var stalls: Bool { [.barrier, .drain, .sequenceCheck, .swap, .publish, .release].contains(self) }
        /// Whether the step changes nothing anywhere (dry runs take only these).
        public var readOnly: Bool { self == .checks }
    }

    /// The steps of a switch, in order; a dry run takes only the checks.
    public static func steps(dryRun: Bool) -> [Step] { dryRun ? [.checks] : Step.allCases }

    /// What the steps reached so far require to undo an attempt: always restoring the fence (a
    /// coordinator may have died right after flipping it), and swapping tables back once a swap
    /// may have started.
    public struct Undo: Sendable, Equatable {
        public var restoreFence: Bool
        public var swapBack: Bool
    }

    public static func undo(reached: Step?) -> Undo {
        let index = reached.flatMap { Step.allCases.firstIndex(of: $0) } ?? -1
        return Undo(restoreFence: index >= Step.allCases.firstIndex(of: .barrier)!,
                    swapBack: index >= Step.allCases.firstIndex(of: .swap)!)
    }

    /// A switch found recorded but not finished.
    public struct Unfinished: Sendable, Equatable {
        public var direction: Direction
        /// Whether its epoch was published (then it is completed, never undone).
        public var published: Bool
        /// The last step it recorded before it was taken. The stalling steps (`barrier` to
        /// `release`) are recorded together before the barrier, so a coordinator that died
        /// anywhere in the stall reads as having reached `release`: its undo restores the fence
        /// and sets the triggers back (both idempotent) and swaps back only what the catalog shows.
        public var reached: Step?
        public init(direction: Direction, published: Bool, reached: Step?) {
            self.direction = direction
            self.published = published
            self.reached = reached
        }
    }

    /// What a command does, in order.
    public enum Action: Sendable, Equatable {
        /// Finish the unfinished switch (it was published): release the fence, record its phase.
        case complete(Direction)
        /// Undo the unfinished switch: the layout it started from serves again.
        case undo(Direction, Undo)
        /// Run a new switch in this direction.
        case run(Direction)
    }

    /// What `command` (cutover or rollback) does in `phase`, given the switch a dead coordinator
    /// may have left. Refuses (nothing changed) when the command makes no sense in that phase.
    public static func actions(
        for command: Direction, migration: String, phase: MigrationPhase, unfinished: Unfinished?
    ) throws -> [Action] {
        switch phase {
        case .inSync, .rolledBack:
            guard command == .cutover else {
                throw ReshardError.refused("migration \(migration) is in phase \(phase.rawValue): the sources serve already; nothing to roll back")
            }
            return [.run(.cutover)]
        case .cutOver:
            guard command == .rollback else {
                throw ReshardError.refused("migration \(migration) is cut over already (phase cut-over)")
            }
            return [.run(.rollback)]
        case .cuttingOver, .rollingBack:
            let direction: Direction = phase == .cuttingOver ? .cutover : .rollback
            let published = unfinished?.direction == direction && unfinished!.published
            let finish: Action = published ? .complete(direction) : .undo(direction, undo(reached: unfinished?.reached ?? .release))
            // Cutover ends on the new layout, rollback on the old one.
            let ends = published ? direction : (direction == .cutover ? .rollback : .cutover)
            return ends == command ? [finish] : [finish, .run(command)]
        case .planned, .prepared, .backfilling, .catchingUp:
            throw ReshardError.refused(
                "migration \(migration) is in phase \(phase.rawValue): \(command.rawValue) needs it in sync first (reshard apply --until caught-up)")
        case .cleanedUp, .aborted:
            throw ReshardError.refused("migration \(migration) is \(phase.rawValue); there is nothing to \(command == .cutover ? "cut over" : "roll back")")
        }
    }
}
