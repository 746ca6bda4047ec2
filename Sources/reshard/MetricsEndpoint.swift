import ArgumentParser
import FlyingFox
import Foundation
import Metrics
import Prometheus

/// `--metrics-listen HOST:PORT`, shared by the long-running commands.
struct MetricsOptions: ParsableArguments {
    @Option(
        name: .long,
        help: ArgumentHelp(
            "Serve Prometheus metrics at http://HOST:PORT/metrics while running (port 0 picks a free one).",
            valueName: "host:port"))
    var metricsListen: String?

    func validate() throws {
        if let metricsListen { _ = try MetricsEndpoint.parse(metricsListen) }
    }

    /// Starts the endpoint when asked; its address goes to stderr as one line.
    func start() throws -> MetricsEndpoint? {
        guard let metricsListen else { return nil }
        let endpoint = try MetricsEndpoint.start(try MetricsEndpoint.parse(metricsListen))
        Console.plain("metrics: http://\(endpoint.address)/metrics")
        return endpoint
    }
}

/// A `/metrics` page in Prometheus' text format: swift-metrics bootstrapped with swift-prometheus'
/// factory, served by FlyingFox (an HTTP server on Swift concurrency: it never touches libpq, so
/// it may run on the cooperative pool).
final class MetricsEndpoint: Sendable {
    let address: String
    private let task: Task<Void, any Error>

    private init(address: String, task: Task<Void, any Error>) {
        self.address = address
        self.task = task
    }

    deinit { task.cancel() }

    static func parse(_ text: String) throws -> (host: String, port: UInt16) {
        guard let colon = text.lastIndex(of: ":"), let port = UInt16(text[text.index(after: colon)...]) else {
            throw ValidationError("--metrics-listen must be HOST:PORT, like 127.0.0.1:9187, not '\(text)'")
        }
        let host = String(text[..<colon])
        guard host.split(separator: ".").count == 4, host.split(separator: ".").allSatisfy({ UInt8($0) != nil }) else {
            throw ValidationError("--metrics-listen needs an IPv4 address for HOST, like 127.0.0.1 or 0.0.0.0, not '\(host)'")
        }
        return (host, port)
    }

    static func start(_ listen: (host: String, port: UInt16)) throws -> MetricsEndpoint {
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        let server = HTTPServer(address: try .inet(ip4: listen.host, port: listen.port), logger: .disabled)
        let task = Task {
            await server.appendRoute("GET /metrics") { _ in
                var buffer: [UInt8] = []
                registry.emit(into: &buffer)
                return HTTPResponse(
                    statusCode: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"], body: Data(buffer))
            }
            try await server.run()
        }
        // The address is known once the socket listens; a bind failure ends the task first.
        let ready = DispatchSemaphore(value: 0)
        let found = Box()
        Task {
            do {
                try await server.waitUntilListening(timeout: 5)
                if case .ip4(let ip, let port) = await server.listeningAddress { found.set("\(ip):\(port)") }
            } catch {
                found.fail("\(error)")
            }
            ready.signal()
        }
        ready.wait()
        guard let address = found.address else {
            task.cancel()
            throw ValidationError("cannot serve metrics on \(listen.host):\(listen.port): \(found.failure ?? "not listening")")
        }
        return MetricsEndpoint(address: address, task: task)
    }

    /// Why `@unchecked Sendable`: written once under `lock` before the semaphore is signalled.
    private final class Box: @unchecked Sendable {
        private let lock = NSLock()
        private var value: String?
        private var error: String?
        func set(_ v: String) { lock.withLock { value = v } }
        func fail(_ e: String) { lock.withLock { error = e } }
        var address: String? { lock.withLock { value } }
        var failure: String? { lock.withLock { error } }
    }
}
