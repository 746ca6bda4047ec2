import PostgresClient

/// Reads and writes `reshard.migrations.phase`, the one place that does. A write is a
/// `MigrationStateMachine.Transition` recorded as a compare-and-set, so a phase changed by
/// someone else since it was read (an `abort` beside a coordinator, a second cutover) is never
/// overwritten.
public enum PhaseStore {
    /// The recorded phase, nil when the migration is not registered (or there is no schema yet);
    /// refuses a phase this binary does not know.
    public static func read(_ migration: String, on conn: PGConnection, forUpdate: Bool = false) throws -> MigrationPhase? {
        guard try conn.query("SELECT to_regclass('reshard.migrations') IS NOT NULL").get(0, 0, as: Bool.self) else { return nil }
        let row = try conn.query("SELECT phase FROM reshard.migrations WHERE name = $1\(forUpdate ? " FOR UPDATE" : "")", [migration])
        guard row.rowCount == 1, let raw = row[0, 0] else { return nil }
        return try MigrationPhase.recorded(raw, migration: migration)
    }

    /// `UPDATE ... SET phase = to WHERE phase = from`; fails, changing nothing, when the recorded
    /// phase is no longer `from`.
    public static func write(_ transition: MigrationStateMachine.Transition, migration: String, on conn: PGConnection) throws {
        let updated = try conn.query(
            "UPDATE reshard.migrations SET phase = $3, updated_at = now() WHERE name = $1 AND phase = $2 RETURNING 1",
            [migration, transition.from.rawValue, transition.to.rawValue])
        guard updated.rowCount == 1 else {
            let now = try conn.query("SELECT phase FROM reshard.migrations WHERE name = $1", [migration])
            let found = now.rowCount == 1 ? "phase '\(now[0, 0] ?? "")'" : "no such migration"
            throw ReshardError.failed(
                "migration \(migration): cannot record \(transition): the metadata says \(found) now (changed by another reshard?)")
        }
    }
}
