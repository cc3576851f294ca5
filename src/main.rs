use std::process::ExitCode;

fn main() -> ExitCode {
    tune_allocator();
    infrahub::cli::main()
}

/// glibc's malloc keeps a daemon's memory long after a burst. Each thread that allocates gets
/// an arena of its own (up to 8 per core), and once a large block is freed the mmap threshold
/// climbs (up to 32 MiB), so every later argon2 hash (19 MiB, on the blocking pool's threads)
/// is carved from an arena that keeps the pages. Two arenas, and blocks from 256 KiB up mapped
/// and unmapped on their own, keep the resident set near what is in use (docs/BENCHMARKS.md,
/// memory).
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before any thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}
