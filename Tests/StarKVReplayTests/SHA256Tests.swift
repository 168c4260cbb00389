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
        for hardware in [false, true] {
            var h = SHA256(hardware: hardware)
            h.update(input)
            #expect(h.finalize() == hex, "hardware: \(hardware)")
        }
    }

    @Test func shaExtensionsAndPortablePathGiveTheSameDigestForEveryLengthAndSplit() {
        // Lengths 0…300 cover 0–4 whole blocks with every tail length; each input is fed in two
        // pieces split at a length-dependent point so partial blocks meet whole ones.
        var rng: UInt64 = 0x9E37_79B9_7F4A_7C15
        for length in 0...300 {
            var bytes = [UInt8](repeating: 0, count: length)
            for i in 0..<length {
                rng = rng &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                bytes[i] = UInt8(truncatingIfNeeded: rng >> 56)
            }
            let split = (length * 7) / 11
            var portable = SHA256(hardware: false), hardware = SHA256(hardware: true)
            portable.update(bytes[..<split]); portable.update(bytes[split...])
            hardware.update(bytes[..<split]); hardware.update(bytes[split...])
            #expect(portable.finalize() == hardware.finalize(), "length \(length)")
        }
    }

    @Test func millionAsDigest() {
        for hardware in [false, true] {
            var h = SHA256(hardware: hardware)
            let chunk = [UInt8](repeating: UInt8(ascii: "a"), count: 1000)
            for _ in 0..<1000 { h.update(chunk) }
            #expect(h.finalize() == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0", "hardware: \(hardware)")
        }
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
