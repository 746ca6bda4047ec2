import Foundation

extension RehearsalReport {
    /// A self-contained page (no scripts, no external files): the summary and an inline SVG
    /// timeline of write latency and catch-up lag, with the phases shaded and the faults marked.
    public var html: String {
        func esc(_ s: String) -> String {
            s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
                .replacingOccurrences(of: "\"", with: "&quot;")
        }
        let width = 1000.0, height = 320.0, left = 60.0, right = 60.0, top = 30.0, bottom = 40.0
        let end = max(seconds, 1)
        let latencies = latencyTimeline.map { $0[1] }.sorted()
        let yMax = max(1, (latencies.isEmpty ? 10 : latencies[min(latencies.count - 1, Int(Double(latencies.count) * 0.999))]) * 1.2)
        let lagMax = max(1, (lagTimeline.map { $0[1] }.max() ?? 1) * 1.2)
        func x(_ t: Double) -> Double { left + t / end * (width - left - right) }
        func y(_ v: Double, _ m: Double) -> Double { top + (1 - min(v, m) / m) * (height - top - bottom) }
        var svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 \(Int(width)) \(Int(height))\" width=\"100%\" font-family=\"sans-serif\" font-size=\"11\">"
        let palette = ["#e8f0fe", "#fef7e0", "#e6f4ea", "#fce8e6", "#f3e8fd", "#e8eaed"]
        for (i, phase) in phases.enumerated() {
            let x0 = x(phase.start), x1 = x(phase.start + phase.seconds)
            svg += "<rect x=\"\(x0)\" y=\"\(top)\" width=\"\(max(x1 - x0, 1))\" height=\"\(height - top - bottom)\" fill=\"\(palette[i % palette.count])\"/>"
            svg += "<text x=\"\(x0 + 2)\" y=\"\(top - 4)\">\(esc(phase.name))</text>"
        }
        let line = latencyTimeline.map { String(format: "%.1f,%.1f", x($0[0]), y($0[1], yMax)) }.joined(separator: " ")
        svg += "<polyline fill=\"none\" stroke=\"#1a73e8\" stroke-width=\"1\" points=\"\(line)\"/>"
        let lag = lagTimeline.map { String(format: "%.1f,%.1f", x($0[0]), y($0[1], lagMax)) }.joined(separator: " ")
        svg += "<polyline fill=\"none\" stroke=\"#e37400\" stroke-width=\"1.5\" stroke-dasharray=\"4 2\" points=\"\(lag)\"/>"
        for fault in faults where fault.injected {
            guard let at = fault.at else { continue }
            svg += "<line x1=\"\(x(at))\" x2=\"\(x(at))\" y1=\"\(top)\" y2=\"\(height - bottom)\" stroke=\"#d93025\" stroke-width=\"1.5\"/>"
            svg += "<text x=\"\(x(at) + 3)\" y=\"\(top + 12)\" fill=\"#d93025\" transform=\"rotate(90 \(x(at) + 3) \(top + 12))\">\(esc(fault.kind)) \(esc(fault.target))</text>"
        }
        svg += "<line x1=\"\(left)\" x2=\"\(width - right)\" y1=\"\(height - bottom)\" y2=\"\(height - bottom)\" stroke=\"#555\"/>"
        svg += "<line x1=\"\(left)\" x2=\"\(left)\" y1=\"\(top)\" y2=\"\(height - bottom)\" stroke=\"#555\"/>"
        for i in 0...4 {
            let v = yMax * Double(i) / 4
            svg += "<text x=\"\(left - 4)\" y=\"\(y(v, yMax) + 4)\" text-anchor=\"end\" fill=\"#1a73e8\">\(String(format: "%.0f", v))</text>"
            svg += "<text x=\"\(width - right + 4)\" y=\"\(y(lagMax * Double(i) / 4, lagMax) + 4)\" fill=\"#e37400\">\(String(format: "%.1f", lagMax * Double(i) / 4))</text>"
        }
        for i in 0...5 {
            let t = end * Double(i) / 5
            svg += "<text x=\"\(x(t))\" y=\"\(height - bottom + 14)\" text-anchor=\"middle\">\(String(format: "%.0f s", t))</text>"
        }
        svg += "<text x=\"\(left)\" y=\"\(height - 6)\" fill=\"#1a73e8\">write latency (ms, left)</text>"
        svg += "<text x=\"\(width - right)\" y=\"\(height - 6)\" text-anchor=\"end\" fill=\"#e37400\">catch-up lag (s, right)</text></svg>"
        let color = passed ? "#188038" : "#d93025"
        return """
            <!doctype html>
            <html><head><meta charset="utf-8"><title>reshard rehearsal: \(esc(verdict))</title>
            <style>body{font-family:sans-serif;max-width:1040px;margin:2em auto;color:#202124}pre{background:#f8f9fa;padding:1em;overflow-x:auto}h1 span{color:\(color)}</style>
            </head><body>
            <h1>reshard rehearsal: <span>\(esc(verdict.uppercased()))</span></h1>
            \(svg)
            <pre>\(esc(text))</pre>
            </body></html>
            """
    }
}
