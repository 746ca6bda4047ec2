import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Waits for SIGINT or SIGTERM so a long-running command can clean up before it exits.
///
/// A handler only writes one byte to a pipe (the self-pipe trick: nothing else is safe in a signal
/// handler); the waiting thread reads it. Handlers, unlike ignored signals or masks, are reset on
/// exec, so child processes such as postmasters keep PostgreSQL's own signal handling.
enum TerminationSignal {
    nonisolated(unsafe) private static var pipeFDs: [Int32] = [-1, -1]

    /// Installs the handlers. Call before `wait()`.
    static func install() {
        pipe(&pipeFDs)
        for signal in [SIGINT, SIGTERM] {
            Glibc.signal(signal) { number in
                var byte = UInt8(truncatingIfNeeded: number)
                _ = write(TerminationSignal.pipeFDs[1], &byte, 1)
            }
        }
    }

    /// Whether SIGINT or SIGTERM has arrived (does not block).
    static var received: Bool {
        var fds = pollfd(fd: pipeFDs[0], events: Int16(POLLIN), revents: 0)
        return poll(&fds, 1, 0) > 0
    }

    /// Blocks until SIGINT or SIGTERM arrives; returns its number.
    static func wait() -> Int32 {
        var byte: UInt8 = 0
        while read(pipeFDs[0], &byte, 1) != 1 {}
        return Int32(byte)
    }
}
