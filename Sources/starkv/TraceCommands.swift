import ArgumentParser

struct Inspect: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print a trace's header and a per-step table.")
    @Argument(help: "Trace file.") var trace: String
    func run() throws { throw ValidationError("not implemented yet") }
}

struct Validate: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Verify every checksum of a trace.")
    @Argument(help: "Trace file.") var trace: String
    func run() throws { throw ValidationError("not implemented yet") }
}

struct Recover: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Rewrite a footer-less trace with a footer.")
    @Argument(help: "Trace file.") var trace: String
    func run() throws { throw ValidationError("not implemented yet") }
}
