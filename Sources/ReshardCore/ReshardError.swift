/// Errors of reshard's own (as opposed to `PostgresError` from a server), each with the exit code
/// the CLI uses: 2 for bad input or a refusal (nothing was changed), 1 for a runtime failure.
public enum ReshardError: Error, Sendable, CustomStringConvertible, Equatable {
    /// The input is wrong: config, flags, topology. Exit code 2.
    case badInput(String)
    /// The input is fine but the state of the world says no (lease held, schema too new). Exit code 2.
    case refused(String)
    /// Something failed while working. Exit code 1.
    case failed(String)

    public var description: String {
        switch self {
        case .badInput(let m), .refused(let m), .failed(let m): m
        }
    }

    public var exitCode: Int32 {
        switch self {
        case .badInput, .refused: 2
        case .failed: 1
        }
    }
}
