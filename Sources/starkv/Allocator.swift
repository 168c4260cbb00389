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
    /// heap lets the next step reuse the same, already mapped pages.
    ///
    /// One arena: glibc gives threads arenas of their own, and each arena keeps what was freed
    /// in it, so with `--threads 2` the peak resident memory became the sum of two arenas' peaks
    /// (a replay sweep at 2 threads: about 3.5× the largest step's decoded fields instead of
    /// 1.9×). Small blocks still come from glibc's per-thread caches without the arena's lock.
    ///
    /// Peak memory is otherwise unchanged (freed memory is reused, not added to); the process
    /// keeps its peak until it exits. A process-wide policy, so it is set here, in the CLI, not
    /// in the library.
    static func keepFreedMemoryForReuse() {
        _ = starkv_malloc_keep_freed(32 << 20, 1 << 30, 1)
    }
}
