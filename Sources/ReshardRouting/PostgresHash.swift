/// PostgreSQL's own hash functions, bit for bit, so reshard can route a key without asking a
/// server. They are Bob Jenkins' lookup3 as PostgreSQL adapted it (`src/common/hashfn.c`,
/// `hash_bytes` and `hash_bytes_uint32`) plus the per-type wrappers of `src/backend/access/hash`.
/// Every result is the signed int4 the SQL function returns. A test compares each with the server.
public enum PostgresHash {
    /// `hashint2(k)`
    public static func int2(_ k: Int16) -> Int32 { uint32(UInt32(bitPattern: Int32(k))) }

    /// `hashint4(k)`
    public static func int4(_ k: Int32) -> Int32 { uint32(UInt32(bitPattern: k)) }

    /// `hashint8(k)`: folds the high half into the low half so that values fitting in int4 hash
    /// like `hashint4` (cross-type hash joins depend on that).
    public static func int8(_ k: Int64) -> Int32 {
        var low = UInt32(truncatingIfNeeded: k)
        let high = UInt32(truncatingIfNeeded: k >> 32)
        low ^= k >= 0 ? high : ~high
        return uint32(low)
    }

    /// `hashtext(s)` for a deterministic collation: the string's bytes in the database encoding
    /// (UTF-8 is the only one reshard supports).
    public static func text(_ s: String) -> Int32 { Int32(bitPattern: bytes(Array(s.utf8))) }

    /// `uuid_hash(u)`: the 16 bytes of the uuid.
    public static func uuid(_ bytes16: [UInt8]) -> Int32 {
        precondition(bytes16.count == 16)
        return Int32(bitPattern: bytes(bytes16))
    }

    // MARK: hashfn.c

    @inline(__always) private static func rot(_ x: UInt32, _ k: UInt32) -> UInt32 { (x << k) | (x >> (32 - k)) }

    @inline(__always) private static func mix(_ a: inout UInt32, _ b: inout UInt32, _ c: inout UInt32) {
        a &-= c; a ^= rot(c, 4); c &+= b
        b &-= a; b ^= rot(a, 6); a &+= c
        c &-= b; c ^= rot(b, 8); b &+= a
        a &-= c; a ^= rot(c, 16); c &+= b
        b &-= a; b ^= rot(a, 19); a &+= c
        c &-= b; c ^= rot(b, 4); b &+= a
    }

    @inline(__always) private static func final(_ a: inout UInt32, _ b: inout UInt32, _ c: inout UInt32) {
        c ^= b; c &-= rot(b, 14)
        a ^= c; a &-= rot(c, 11)
        b ^= a; b &-= rot(a, 25)
        c ^= b; c &-= rot(b, 16)
        a ^= c; a &-= rot(c, 4)
        b ^= a; b &-= rot(a, 14)
        c ^= b; c &-= rot(b, 24)
    }

    /// `hash_bytes_uint32`
    static func uint32(_ k: UInt32) -> Int32 {
        var a: UInt32 = 0x9e37_79b9 &+ 4 &+ 3_923_095
        var b = a, c = a
        a &+= k
        final(&a, &b, &c)
        return Int32(bitPattern: c)
    }

    /// `hash_bytes`, reading words little-endian as PostgreSQL does on x86 and ARM.
    static func bytes(_ k: [UInt8]) -> UInt32 {
        var a: UInt32 = 0x9e37_79b9 &+ UInt32(truncatingIfNeeded: k.count) &+ 3_923_095
        var b = a, c = a
        var i = 0
        var length = k.count
        @inline(__always) func word(_ at: Int) -> UInt32 {
            UInt32(k[at]) | UInt32(k[at + 1]) << 8 | UInt32(k[at + 2]) << 16 | UInt32(k[at + 3]) << 24
        }
        while length >= 12 {
            a &+= word(i); b &+= word(i + 4); c &+= word(i + 8)
            mix(&a, &b, &c)
            i += 12
            length -= 12
        }
        // The last 0...11 bytes; the lowest byte of c is reserved for the length.
        if length >= 11 { c &+= UInt32(k[i + 10]) << 24 }
        if length >= 10 { c &+= UInt32(k[i + 9]) << 16 }
        if length >= 9 { c &+= UInt32(k[i + 8]) << 8 }
        if length >= 8 { b &+= UInt32(k[i + 7]) << 24 }
        if length >= 7 { b &+= UInt32(k[i + 6]) << 16 }
        if length >= 6 { b &+= UInt32(k[i + 5]) << 8 }
        if length >= 5 { b &+= UInt32(k[i + 4]) }
        if length >= 4 { a &+= UInt32(k[i + 3]) << 24 }
        if length >= 3 { a &+= UInt32(k[i + 2]) << 16 }
        if length >= 2 { a &+= UInt32(k[i + 1]) << 8 }
        if length >= 1 { a &+= UInt32(k[i]) }
        final(&a, &b, &c)
        return c
    }
}
