import Testing

@testable import StarKVSweep

@Suite struct SweepTOMLTests {
    @Test func parsesEveryValueKindOfTheSubset() throws {
        let doc = try SweepTOML.parse(
            """
            # comment
            a = "x\\ty\\"\\u00e9"   # trailing comment
            b = 'C:\\raw'
            c = -1_000
            d = 2.5e1
            e = true
            f = [1, "two", 3.0, false,]
            g = [
              "multi",   # inside
              "line",
            ]
            """)
        #expect(doc.entries.map(\.key) == ["a", "b", "c", "d", "e", "f", "g"])
        #expect(doc.value("a")?.value == .string("x\ty\"é"))
        #expect(doc.value("b")?.value == .string("C:\\raw"))
        #expect(doc.value("c")?.value == .integer(-1000))
        #expect(doc.value("d")?.value == .float(25))
        #expect(doc.value("e")?.value == .bool(true))
        #expect(doc.value("f")?.value == .array([.integer(1), .string("two"), .float(3), .bool(false)]))
        #expect(doc.value("g")?.value == .array([.string("multi"), .string("line")]))
        #expect(doc.value("g")?.line == 8)
    }

    @Test(arguments: [
        ("[table]\na = 1", 1, "tables"),
        ("a = 1\na = 2", 2, "set twice"),
        ("a.b = 1", 1, "dotted keys"),
        ("a = {x = 1}", 1, "inline tables"),
        ("a = [[1]]", 1, "nested arrays"),
        ("a = \"open", 1, "unterminated string"),
        ("a = [1, 2", 1, "unterminated array"),
        ("\n\na = bare", 3, "not a value"),
        ("a = 1 b = 2", 1, "after the value"),
        ("a = 007", 1, "leading zeros"),
        ("a = 1__0", 1, "between digits"),
        ("a = \"\"\"x\"\"\"", 1, "multi-line strings"),
        ("a = 1.", 1, "digit must follow"),
        ("a = \"\\q\"", 1, "unsupported escape"),
        ("a = 99999999999999999999", 1, "64-bit"),
    ])
    func refusesWhatIsOutsideTheSubsetNamingTheLine(text: String, line: Int, words: String) {
        do {
            _ = try SweepTOML.parse(text)
            Issue.record("accepted \(text)")
        } catch let e as TOMLError {
            #expect(e.line == line, "\(e)")
            #expect(e.message.contains(words), "\(e)")
        } catch { Issue.record("\(error)") }
    }

    @Test func readsMixedNumberAndStringArrays() throws {
        // (python/tests/test_sweep_file.py checks the documented example against Python's tomllib.)
        let doc = try SweepTOML.parse("starkv_sweep = 1\nbudgets = [10, \"512tok\"]\nkv_heads = [4, 28]\n")
        #expect(doc.value("starkv_sweep")?.value == .integer(1))
        #expect(doc.value("budgets")?.value == .array([.integer(10), .string("512tok")]))
        #expect(doc.value("kv_heads")?.value == .array([.integer(4), .integer(28)]))
    }
}
