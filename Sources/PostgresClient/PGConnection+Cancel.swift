import CLibPQ

extension PGConnection {
    /// Asks the server to cancel whatever this connection is running. Safe to call from any
    /// thread while another thread is blocked in a statement on this connection: it does not take
    /// the connection's lock and uses libpq's separate cancel object. The blocked call then
    /// fails with `PostgresError.Code.cancelled`.
    ///
    /// - Returns: whether the cancel request was delivered (not whether anything was running).
    @discardableResult
    public func cancel() -> Bool {
        guard let cancelHandle else { return false }
        var errbuf = [CChar](repeating: 0, count: 256)
        return PQcancel(cancelHandle, &errbuf, Int32(errbuf.count)) == 1
    }
}
