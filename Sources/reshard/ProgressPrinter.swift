import Foundation
import ReshardCore

/// Shows apply progress: one redrawn line on a terminal, a plain line every few seconds
/// otherwise, or a JSON object per line with `--json`.
final class ProgressPrinter {
    let json: Bool
    let terminal = isatty(2) == 1
    private var lastPlain = Date.distantPast
    private var lastPhase: MigrationPhase?

    init(json: Bool) { self.json = json }

    func show(_ p: ApplyProgress) {
        if json {
            if let data = try? JSONEncoder().encode(p) { Console.out(String(decoding: data, as: UTF8.self)) }
            return
        }
        let percent = p.rowsEstimated > 0 ? min(100, Double(p.rowsCopied) * 100 / Double(p.rowsEstimated)) : 100
        let eta = p.etaSeconds.map { " eta \(Self.duration($0))" } ?? ""
        let line = String(
            format: "%@ %@: %lld/%lld rows (%.0f%%), %.0f rows/s%@, backlog %lld, applied %lld%@",
            p.migration, p.phase.rawValue, p.rowsCopied, p.rowsEstimated, percent, p.rowsPerSecond, eta, p.backlog,
            p.changesApplied, p.paused ? " (paused)" : "")
        if terminal {
            FileHandle.standardError.write(Data("\r\u{1B}[K\(line)".utf8))
        } else if Date().timeIntervalSince(lastPlain) >= 5 || p.phase != lastPhase {
            lastPlain = Date()
            Console.plain(line)
        }
        lastPhase = p.phase
    }

    func finish() {
        if terminal && !json { FileHandle.standardError.write(Data("\n".utf8)) }
    }

    static func duration(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        return s >= 3600 ? "\(s / 3600)h\(s % 3600 / 60)m" : s >= 60 ? "\(s / 60)m\(s % 60)s" : "\(s)s"
    }
}
