//! Whether a stream session can still reach what it reached before: the
//! record behind rebuilding a session that the bridge keeps answering but
//! through which no stream opens any more. emissary 0.4 can leave a session
//! that way after slow bulk streams were cut off: every STREAM CONNECT waits
//! out its SYN retries and answers `CANT_REACH_PEER`, while a fresh session on
//! the same router reaches the same target at once (doc/emissary-stuck-session.md).
//!
//! The rule is conservative, so that a user who types unknown targets never
//! costs anyone their session: only a target this session has opened a
//! stream to before counts, and the session is called stuck after
//! [`STUCK_FAILURES`] refusals of such targets in a row (no stream opened
//! in between, to any target) spread over at least [`STUCK_SPAN`]. The
//! refusal itself is the evidence that the bridge works: it answered HELLO
//! and STREAM CONNECT. Sans-IO: the caller passes the time.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Refusals in a row of targets reached before that call a session stuck:
/// one or two are what a site restarting its tunnels costs.
pub const STUCK_FAILURES: u32 = 3;
/// They must spread over this long: a burst of refusals within seconds
/// (several tabs to one briefly unreachable site) is not enough.
pub const STUCK_SPAN: Duration = Duration::from_secs(30);
/// Targets remembered as reached, oldest forgotten first: enough for the
/// sites one client uses, and a bound on what a session keeps.
pub const REACHED_MAX: usize = 32;

/// One session's record; a new session starts a new one.
#[derive(Debug, Default)]
pub struct Reach {
    /// Targets a stream opened to, as the client named them.
    reached: VecDeque<String>,
    /// Refusals of reached targets since the last stream opened.
    failures: u32,
    /// When the first of them came.
    first_failure: Option<Instant>,
}

impl Reach {
    pub fn new() -> Self {
        Self::default()
    }

    /// A stream to `target` opened: the session works.
    pub fn opened(&mut self, target: &str) {
        self.failures = 0;
        self.first_failure = None;
        if let Some(i) = self.reached.iter().position(|t| t == target) {
            self.reached.remove(i);
        } else if self.reached.len() >= REACHED_MAX {
            self.reached.pop_front();
        }
        self.reached.push_back(target.to_string());
    }

    /// The bridge answered that it cannot reach `target`, at `now`; true
    /// when the session is now called stuck (the record starts over).
    pub fn refused(&mut self, target: &str, now: Instant) -> bool {
        if !self.reached.iter().any(|t| t == target) {
            return false;
        }
        let first = *self.first_failure.get_or_insert(now);
        self.failures = self.failures.saturating_add(1);
        let stuck = self.failures >= STUCK_FAILURES && now.saturating_duration_since(first) >= STUCK_SPAN;
        if stuck {
            *self = Self::default();
        }
        stuck
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SITE: &str = "site.b32.i2p";

    /// A record that has opened a stream to [`SITE`], and the time.
    fn site_reached() -> (Instant, Reach) {
        let mut r = Reach::new();
        r.opened(SITE);
        (Instant::now(), r)
    }

    fn secs(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn unknown_targets_never_count() {
        let (t0, mut r) = site_reached();
        for i in 0..100 {
            assert!(!r.refused("typo.i2p", secs(t0, i * 20)));
        }
    }

    #[test]
    fn stuck_after_three_refusals_of_a_reached_target_over_the_span() {
        let (t0, mut r) = site_reached();
        assert!(!r.refused(SITE, secs(t0, 0)));
        assert!(!r.refused(SITE, secs(t0, 13)));
        assert!(!r.refused(SITE, secs(t0, 26)));
        assert!(r.refused(SITE, secs(t0, 39)));
        // It starts over: the new session's record is empty.
        assert!(!r.refused(SITE, secs(t0, 80)));
    }

    #[test]
    fn a_burst_within_the_span_is_not_enough() {
        let (t0, mut r) = site_reached();
        for i in 0..10 {
            assert!(!r.refused(SITE, secs(t0, i)));
        }
        assert!(r.refused(SITE, secs(t0, 30)));
    }

    #[test]
    fn an_opened_stream_starts_the_count_again() {
        let (t0, mut r) = site_reached();
        r.opened("other.i2p");
        assert!(!r.refused(SITE, secs(t0, 0)));
        assert!(!r.refused("other.i2p", secs(t0, 20)));
        r.opened("third.i2p");
        assert!(!r.refused(SITE, secs(t0, 40)));
        assert!(!r.refused("other.i2p", secs(t0, 60)));
        assert!(r.refused(SITE, secs(t0, 80)));
    }

    #[test]
    fn the_oldest_reached_target_is_forgotten() {
        let (t0, mut r) = site_reached();
        for i in 0..REACHED_MAX {
            r.opened(&format!("t{i}.i2p"));
        }
        for i in 0..STUCK_FAILURES {
            assert!(!r.refused(SITE, secs(t0, u64::from(i) * 60)));
        }
        // Opening a target again makes it the newest.
        let (_, mut r) = site_reached();
        for i in 0..REACHED_MAX - 1 {
            r.opened(&format!("t{i}.i2p"));
        }
        r.opened(SITE);
        r.opened("last.i2p");
        assert!(!r.refused(SITE, secs(t0, 0)));
        assert!(!r.refused(SITE, secs(t0, 20)));
        assert!(r.refused(SITE, secs(t0, 40)));
    }
}
