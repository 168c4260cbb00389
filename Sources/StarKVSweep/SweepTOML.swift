/// The TOML subset that sweep files are written in (docs/sweeps.md "File format").
///
/// Supported: `key = value` lines at the top level; bare keys (`A-Z a-z 0-9 _ -`); basic strings
/// `"..."` with the escapes `\" \\ \n \t \r \uXXXX`, literal strings `'...'`; decimal integers
/// (optional sign, `_` between digits); decimal floats (`1.5`, `2e3`); `true` / `false`; arrays of
/// those scalars, which may span lines and end with a comma; `#` comments. Anything else — tables,
/// dotted keys, inline tables, nested arrays, dates, multi-line strings, a repeated key — is
/// refused with the line number, so a file never means something other than what it says.
public enum TOMLValue: Sendable, Equatable {
    case string(String)
    case integer(Int)
    case float(Double)
    case bool(Bool)
    case array([TOMLValue])

    /// The TOML type name, for error messages.
    public var typeName: String {
        switch self {
        case .string: return "string"
        case .integer: return "integer"
        case .float: return "float"
        case .bool: return "boolean"
        case .array: return "array"
        }
    }
}

/// A parsed TOML document of the sweep subset: keys in file order with the line they were set on.
public struct TOMLDocument: Sendable, Equatable {
    public var entries: [(key: String, value: TOMLValue, line: Int)] = []

    public static func == (a: TOMLDocument, b: TOMLDocument) -> Bool {
        a.entries.count == b.entries.count
            && zip(a.entries, b.entries).allSatisfy { $0.key == $1.key && $0.value == $1.value && $0.line == $1.line }
    }

    public func value(_ key: String) -> (value: TOMLValue, line: Int)? {
        entries.first { $0.key == key }.map { ($0.value, $0.line) }
    }
}

/// A syntax error in a sweep file: the line (1-based) and what is wrong there.
public struct TOMLError: Error, Sendable, Equatable, CustomStringConvertible {
    public var line: Int
    public var message: String
    public var description: String { "line \(line): \(message)" }
}

/// Parser of the sweep TOML subset (see `TOMLValue`). Input size is bounded by the caller.
public enum SweepTOML {
    public static func parse(_ text: String) throws -> TOMLDocument {
        var p = Parser(chars: Array(text.unicodeScalars))
        return try p.document()
    }

    struct Parser {
        let chars: [Unicode.Scalar]
        var i = 0
        var line = 1

        init(chars: [Unicode.Scalar]) { self.chars = chars }

        var atEnd: Bool { i >= chars.count }
        var peek: Unicode.Scalar? { atEnd ? nil : chars[i] }

        func fail(_ m: String) -> TOMLError { TOMLError(line: line, message: m) }

        mutating func advance() {
            if chars[i] == "\n" { line += 1 }
            i += 1
        }

        /// Skips spaces and tabs (not newlines).
        mutating func skipBlanks() {
            while let c = peek, c == " " || c == "\t" { advance() }
        }

        mutating func skipComment() {
            if peek == "#" { while let c = peek, c != "\n" { advance() } }
        }

        /// Skips blanks, comments and newlines (inside arrays and between entries).
        mutating func skipSpaceAndComments() {
            while true {
                skipBlanks()
                skipComment()
                if peek == "\n" { advance(); continue }
                if peek == "\r", i + 1 < chars.count, chars[i + 1] == "\n" { i += 1; continue }
                return
            }
        }

        /// After a value: only blanks and a comment may follow before the end of the line.
        mutating func endOfLine() throws {
            skipBlanks()
            skipComment()
            if peek == "\r" { i += 1 }
            if let c = peek {
                guard c == "\n" else { throw fail("unexpected '\(c)' after the value; one key = value per line") }
                advance()
            }
        }

        static func isBare(_ c: Unicode.Scalar) -> Bool {
            ("A"..."Z").contains(c) || ("a"..."z").contains(c) || ("0"..."9").contains(c) || c == "_" || c == "-"
        }

        mutating func document() throws -> TOMLDocument {
            var doc = TOMLDocument()
            var seen: [String: Int] = [:]
            if peek == "\u{FEFF}" { i += 1 }
            while true {
                skipSpaceAndComments()
                guard let c = peek else { return doc }
                if c == "[" { throw fail("tables ([name]) are not part of the sweep-file subset; write every key at the top level") }
                guard Parser.isBare(c) else {
                    if c == "\"" || c == "'" { throw fail("quoted keys are not part of the sweep-file subset") }
                    throw fail("expected a key, found '\(c)'")
                }
                let keyLine = line
                var key = ""
                while let k = peek, Parser.isBare(k) { key.unicodeScalars.append(k); advance() }
                skipBlanks()
                if peek == "." { throw fail("dotted keys are not part of the sweep-file subset") }
                guard peek == "=" else { throw fail("expected '=' after key '\(key)'") }
                advance()
                skipBlanks()
                let v = try value(allowArray: true)
                try endOfLine()
                if let first = seen[key] { throw TOMLError(line: keyLine, message: "key '\(key)' is set twice (first on line \(first))") }
                seen[key] = keyLine
                doc.entries.append((key, v, keyLine))
            }
        }

