import ArgumentParser
import Foundation
import ReshardCore

/// `reshard plan`: validates the topology against the real shards and estimates what moves where.
/// Read-only: it changes nothing on any server.
struct PlanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Validate the topology and estimate what moves where (read-only).")

    @OptionGroup var config: ConfigOptions

    @Option(name: .long, help: "Write the plan file that 'reshard apply --plan' consumes.")
    var output: String?

    @Flag(name: .long, help: "Check key collisions on a sample of each source's keys instead of all of them ('apply' checks all).")
    var fast = false

    @OptionGroup var allow: AllowOptions

    @OptionGroup var format: OutputOptions

    func run() throws {
        var planner = Planner(config: try config.load())
        planner.fastChecks = fast
        planner.allowances = allow.allowances
        let plan = try planner.run()
        if let output {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
            do { try encoder.encode(plan).write(to: URL(fileURLWithPath: output)) } catch {
                throw ReshardError.failed("cannot write the plan file \(output): \(error.localizedDescription)")
            }
        }
        if format.json {
            try Console.json(Plan.Report(plan))
        } else {
            Console.out(plan.text)
            if let output { Console.out("plan written to \(output)") }
        }
    }
}
