import Foundation
import Testing
@testable import StarKVTrace

@Suite struct OutputFileTests {
    private func folder(_ name: String) throws -> String {
        let dir = NSTemporaryDirectory() + "starkv-outputfile-\(name)-\(getpid())"
        try? FileManager.default.removeItem(atPath: dir)
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    @Test func writeReplacesTheFileAndLeavesNoTemporaryBehind() throws {
        let dir = try folder("write")
        let path = dir + "/out.json"
        try OutputFile.write(Data("old".utf8), to: path)
        try OutputFile.write(Data("new contents".utf8), to: path)
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "new contents")
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["out.json"])
    }

    @Test func sameFileAsAnInputIsRefusedThroughSymlinksAndHardLinks() throws {
        let dir = try folder("same")
        let input = dir + "/in.starkv"
        try Data("input bytes".utf8).write(to: URL(fileURLWithPath: input))
        try FileManager.default.createSymbolicLink(atPath: dir + "/sym", withDestinationPath: input)
        try FileManager.default.linkItem(atPath: input, toPath: dir + "/hard")
        for output in [input, dir + "/sym", dir + "/hard", dir + "/./in.starkv"] {
            #expect(throws: OutputFileError.sameAsInput(output: output, input: input)) {
                try OutputFile.write(Data("x".utf8), to: output, inputs: [input])
            }
        }
        #expect(try String(contentsOfFile: input, encoding: .utf8) == "input bytes")
    }

    @Test func existingOutputIsKeptWithoutOverwrite() throws {
        let dir = try folder("exists")
        let path = dir + "/out"
        try OutputFile.write(Data("first".utf8), to: path)
        #expect(throws: OutputFileError.exists(path: path)) {
            try OutputFile.write(Data("second".utf8), to: path, overwrite: false)
        }
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "first")
    }

    @Test func missingFolderIsOneErrorNamingThePath() throws {
        let path = NSTemporaryDirectory() + "starkv-no-such-folder-\(getpid())/out.json"
        do {
            try OutputFile.write(Data("x".utf8), to: path)
            Issue.record("expected an error")
        } catch {
            #expect(error.description.hasPrefix(path + ": cannot create a temporary file: No such file or directory"))
        }
    }
}
