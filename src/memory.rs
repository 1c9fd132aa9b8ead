//! What the process gives back to the system once its clients have gone:
//! glibc's malloc is told to keep few arenas, its threads to keep no stacks
//! of exited threads, and a leaving worker makes malloc trim its heap.
//!
//! glibc gives every new thread a malloc arena of its own, up to eight per
//! core, and an arena once used keeps at least its 128 KiB top pad: after a
//! thousand clients, that alone stayed resident (about 2 MiB). It keeps
//! small freed blocks in "fast bins", merged with their neighbours only when
//! a large block is asked for, and returns memory only from the top of a
//! heap, when a large block is freed: workers leave after a burst with
//! their freed blocks scattered over the heap and nothing large asked for
//! afterwards, so nothing was returned.
//!
//! Not here: which memory a relay keeps while clients are served (relay.rs,
//! buffers.rs).

use crate::relay;

/// The malloc arenas glibc may make. A few, so that the pads they keep stay
/// small; more than one, so that workers seldom wait for each other's
/// allocations (there are few: a relay does not allocate). RSS 60 s after
/// 1,000 held connections closed, against the idle RSS, measured on two
/// cores: 2.26× with glibc's default (16 here), 1.95× with 2, 1.78× with 3,
/// 1.79× with 4.
const ARENA_MAX: &str = "4";

/// glibc keeps the stacks of exited threads (up to 40 MiB of them) for new
/// threads, with the pages they touched and their TLS vectors, which sit on
/// the main heap and keep its top from being trimmed. Workers are reused
/// (4,300 connection cycles started 22 threads), so the cache saves little:
/// with none, the cycles' rate and CPU stayed within run-to-run noise of a
/// 4 MiB cache (7 runs each), while RSS 60 s after 1,000 held connections
/// closed fell from 1.94× to 1.79× the idle RSS (medians of 3 runs).
const STACK_CACHE: &str = "glibc.pthread.stack_cache_size=0";

/// Size of the block asked for and freed again: large enough that glibc
/// merges the free blocks of the heap on the request and trims the heap on
/// the free (64 KiB for both), small enough to come from the heap rather
/// than a mapping of its own (128 KiB and up).
const NUDGE_SIZE: usize = 64 * 1024;

/// glibc reads `MALLOC_ARENA_MAX` and `GLIBC_TUNABLES` from the environment
/// only as the program starts, and setting it from inside needs libc calls (unsafe code): so
/// the program starts itself again, in the same process, with the variables
/// set ([`ARENA_MAX`], [`STACK_CACHE`]; a glibc without that tunable ignores
/// it). Nothing happens when the environment already has it or
/// `GLIBC_TUNABLES` (the user's choice, or this is the second start), and
/// without glibc. Call before anything else: threads and open files would
/// not survive the restart.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        use std::os::unix::process::CommandExt;
        if std::env::var_os("MALLOC_ARENA_MAX").is_some() || std::env::var_os("GLIBC_TUNABLES").is_some() {
            return;
        }
        let Ok(exe) = std::env::current_exe() else { return };
        let mut args = std::env::args_os();
        let mut again = std::process::Command::new(exe);
        if let Some(name) = args.next() {
            again.arg0(name);
        }
        // Returns only if the restart failed: go on with glibc's default.
        let _ = again.args(args).env("MALLOC_ARENA_MAX", ARENA_MAX).env("GLIBC_TUNABLES", STACK_CACHE).exec();
    }
}

/// Called by a worker that leaves: the relay buffers kept for the next
/// client are freed, then one large block is asked for and freed, so that
/// the arena merges its free blocks and trims its heap.
pub fn give_back() {
    relay::BUFFERS.release_spares();
    let block: Vec<u8> = Vec::with_capacity(NUDGE_SIZE);
    // Keeps the request from being optimised away.
    std::hint::black_box(&block);
}
