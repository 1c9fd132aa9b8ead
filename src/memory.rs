//! What the process gives back to the system once its clients have gone: a
//! leaving worker makes glibc's malloc trim its heap.
//!
//! glibc keeps small freed blocks in "fast bins", merged with their
//! neighbours only when a large block is asked for, and returns memory only
//! from the top of a heap, when a large block is freed: workers leave after
//! a burst with their freed blocks scattered over the heap and nothing large
//! asked for afterwards, so nothing was returned.
//!
//! Not here: which memory a relay keeps while clients are served (relay.rs,
//! buffers.rs).

use crate::relay;

/// Size of the block asked for and freed again: large enough that glibc
/// merges the free blocks of the heap on the request and trims the heap on
/// the free (64 KiB for both), small enough to come from the heap rather
/// than a mapping of its own (128 KiB and up).
const NUDGE_SIZE: usize = 64 * 1024;

/// Called by a worker that leaves: the relay buffers kept for the next
/// client are freed, then one large block is asked for and freed, so that
/// the arena merges its free blocks and trims its heap.
pub fn give_back() {
    relay::BUFFERS.release_spares();
    let block: Vec<u8> = Vec::with_capacity(NUDGE_SIZE);
    // Keeps the request from being optimised away.
    std::hint::black_box(&block);
}
