import ArgumentParser

/// The `starkv` command: record, inspect, replay and report KV-cache compression traces.
/// Each subcommand lives in its own file and only parses arguments, calls a library module
/// and prints what it returns.
@main
struct StarKV: ParsableCommand {
    static let version = "0.1.0"

    static let configuration = CommandConfiguration(
        commandName: "starkv",
        abstract: "Record, replay and report KV-cache compression for GUI-agent VLMs.",
        discussion: ExitStatus.help,
        version: version,
        subcommands: [
            Inspect.self,
            Validate.self,
            Recover.self,
            Dump.self,
            MemoryCommand.self,
            Record.self,
            ReplayCommand.self,
            ReportCommand.self,
            SweepCommand.self,
            MergeCommand.self,
            BenchRead.self,
        ]
    )
}
