/// A reproducible random source (SplitMix64): the same `--seed` gives the same rows, writes and
/// faults on every machine and Swift version, which `SystemRandomNumberGenerator` cannot promise.
public struct SeededRandom: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    /// A generator for one named thing (a table's cell, a workload thread, the fault schedule):
    /// its numbers do not depend on how many were drawn elsewhere, so adding a column or a thread
    /// leaves the rest of a run unchanged.
    public init(seed: UInt64, _ parts: [String], index: UInt64 = 0) {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325 ^ seed
        for part in parts {
            for byte in part.utf8 { h = (h ^ UInt64(byte)) &* 0x100_0000_01b3 }
            h = (h ^ 0xff) &* 0x100_0000_01b3
        }
        state = h ^ (index &* 0x9e37_79b9_7f4a_7c15)
        _ = next()
    }

    public mutating func next() -> UInt64 {
        state &+= 0x9e37_79b9_7f4a_7c15
        var z = state
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        return z ^ (z >> 31)
    }
}
