import ArgumentParser
import Foundation
import ReshardCore
import ReshardRehearse

/// `reshard rehearse`: the migration end to end on throwaway clusters (or `--external` servers)
/// under a ledger workload and seeded faults; exit 0 only when nothing acknowledged was lost,
/// duplicated or misplaced. The logic is in the ReshardRehearse library.
struct RehearseCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rehearse",
        abstract: "Rehearse a migration under writes and crashes on throwaway clusters, and prove nothing was lost.",
        discussion: """
            Loads synthetic rows that respect the schema (the built-in one, or with --config the schema of your tables, \
            read-only from your first source, and your topology), then runs plan, apply, verify (cutover, rollback and \
            cleanup once this reshard has them) as child processes while a ledger workload writes, injecting --crashes \
            faults at points chosen by --seed. Exit 0 when every acknowledged write is found exactly once where it belongs \
            and nothing is left behind; 3 when the check found lost, duplicated or misplaced rows; 1 when a step failed.
            """)

    @Option(name: [.customShort("c"), .long], help: "Your reshard.yml: the schema (read-only) and the topology to rehearse.")
    var config: String?

    @Option(name: .long, help: "A map file of existing, empty servers to rehearse on instead of local clusters (see docker/map.yml).")
    var external: String?

    @Option(name: .long, parsing: .unconditional, help: "Source shards (without --config).")
    var sources = 2

    @Option(name: .long, parsing: .unconditional, help: "Target shards (without --config).")
    var targets = 3

    @Option(name: .long, parsing: .unconditional, help: "How many targets are the first sources' databases (without --config).")
    var sharedTargets = 1

    @Option(name: .long, parsing: .unconditional, help: "Synthetic rows to load, split over the tables.")
    var rows = 10_000

    @Option(name: .long, parsing: .unconditional, help: "Writes per second of the ledger workload.")
    var writesPerSecond = 200

    @Option(name: .long, parsing: .unconditional, help: "Threads of the ledger workload (each writes through its own router).")
    var writers = 4

    @Option(name: .long, parsing: .unconditional, help: "Faults to inject (every kind once before any twice).")
    var crashes = 0

    @Option(name: .long, parsing: .unconditional, help: "Seed of the data, the writes and the fault schedule.")
    var seed: UInt64 = 1

    @Option(name: .long, parsing: .unconditional, help: "Seconds the catch-up runs under writes after the backfill.")
    var catchUpSeconds = 8.0

    @Flag(name: .long, help: "Stop before cutover: rehearse the copy alone (both layouts are checked, then abort removes reshard).")
    var noCutover = false

    @Option(name: .long, help: "Write a self-contained HTML report with a timeline to FILE.")
    var report: String?

    @OptionGroup var output: OutputOptions

    func validate() throws {
        guard (1...16).contains(sources), (1...16).contains(targets) else { throw ValidationError("--sources and --targets must be between 1 and 16") }
        guard sharedTargets >= 0, sharedTargets <= min(sources, targets) else {
            throw ValidationError("--shared-targets must be between 0 and the smaller of --sources and --targets")
        }
        guard (10...10_000_000).contains(rows) else { throw ValidationError("--rows must be between 10 and 10000000") }
        guard (1...100_000).contains(writesPerSecond) else { throw ValidationError("--writes-per-second must be between 1 and 100000") }
        guard (1...64).contains(writers) else { throw ValidationError("--writers must be between 1 and 64") }
        guard (0...100).contains(crashes) else { throw ValidationError("--crashes must be between 0 and 100") }
        guard catchUpSeconds >= 1, catchUpSeconds <= 3600 else { throw ValidationError("--catch-up-seconds must be between 1 and 3600") }
        if config != nil, sources != 2 || targets != 3 { throw ValidationError("--config gives the topology: leave out --sources and --targets") }
    }

    func run() throws {
        TerminationSignal.install()
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var options = Rehearsal.Options(executable: executable)
        options.sources = sources
        options.targets = targets
        options.sharedTargets = sharedTargets
        options.rows = rows
        options.writesPerSecond = writesPerSecond
        options.crashes = crashes
        options.writerThreads = writers
        options.seed = seed
        options.config = config
        options.external = external
        options.catchUpSeconds = catchUpSeconds
        options.switches = !noCutover
        // SIGINT/SIGTERM stop the step's child, the workload and the clusters; exit 4 (stoppedEarly).
        options.shouldStop = { TerminationSignal.received }
        let json = output.json
        let rehearsal = try Rehearsal(options: options) { line in
            if json {
                Console.plain(Self.jsonLine(["event": line]))
            } else {
                Console.plain(line)
            }
        }
        let result = try rehearsal.run()
        if let report { try result.html.write(toFile: report, atomically: true, encoding: .utf8) }
        if json { try Console.json(result) } else { Console.out(result.text) }
        guard result.passed else {
            let dataProblem = result.ledger.lost + result.ledger.duplicated + result.ledger.misplaced + result.ledger.unacknowledgedSeen > 0
            throw ExitCode(dataProblem ? 3 : 1)
        }
    }

    static func jsonLine(_ object: [String: String]) -> String {
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
        return String(decoding: data, as: UTF8.self)
    }
}
