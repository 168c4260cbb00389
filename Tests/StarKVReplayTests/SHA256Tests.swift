import Testing
@testable import StarKVReplay

@Suite struct SHA256Tests {
    // FIPS 180-4 / NIST example vectors.
    @Test(arguments: [
        ("", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"),
        ("abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        ("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq", "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"),
    ])
    func digestMatchesNISTVectors(input: String, hex: String) {
        var h = SHA256()
        h.update(input)
        #expect(h.finalize() == hex)
    }

    @Test func millionAsDigest() {
        var h = SHA256()
        let chunk = [UInt8](repeating: UInt8(ascii: "a"), count: 1000)
        for _ in 0..<1000 { h.update(chunk) }
        #expect(h.finalize() == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0")
    }

    @Test func incrementalFeedingEqualsOneShot() {
        var a = SHA256()
        a.update("hello world, this is more than one block of input for the hash function to chew on")
        var b = SHA256()
        b.update("hello world, this is more than one ")
        b.update("block of input for the hash function to chew on")
        #expect(a.finalize() == b.finalize())
    }

    @Test func int32RowsHashAsTheirLittleEndianBytes() {
        // 1..200 as Int32: the row path must equal feeding each integer on its own, across
        // block boundaries and with a pending partial block before it.
        let row = (1...200).map { Int32($0 * 7919 - 50_000) }
        var a = SHA256()
        a.update("x")
        for v in row { a.update(integer: v) }
        var b = SHA256()
        b.update("x")
        b.update(littleEndian: row)
        #expect(a.finalize() == b.finalize())
        var bytes: [UInt8] = [UInt8(ascii: "x")]
        for v in row { for i in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: UInt32(bitPattern: v) >> (8 * UInt32(i)))) } }
        var c = SHA256()
        c.update(bytes)
        #expect(c.finalize() == a.finalize())
    }
}
