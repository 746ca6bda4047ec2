/// The session settings that change how values print as text, pinned wherever reshard turns a
/// value into text that another session reads back or compares: the shim's logged keys, the
/// catch-up's key lookups, verify's row hashes. Under them a timestamptz, a float or a bytea has
/// one text form whatever the application's or the shard's own settings say.
public enum CanonicalText {
    public static let settings: [String: String] = [
        "TimeZone": "UTC", "DateStyle": "ISO, YMD", "IntervalStyle": "postgres", "extra_float_digits": "1",
        "bytea_output": "hex", "lc_monetary": "C",
    ]

    /// The same as `SET` clauses of a function (`SET "TimeZone" TO 'UTC' ...`), which apply
    /// while the function runs and are restored after it, without touching the caller's session.
    public static var functionSetClauses: String {
        settings.sorted { $0.key < $1.key }.map { "SET \(SQLText.identifier($0.key)) TO \(SQLText.literal($0.value))" }
            .joined(separator: " ")
    }
}
