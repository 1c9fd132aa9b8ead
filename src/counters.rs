//! What the proxy has done since it started, as plain counters for the
//! status report (SIGUSR1 and shutdown). One process-wide set of atomics,
//! bumped where things happen and read by the reporting thread: counts only,
//! never a name, an address or anything kept per connection.

use std::sync::atomic::{AtomicU64, Ordering};

/// Every counter; see [`COUNTERS`].
#[derive(Debug)]
pub struct Counters {
    /// Clients handed to a worker, and those done.
    pub clients: AtomicU64,
    pub clients_ended: AtomicU64,
    /// Clients refused, by reason.
    pub refused_not_i2p: AtomicU64,
    pub refused_ip: AtomicU64,
    pub refused_auth: AtomicU64,
    pub refused_overload: AtomicU64,
    pub refused_handshake_timeout: AtomicU64,
    pub refused_malformed: AtomicU64,
    /// I2P streams opened, and those whose relay has ended.
    pub streams_opened: AtomicU64,
    pub streams_ended: AtomicU64,
    /// CONNECTs the router could not complete (unknown destination, timeout,
    /// bridge down, ...).
    pub streams_failed: AtomicU64,
    /// Bytes relayed client → I2P and I2P → client, counted as streams end.
    pub bytes_out: AtomicU64,
    pub bytes_in: AtomicU64,
    /// Client FINs held back (`--half-close-wait`), holds over, and holds
    /// ended early to give their place to a new client.
    pub holds: AtomicU64,
    pub holds_ended: AtomicU64,
    pub holds_released_early: AtomicU64,
    /// SAM sessions (stream and datagram) made, made again after a loss,
    /// and attempts that failed.
    pub session_builds: AtomicU64,
    pub session_rebuilds: AtomicU64,
    pub session_failures: AtomicU64,
    /// Sessions ended and rebuilt because streams stopped opening through
    /// them (`sam::reach`).
    pub session_stuck: AtomicU64,
    /// UDP associations begun and ended.
    pub udp_opened: AtomicU64,
    pub udp_ended: AtomicU64,
    /// Datagrams from clients sent on to I2P, from I2P delivered to
    /// clients, and dropped either way.
    pub datagrams_out: AtomicU64,
    pub datagrams_in: AtomicU64,
    pub datagrams_dropped: AtomicU64,
}

/// The process's counters.
pub static COUNTERS: Counters = Counters::new();

impl Counters {
    /// All zero (a `const fn`, so the process-wide set can be a `static`).
    pub const fn new() -> Self {
        Counters {
            clients: AtomicU64::new(0),
            clients_ended: AtomicU64::new(0),
            refused_not_i2p: AtomicU64::new(0),
            refused_ip: AtomicU64::new(0),
            refused_auth: AtomicU64::new(0),
            refused_overload: AtomicU64::new(0),
            refused_handshake_timeout: AtomicU64::new(0),
            refused_malformed: AtomicU64::new(0),
            streams_opened: AtomicU64::new(0),
            streams_ended: AtomicU64::new(0),
            streams_failed: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            holds: AtomicU64::new(0),
            holds_ended: AtomicU64::new(0),
            holds_released_early: AtomicU64::new(0),
            session_builds: AtomicU64::new(0),
            session_rebuilds: AtomicU64::new(0),
            session_failures: AtomicU64::new(0),
            session_stuck: AtomicU64::new(0),
            udp_opened: AtomicU64::new(0),
            udp_ended: AtomicU64::new(0),
            datagrams_out: AtomicU64::new(0),
            datagrams_in: AtomicU64::new(0),
            datagrams_dropped: AtomicU64::new(0),
        }
    }
}

impl Default for Counters {
    fn default() -> Self {
        Self::new()
    }
}

/// Count one.
pub fn bump(c: &AtomicU64) {
    add(c, 1);
}

/// Count `n`.
pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// A counter's value now.
pub fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

/// How many have begun and not yet ended (never below zero: the two are
/// read one after the other, without a lock).
pub fn live(begun: &AtomicU64, ended: &AtomicU64) -> u64 {
    let e = get(ended);
    get(begun).saturating_sub(e)
}
