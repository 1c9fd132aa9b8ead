//! The state of a SAM session that is built in the background while
//! clients wait for it: starting, ready, down, or closed for good.
//!
//! Stream sessions (`sam::stream`) and datagram sessions (built for an
//! identity in `identity`) both take seconds to build (the router builds
//! tunnels before it answers SESSION CREATE), so a client arriving meanwhile
//! waits, within its own deadline, and is told at once when the build has
//! failed. Once closed, a state never changes again: a builder that finishes
//! late finds out and throws its session away.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Where a session stands.
#[derive(Debug, Clone)]
pub enum State<T> {
    /// Being built: clients wait.
    Starting,
    Ready(T),
    /// The last build failed or the session died: clients are refused.
    Down,
    /// Closed for good.
    Closed,
}

/// Why [`Readiness::wait_ready`] gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReady {
    /// Down or closed.
    Down,
    /// Still starting at the deadline.
    TimedOut,
}

/// A [`State`] that waiting clients are woken on.
#[derive(Debug)]
pub struct Readiness<T> {
    state: Mutex<State<T>>,
    changed: Condvar,
}

impl<T: Clone> Default for Readiness<T> {
    fn default() -> Self {
        Readiness { state: Mutex::new(State::Starting), changed: Condvar::new() }
    }
}

impl<T: Clone> Readiness<T> {
    /// Starting.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state now.
    pub fn get(&self) -> State<T> {
        self.lock().clone()
    }

    /// Move to `new` and wake the waiters; false (and no change) once closed.
    pub fn set(&self, new: State<T>) -> bool {
        let mut st = self.lock();
        if matches!(*st, State::Closed) {
            return false;
        }
        *st = new;
        self.changed.notify_all();
        true
    }

    /// Closed for good; returns what was ready, if anything.
    pub fn close(&self) -> Option<T> {
        let mut st = self.lock();
        let old = std::mem::replace(&mut *st, State::Closed);
        self.changed.notify_all();
        match old {
            State::Ready(t) => Some(t),
            _ => None,
        }
    }

    pub fn is_closed(&self) -> bool {
        matches!(*self.lock(), State::Closed)
    }

    /// The ready value, waiting while it is being built, until `deadline`.
    pub fn wait_ready(&self, deadline: Instant) -> Result<T, NotReady> {
        let mut st = self.lock();
        loop {
            match &*st {
                State::Ready(t) => return Ok(t.clone()),
                State::Down | State::Closed => return Err(NotReady::Down),
                State::Starting => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(NotReady::TimedOut);
            }
            st = match self.changed.wait_timeout(st, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// Sleep for `pause` (a backoff), waking at once if closed meanwhile.
    /// False if closed.
    pub fn sleep_unless_closed(&self, pause: Duration) -> bool {
        let deadline = Instant::now() + pause;
        let mut st = self.lock();
        while !matches!(*st, State::Closed) {
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            st = match self.changed.wait_timeout(st, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        false
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::sync::Arc;
    use std::thread;

    #[test]
    fn waiters_see_ready_down_and_deadline() {
        let r: Arc<Readiness<u32>> = Arc::new(Readiness::new());
        let soon = Instant::now() + Duration::from_millis(20);
        assert_eq!(r.wait_ready(soon), Err(NotReady::TimedOut));
        let r2 = Arc::clone(&r);
        let t = thread::spawn(move || r2.wait_ready(Instant::now() + Duration::from_secs(10)));
        thread::sleep(Duration::from_millis(20));
        assert!(r.set(State::Ready(7)));
        assert_eq!(t.join().unwrap(), Ok(7));
        assert!(r.set(State::Down));
        assert_eq!(r.wait_ready(Instant::now() + Duration::from_secs(10)), Err(NotReady::Down));
    }

    #[test]
    fn closed_is_final() {
        let r: Readiness<u32> = Readiness::new();
        assert!(r.set(State::Ready(1)));
        assert_eq!(r.close(), Some(1));
        assert!(!r.set(State::Ready(2)), "a late builder is refused");
        assert!(r.is_closed());
        assert_eq!(r.wait_ready(Instant::now() + Duration::from_secs(10)), Err(NotReady::Down));
        let start = Instant::now();
        assert!(!r.sleep_unless_closed(Duration::from_secs(10)));
        assert!(start.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn backoff_sleep_wakes_on_close() {
        let r: Arc<Readiness<u32>> = Arc::new(Readiness::new());
        assert!(r.sleep_unless_closed(Duration::from_millis(10)));
        let r2 = Arc::clone(&r);
        let t = thread::spawn(move || r2.sleep_unless_closed(Duration::from_secs(10)));
        thread::sleep(Duration::from_millis(20));
        r.close();
        assert!(!t.join().unwrap());
    }
}
