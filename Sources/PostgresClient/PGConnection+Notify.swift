import CLibPQ
import Foundation

#if canImport(Glibc)
import Glibc
#endif

extension PGConnection {
    /// A notification (`NOTIFY channel, 'payload'`) received on a channel this session `LISTEN`s to.
    public struct Notification: Sendable, Equatable {
        public var channel: String
        public var payload: String
    }

    /// The notifications received so far, or, when there are none, those that arrive within
    /// `timeout` seconds (empty when none did). libpq also collects notifications while other
    /// statements run on the session; those are returned first, without waiting.
    public func notifications(waitingUpTo timeout: TimeInterval) throws -> [Notification] {
        try lock.withLock {
            var received = pendingNotifications()
            let deadline = Date().addingTimeInterval(timeout)
            while received.isEmpty {
                let left = deadline.timeIntervalSinceNow
                guard left > 0 else { break }
                var descriptor = pollfd(fd: PQsocket(handle), events: Int16(POLLIN), revents: 0)
                let ready = poll(&descriptor, 1, Int32((left * 1000).rounded(.up)))
                if ready < 0, errno != EINTR { throw error(code: .connectionLost, statement: nil) }
                if ready > 0, PQconsumeInput(handle) != 1 { throw error(code: .connectionLost, statement: nil) }
                received = pendingNotifications()
            }
            return received
        }
    }

    private func pendingNotifications() -> [Notification] {
        var received: [Notification] = []
        while let notify = PQnotifies(handle) {
            received.append(Notification(channel: String(cString: notify.pointee.relname), payload: String(cString: notify.pointee.extra)))
            PQfreemem(notify)
        }
        return received
    }
}