        mutating func value(allowArray: Bool) throws -> TOMLValue {
            guard let c = peek else { throw fail("missing value") }
            switch c {
            case "\"":
                if i + 2 < chars.count, chars[i + 1] == "\"", chars[i + 2] == "\"" {
                    throw fail("multi-line strings are not part of the sweep-file subset")
                }
                return .string(try basicString())
            case "'":
                if i + 2 < chars.count, chars[i + 1] == "'", chars[i + 2] == "'" {
                    throw fail("multi-line strings are not part of the sweep-file subset")
                }
                return .string(try literalString())
            case "[":
                guard allowArray else { throw fail("nested arrays are not part of the sweep-file subset") }
                return try array()
            case "{":
                throw fail("inline tables are not part of the sweep-file subset")
            case "t", "f":
                var word = ""
                while let k = peek, Parser.isBare(k) { word.unicodeScalars.append(k); advance() }
                if word == "true" { return .bool(true) }
                if word == "false" { return .bool(false) }
                throw fail("'\(word)' is not a value (strings need quotes)")
            default:
                return try number()
            }
        }

        mutating func array() throws -> TOMLValue {
            advance()  // [
            var items: [TOMLValue] = []
            while true {
                skipSpaceAndComments()
                guard let c = peek else { throw fail("unterminated array") }
                if c == "]" { advance(); return .array(items) }
                items.append(try value(allowArray: false))
                skipSpaceAndComments()
                guard let d = peek else { throw fail("unterminated array") }
                if d == "," { advance(); continue }
                if d == "]" { advance(); return .array(items) }
                throw fail("expected ',' or ']' in the array, found '\(d)'")
            }
        }

        mutating func basicString() throws -> String {
            advance()  // "
            var s = ""
            while true {
                guard let c = peek, c != "\n" else { throw fail("unterminated string") }
                advance()
                if c == "\"" { return s }
                if c == "\\" {
                    guard let e = peek else { throw fail("unterminated string") }
                    advance()
                    switch e {
                    case "\"": s.unicodeScalars.append("\"")
                    case "\\": s.unicodeScalars.append("\\")
                    case "n": s.unicodeScalars.append("\n")
                    case "t": s.unicodeScalars.append("\t")
                    case "r": s.unicodeScalars.append("\r")
                    case "u":
                        var hex = ""
                        for _ in 0..<4 {
                            guard let h = peek, h.properties.isASCIIHexDigit else { throw fail("\\u needs four hex digits") }
                            hex.unicodeScalars.append(h)
                            advance()
                        }
                        guard let v = UInt32(hex, radix: 16), let u = Unicode.Scalar(v) else { throw fail("\\u\(hex) is not a character") }
                        s.unicodeScalars.append(u)
                    default: throw fail("unsupported escape '\\\(e)'")
                    }
                } else if c.value < 0x20 && c != "\t" {
                    throw fail("control character in a string")
                } else {
                    s.unicodeScalars.append(c)
                }
            }
        }

        mutating func literalString() throws -> String {
            advance()  // '
            var s = ""
            while true {
                guard let c = peek, c != "\n" else { throw fail("unterminated string") }
                advance()
                if c == "'" { return s }
                s.unicodeScalars.append(c)
            }
        }

        mutating func number() throws -> TOMLValue {
            var text = ""
            while let c = peek, c == "+" || c == "-" || c == "." || c == "_" || Parser.isBare(c) {
                text.unicodeScalars.append(c)
                advance()
            }
            guard !text.isEmpty else { throw fail("expected a value, found '\(peek.map { String($0) } ?? "end of file")'") }
            // Underscores only between digits.
            let scalars = Array(text.unicodeScalars)
            for (k, c) in scalars.enumerated() where c == "_" {
                let digit: (Int) -> Bool = { j in j >= 0 && j < scalars.count && ("0"..."9").contains(scalars[j]) }
                guard digit(k - 1), digit(k + 1) else { throw fail("'\(text)': '_' must sit between digits") }
            }
            let plain = text.replacingOccurrences(of: "_", with: "")
            let body = plain.hasPrefix("+") || plain.hasPrefix("-") ? String(plain.dropFirst()) : plain
            if body.count > 1, body.hasPrefix("0"), !body.hasPrefix("0.") , !body.hasPrefix("0e"), !body.hasPrefix("0E") {
                throw fail("'\(text)': leading zeros are not allowed")
            }
            if body.allSatisfy({ ("0"..."9").contains($0) }), !body.isEmpty {
                guard let v = Int(plain) else { throw fail("'\(text)' does not fit a 64-bit integer") }
                return .integer(v)
            }
            let allowed = Set("0123456789.eE+-")
            guard !body.isEmpty, body.allSatisfy({ allowed.contains($0) }), let first = body.first, first.isNumber,
                let v = Double(plain), v.isFinite
            else {
                throw fail("'\(text)' is not a value (strings need quotes)")
            }
            if let dot = body.firstIndex(of: ".") {
                let after = body[body.index(after: dot)...]
                guard let d = after.first, d.isNumber else { throw fail("'\(text)': a digit must follow '.'") }
            }
            return .float(v)
        }
    }
}
