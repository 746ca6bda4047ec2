import Foundation

/// A defect planted on purpose, for tests only: with `RESHARD_TEST_SKIP_BATCH=<table>` in the
/// environment, the first backfill batch this process copies of that table is not copied, yet its
/// checkpoint advances as if it had been. `reshard rehearse`'s tests use it to prove that the
/// rehearsal's checker fails, naming the rows lost. Unset (always, outside tests), it does nothing.
extension SliceCopier {
    static let plantedSkipTable = ProcessInfo.processInfo.environment["RESHARD_TEST_SKIP_BATCH"]
    private static let plantedSkipLock = NSLock()
    nonisolated(unsafe) private static var plantedSkipDone = false

    /// Whether this batch is the one to skip (true once per process, for the named table).
    func skipsPlantedBatch() -> Bool {
        guard let name = Self.plantedSkipTable, name == table.name.description else { return false }
        return Self.plantedSkipLock.withLock {
            defer { Self.plantedSkipDone = true }
            return !Self.plantedSkipDone
        }
    }
}
