//! At most one log line of a kind per interval, so that a cause lasting as
//! long as its clients (EMFILE, a misconfigured program retrying) cannot
//! flood the log; the next line says how many were held back.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One kind of line and when it was last let through.
#[derive(Debug)]
pub struct RateLimit {
    interval: Duration,
    last: Option<Instant>,
    held_back: u64,
}

impl RateLimit {
    pub const fn new(interval: Duration) -> Self {
        RateLimit { interval, last: None, held_back: 0 }
    }

    /// At `now`: `Some(lines held back since the last one let through)` when
    /// a line may be logged, else `None` (and the line is counted).
    pub fn due(&mut self, now: Instant) -> Option<u64> {
        if self.last.is_some_and(|t| now.saturating_duration_since(t) < self.interval) {
            self.held_back += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.held_back))
    }
}

/// [`RateLimit::due`] now, on a limit that every thread of the process
/// shares (a poisoned lock still counts: a line is not worth a panic).
pub fn due_shared(limit: &Mutex<RateLimit>) -> Option<u64> {
    limit.lock().unwrap_or_else(|p| p.into_inner()).due(Instant::now())
}

/// The tail a let-through line carries: empty, or how many were held back.
pub fn held_back_suffix(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} more since the last such line)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_then_the_count() {
        let t0 = Instant::now();
        let s = Duration::from_secs(5);
        let mut r = RateLimit::new(s);
        assert_eq!(r.due(t0), Some(0));
        for i in 1..100u64 {
            assert_eq!(r.due(t0 + Duration::from_millis(i * 10)), None);
        }
        assert_eq!(r.due(t0 + s - Duration::from_millis(1)), None);
        assert_eq!(r.due(t0 + s), Some(100));
        assert_eq!(r.due(t0 + s * 3), Some(0));
        assert_eq!(held_back_suffix(0), "");
        assert_eq!(held_back_suffix(7), " (7 more since the last such line)");
    }
}
