import ArgumentParser
import Foundation
import ReshardCore

/// `reshard verify`: proves the targets hold exactly the sources' rows, or lists the rows that
/// differ. Exit code 0 when identical, 3 when differences exist. Resumable: run it again after a
/// crash and it continues with the chunks not yet verified.
struct VerifyCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify",
        abstract: "Compare row checksums between the old and the new layout, down to the rows that differ.",
        discussion: """
            Runs while the application writes: a chunk that differs is checked again once its pending changes are \
            applied. Exit code 0: identical; 3: differences (listed with key, source and target).
            """)

    @OptionGroup var migration: MigrationOptions

    @Option(name: .long, help: "Verify only this table (repeatable).")
    var table: [String] = []

    @Option(name: .long, parsing: .unconditional, help: "Chunks verified at once (default: one per database, 2 to 8).")
    var jobs: Int?

    @Option(name: .long, parsing: .unconditional, help: "About how many rows a chunk holds.")
    var chunkRows: Int64 = 100_000

    @Flag(name: .long, help: "Start over instead of continuing an interrupted verification.")
    var restart = false

    @OptionGroup var output: OutputOptions

    @OptionGroup var metrics: MetricsOptions

    func validate() throws {
        if let jobs, jobs < 1 { throw ValidationError("--jobs must be at least 1") }
        guard chunkRows >= 100 else { throw ValidationError("--chunk-rows must be at least 100") }
    }

    func run() throws {
        TerminationSignal.install()
        // Verify validates the config against the shards but has no use for slice estimates.
        let target = try migration.resolve(sampleRows: 1_000)
        var options = VerifyOptions()
        options.tables = table.isEmpty ? nil : table
        options.jobs = jobs
        options.chunkRows = chunkRows
        options.restart = restart
        let verifier = try Verifier(plan: target.plan, shards: target.shards, metadata: target.metadata, options: options)
        let printer = VerifyProgressPrinter(json: output.json)
        let endpoint = try metrics.start()
        let figures = ReshardMetrics(migration: target.plan.migration)
        defer { withExtendedLifetime(endpoint) {} }
        let result = try verifier.run(shouldStop: { TerminationSignal.received }) { p in
            figures.record(p)
            printer.show(p)
        }
        printer.clear()
        if output.json { try Console.json(result) } else { Console.out(result.text) }
        if !result.identical { throw ExitCode(3) }
    }
}

/// Verify's progress on stderr: one line redrawn in place on a terminal, a plain line every few
/// seconds otherwise, JSON lines with `--json` (stdout carries only the result).
final class VerifyProgressPrinter {
    let json: Bool
    let terminal = isatty(2) == 1
    private var lastPlain = Date.distantPast
    private var drawn = false

    init(json: Bool) { self.json = json }

    func show(_ p: VerifyProgress) {
        if json {
            if let data = try? JSONEncoder().encode(p) { Console.plain(String(decoding: data, as: UTF8.self)) }
            return
        }
        let eta = p.etaSeconds.map { ", eta \(ProgressPrinter.duration($0))" } ?? ""
        let line = String(
            format: "verify %@: %d/%d chunks (%.0f%%), %@ rows, %@ rows/s%@, %lld difference(s), %d recheck(s)",
            p.migration, p.chunksDone, p.chunksTotal, ProgressPrinter.percent(Int64(p.chunksDone), Int64(p.chunksTotal)),
            ProgressPrinter.count(p.rowsChecked), ProgressPrinter.count(Int64(p.rowsPerSecond)), eta, p.differences, p.rechecks)
        if terminal {
            FileHandle.standardError.write(Data("\r\u{1B}[K\(line)".utf8))
            drawn = true
        } else if Date().timeIntervalSince(lastPlain) >= 5 {
            lastPlain = Date()
            Console.plain(line)
        }
    }

    /// Ends the redrawn line before the result is printed.
    func clear() {
        if drawn { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}
