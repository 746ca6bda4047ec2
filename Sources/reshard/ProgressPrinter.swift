import Foundation
import ReshardCore

/// Shows apply progress on stderr (stdout carries only the result): on a terminal, a live bar per
/// table with rows/s and ETA, redrawn in place; otherwise a plain line every few seconds; with
/// `--json`, one JSON object per line.
final class ProgressPrinter {
    let json: Bool
    let terminal = isatty(2) == 1
    private var lastPlain = Date.distantPast
    private var lastPhase: MigrationPhase?
    private var drawnLines = 0
    /// Per table: rows copied at the previous report and a smoothed rate.
    private var previous: [String: (copied: Int64, at: Date, rate: Double)] = [:]

    init(json: Bool) { self.json = json }

    func show(_ p: ApplyProgress) {
        if json {
            if let data = try? JSONEncoder().encode(p) { Console.plain(String(decoding: data, as: UTF8.self)) }
            return
        }
        let eta = p.etaSeconds.map { " eta \(Self.duration($0))" } ?? ""
        let rows = RowProgress(copied: p.rowsCopied, estimated: p.rowsEstimated, done: p.tables.allSatisfy(\.done))
        let summary = String(
            format: "%@ %@: %@ rows (%.0f%%), %@ rows/s%@, backlog %lld, applied %lld%@",
            p.migration, p.phase.rawValue, rows.text, rows.fraction * 100, Self.count(Int64(p.rowsPerSecond)), eta, p.backlog,
            p.changesApplied, p.paused ? " (paused\(p.pausedReason.map { ": \($0)" } ?? ""))" : "")
            + (p.backlogTrend.map { "; \($0)" } ?? "") + p.retrying.map { "; \($0)" }.joined()
        if terminal {
            var lines = [summary]
            for table in p.tables { lines.append(bar(table)) }
            var out = drawnLines > 0 ? "\u{1B}[\(drawnLines)A" : ""
            for line in lines { out += "\r\u{1B}[K" + line + "\n" }
            drawnLines = lines.count
            FileHandle.standardError.write(Data(out.utf8))
        } else if Date().timeIntervalSince(lastPlain) >= 5 || p.phase != lastPhase {
            lastPlain = Date()
            Console.plain(summary)
        }
        lastPhase = p.phase
    }

    /// `users      [##########..........]  51%  153,000/300,000  61,200 rows/s  eta 2s`
    private func bar(_ table: ApplyProgress.Table) -> String {
        let now = Date()
        var rate = 0.0
        if let before = previous[table.name], now > before.at {
            let instant = Double(table.rowsCopied - before.copied) / now.timeIntervalSince(before.at)
            rate = before.rate == 0 ? instant : 0.7 * before.rate + 0.3 * instant
        }
        previous[table.name] = (table.rowsCopied, now, rate)
        let rows = RowProgress(copied: table.rowsCopied, estimated: table.rowsEstimated, done: table.done)
        let width = 24
        let filled = Int(rows.fraction * Double(width))
        let name = table.name.count > 16 ? String(table.name.prefix(15)) + "…" : table.name.padding(toLength: 16, withPad: " ", startingAt: 0)
        let tail = table.done
            ? "done"
            : "\(Self.count(Int64(rate))) rows/s" + (rate > 1 && table.rowsEstimated > table.rowsCopied
                ? "  eta \(Self.duration(Double(table.rowsEstimated - table.rowsCopied) / rate))" : "")
        return "  \(name) [\(String(repeating: "#", count: filled))\(String(repeating: ".", count: width - filled))] "
            + String(format: "%3.0f%%", rows.fraction * 100) + "  \(rows.text)  \(tail)"
    }

    static func percent(_ part: Int64, _ whole: Int64) -> Double { whole > 0 ? min(100, Double(part) * 100 / Double(whole)) : 100 }

    static func count(_ n: Int64) -> String { n.grouped }

    static func duration(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        return s >= 3600 ? "\(s / 3600)h\(s % 3600 / 60)m" : s >= 60 ? "\(s / 60)m\(s % 60)s" : "\(s)s"
    }
}
