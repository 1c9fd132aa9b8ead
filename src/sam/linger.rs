//! When a stream session may be closed on the router, and the sessions that
//! are kept open until then after their identity has gone.
//!
//! i2pd's SAM bridge (seen on 2.45, 2.56 and 2.59) sometimes loses a stream whose
//! far end closed at the wrong moment: the stream is gone from its
//! destination, yet a receive timer stays armed for it, and the router never
//! ends the SAM socket. The timer fires every 20 s for up to SAM's idle limit
//! of an hour. Closing the session frees the destination after a few seconds;
//! the next firing then uses freed memory and the router's SAM thread
//! crashes, taking every I2P program on the machine with it
//! (doc/i2pd-sam-churn-crash.md). From outside, such a stream looks like one
//! the proxy ended first: its router never sent an end. So a session that
//! had a stream the proxy ended first stays open [`UNENDED_STREAM_HOLD`]
//! after that stream; any other waits [`STREAM_END_GRACE`] after its last
//! stream, for work the router still has queued for it. Nothing here does
//! I/O: `identity` keeps the sessions, `stream` records the ends.

use std::time::{Duration, Instant};

/// How long a session stays open after a stream the proxy ended before its
/// router did, by default (`--session-linger`): SAM's idle limit for a
/// stream socket (an hour on i2pd, the longest its lost stream's timer can
/// stay armed) and a margin of a minute (three of the timer's 20 s periods).
pub const UNENDED_STREAM_HOLD: Duration = Duration::from_secs(3600 + 60);

/// How long a session stays open after a stream its router ended, so that
/// work the router queued for the stream runs while its destination exists.
pub const STREAM_END_GRACE: Duration = Duration::from_secs(3);

/// How a session's streams ended, as far as closing it is concerned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ends {
    /// The last stream's end, whoever ended it.
    last: Option<Instant>,
    /// The last stream the proxy ended before the router did.
    unended: Option<Instant>,
}

impl Ends {
    /// A stream ended at `now`; `router_ended` when its router's end came
    /// before the proxy ended its side.
    pub fn record(&mut self, now: Instant, router_ended: bool) {
        self.last = Some(now);
        if !router_ended {
            self.unended = Some(now);
        }
    }

    /// The earliest moment the session may be closed, a stream the proxy
    /// ended first holding it for `hold`; None: at once. A zero `hold`
    /// (`--session-linger 0`, for routers without the bug) waits for
    /// nothing, not even the grace.
    pub fn close_at(&self, now: Instant, hold: Duration) -> Option<Instant> {
        if hold.is_zero() {
            return None;
        }
        let grace = self.last.map(|t| t + STREAM_END_GRACE);
        let hold = self.unended.map(|t| t + hold);
        grace.max(hold).filter(|t| *t > now)
    }
}

/// Sessions kept open until a moment each, after their identity closed.
#[derive(Debug)]
pub struct Lingering<T> {
    held: Vec<(Instant, T)>,
}

impl<T> Default for Lingering<T> {
    fn default() -> Self {
        Lingering { held: Vec::new() }
    }
}

impl<T> Lingering<T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Keep `session` until `until`.
    pub fn keep(&mut self, until: Instant, session: T) {
        self.held.push((until, session));
    }

    pub fn len(&self) -> usize {
        self.held.len()
    }

    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// How many stay past `t`.
    pub fn count_after(&self, t: Instant) -> usize {
        self.held.iter().filter(|(until, _)| *until > t).count()
    }

    /// Those whose moment has come at `now`, taken out, for the caller to
    /// close.
    pub fn due(&mut self, now: Instant) -> Vec<T> {
        let (due, kept): (Vec<_>, Vec<_>) = self.held.drain(..).partition(|(t, _)| *t <= now);
        self.held = kept;
        due.into_iter().map(|(_, s)| s).collect()
    }

    /// All of them, taken out (the proxy stops).
    pub fn take_all(&mut self) -> Vec<T> {
        self.held.drain(..).map(|(_, s)| s).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_without_streams_closes_at_once() {
        let now = Instant::now();
        assert_eq!(Ends::default().close_at(now, UNENDED_STREAM_HOLD), None);
    }

    #[test]
    fn a_stream_the_router_ended_holds_its_session_for_the_grace_only() {
        let t0 = Instant::now();
        let mut e = Ends::default();
        e.record(t0, true);
        assert_eq!(e.close_at(t0, UNENDED_STREAM_HOLD), Some(t0 + STREAM_END_GRACE));
        assert_eq!(e.close_at(t0 + STREAM_END_GRACE, UNENDED_STREAM_HOLD), None);
    }

    #[test]
    fn a_stream_the_proxy_ended_first_holds_its_session_an_hour_and_a_minute() {
        let t0 = Instant::now();
        let mut e = Ends::default();
        e.record(t0, false);
        // Later streams the router ended do not shorten the hold.
        e.record(t0 + Duration::from_secs(10), true);
        let hold = UNENDED_STREAM_HOLD;
        assert_eq!(e.close_at(t0 + Duration::from_secs(20), hold), Some(t0 + hold));
        assert_eq!(hold, Duration::from_secs(3660));
        assert_eq!(e.close_at(t0 + hold, hold), None);
        // No hold at all (`--session-linger 0`): not even the grace.
        assert_eq!(e.close_at(t0 + Duration::from_secs(11), Duration::ZERO), None);
        // A later one the proxy ended first starts the hold again.
        let t1 = t0 + Duration::from_secs(100);
        e.record(t1, false);
        assert_eq!(e.close_at(t0 + hold, hold), Some(t1 + hold));
    }

    #[test]
    fn lingering_sessions_come_out_when_due() {
        let t0 = Instant::now();
        let mut l = Lingering::new();
        l.keep(t0 + Duration::from_secs(5), "a");
        l.keep(t0 + Duration::from_secs(1), "b");
        l.keep(t0 + Duration::from_secs(9), "c");
        assert_eq!(l.len(), 3);
        assert_eq!(l.count_after(t0 + Duration::from_secs(1)), 2);
        assert!(l.due(t0).is_empty());
        assert_eq!(l.due(t0 + Duration::from_secs(5)), vec!["a", "b"]);
        assert_eq!(l.len(), 1);
        assert_eq!(l.take_all(), vec!["c"]);
        assert!(l.is_empty());
    }
}
