/// Rows copied against rows estimated, as `apply` and `status` show them.
///
/// The estimate comes from a sample and can be wrong either way. When more rows were copied than
/// estimated the estimate is what is wrong, so the figures show copied/copied, marked "estimate
/// exceeded", instead of "247,325/216,000" and a percentage over 100; a finished copy is 100%
/// whatever the estimate said.
public struct RowProgress: Sendable, Equatable {
    public var copied: Int64
    public var estimated: Int64
    public var done: Bool

    public init(copied: Int64, estimated: Int64, done: Bool) {
        self.copied = copied
        self.estimated = estimated
        self.done = done
    }

    public var estimateExceeded: Bool { copied > estimated }

    /// The total the figures are shown against.
    public var total: Int64 { done ? copied : max(copied, estimated) }

    /// 0...1; 1 once done.
    public var fraction: Double {
        if done { return 1 }
        return total > 0 ? min(1, Double(copied) / Double(total)) : 0
    }

    /// `1,000/5,000`, or `247,325/247,325 (estimate exceeded)`.
    public var text: String {
        "\(copied.grouped)/\(total.grouped)" + (estimateExceeded ? " (estimate exceeded)" : "")
    }
}
