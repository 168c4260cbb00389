import ArgumentParser
import CStarKVSupport

extension StarKV {
    /// The entry point: sets up the allocator, then parses and runs the command.
    static func main() {
        keepFreedMemoryForReuse()
        Self.main(nil)
    }

    /// Reading a trace allocates and frees every step's decoded tensors (hundreds of MB, in
    /// chunks of a few MB). glibc's defaults serve such blocks with fresh `mmap`s (its mmap
    /// threshold rises only to the largest block freed so far) and hand freed heap tops back to
    /// the kernel, so every step's tensors were faulted in and zeroed by the kernel again: about
    /// a third of `bench-read`'s CPU time (benchmarks/replay/README.md). Serving blocks up to
    /// 32 MiB (glibc's maximum for this setting) from the heap and keeping up to 1 GiB of freed
    /// heap lets the next step reuse the same, already mapped pages. Peak memory is unchanged
    /// (freed memory is reused, not added to); only the process keeps its peak until it exits.
    /// A process-wide policy, so it is set here, in the CLI, not in the library.
    static func keepFreedMemoryForReuse() {
        _ = starkv_malloc_keep_freed(32 << 20, 1 << 30)
    }
}
