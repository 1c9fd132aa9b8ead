//! Spare identities: transient STREAM sessions built ahead of need, so that
//! a new identity (new credentials, an `--isolate client` connection, the
//! default identity after SIGHUP) does not wait for SESSION CREATE, which
//! takes ~20 s on i2pd 2.45 and seconds to a minute on the live network.
//! Tor hides its circuit building behind preemptive circuits the same way.
//!
//! A spare is built with exactly the options a new identity's session gets
//! and carries nothing (no stream, no lookup) until it is taken: it has
//! never been used, so handing one out links no earlier stream to it.
//! Each spare is a supervised [`Session`]: when the bridge is down it backs
//! off (1 s up to 60 s) like every other session, and the pool never starts
//! another while it holds `target` of them, so spares never build in a
//! tight loop. A spare still being built is handed out too: its SESSION
//! CREATE started earlier, so it is ready no later than a new one would be.
//!
//! Not here: how many spares the registry may hold under `--max-sessions`
//! (it passes the room it has), and which identity gets one (`identity`).

use crate::sam::ready::State;
use crate::sam::stream::{Session, SessionSpec};
use log::debug;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// The most spares `--spare-sessions` may ask for: each is a session on the
/// router and a thread here, held whether or not anybody comes.
pub const MAX_SPARES: usize = 16;

/// A taken spare and how far it had got.
pub struct Taken {
    pub session: Arc<Session>,
    /// Ready (true) or still being built (false).
    pub ready: bool,
}

/// How many spares are in each state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub ready: usize,
    pub starting: usize,
    pub down: usize,
}

/// The pool.
pub struct Spares {
    /// A new identity's session spec (TRANSIENT destination).
    spec: SessionSpec,
    target: usize,
    pool: Mutex<VecDeque<Arc<Session>>>,
    seq: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Spares {
    /// An empty pool that [`Spares::fill`] keeps at `target` (at most
    /// [`MAX_SPARES`]) spares built from `spec` with a TRANSIENT destination.
    pub fn new(mut spec: SessionSpec, target: usize) -> Spares {
        spec.destination = "TRANSIENT".into();
        Spares {
            spec,
            target: target.min(MAX_SPARES),
            pool: Mutex::new(VecDeque::new()),
            seq: AtomicU64::new(1),
        }
    }

    /// Spares held now, whatever their state.
    pub fn len(&self) -> usize {
        lock(&self.pool).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many are ready, being built, down.
    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for s in lock(&self.pool).iter() {
            match s.state() {
                State::Ready(_) => c.ready += 1,
                State::Starting => c.starting += 1,
                State::Down | State::Closed => c.down += 1,
            }
        }
        c
    }

    /// A spare for a new identity: the oldest ready one, else the oldest
    /// still being built. Down ones stay, retrying with their own backoff:
    /// a client would only be refused on one at once.
    pub fn take(&self) -> Option<Taken> {
        let mut pool = lock(&self.pool);
        let pick = |want_ready: bool| {
            pool.iter().position(|s| match s.state() {
                State::Ready(_) => want_ready,
                State::Starting => !want_ready,
                State::Down | State::Closed => false,
            })
        };
        let (at, ready) = match pick(true) {
            Some(i) => (i, true),
            None => (pick(false)?, false),
        };
        let session = pool.remove(at)?;
        Some(Taken { session, ready })
    }

    /// Start spares until the pool holds its target, at most `room` new
    /// ones. Returns how many were started.
    pub fn fill(&self, room: usize) -> std::io::Result<usize> {
        let mut pool = lock(&self.pool);
        let want = self.target.saturating_sub(pool.len()).min(room);
        for _ in 0..want {
            let mut spec = self.spec.clone();
            spec.label = format!("spare #{}", self.seq.fetch_add(1, Ordering::Relaxed));
            spec.limit_warnings = true;
            debug!("{}: building a spare session", spec.label);
            pool.push_back(Session::spawn(spec, None)?);
        }
        Ok(want)
    }

    /// Close one spare that is down, so that an identity can have its slot
    /// under `--max-sessions`. True if there was one.
    pub fn close_one_down(&self) -> bool {
        let mut pool = lock(&self.pool);
        let Some(at) = pool.iter().position(|s| matches!(s.state(), State::Down)) else {
            return false;
        };
        if let Some(s) = pool.remove(at) {
            s.close();
        }
        true
    }

    /// Close every spare (shutdown).
    pub fn close_all(&self) {
        for s in lock(&self.pool).drain(..) {
            s.close();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::sam::encryption::{Encryption, Mode};
    use std::net::TcpListener;
    use std::time::{Duration, Instant};

    /// A spec whose bridge refuses connections: spares go down and back off.
    fn dead_spec() -> SessionSpec {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let sam = l.local_addr().unwrap();
        drop(l);
        SessionSpec {
            sam,
            destination: "a-persistent-key".into(),
            options: Vec::new(),
            encryption: Arc::new(Encryption::new(Mode::Classic)),
            label: "x".into(),
            limit_warnings: false,
        }
    }

    fn wait_until(f: impl Fn() -> bool) -> bool {
        let end = Instant::now() + Duration::from_secs(5);
        while Instant::now() < end {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn fill_respects_target_and_room() {
        let s = Spares::new(dead_spec(), 3);
        assert_eq!(s.spec.destination, "TRANSIENT", "spares are always transient");
        assert_eq!(s.fill(1).unwrap(), 1, "room for one only");
        assert_eq!(s.fill(10).unwrap(), 2);
        assert_eq!(s.fill(10).unwrap(), 0, "full: nothing more, down or not");
        assert_eq!(s.len(), 3);
        let big = Spares::new(dead_spec(), 1000);
        assert_eq!(big.target, MAX_SPARES);
        s.close_all();
        assert!(s.is_empty());
    }

    #[test]
    fn a_spare_being_built_is_taken() {
        // Accepted by the kernel, never answered: the build stays pending.
        let hung = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut spec = dead_spec();
        spec.sam = hung.local_addr().unwrap();
        let s = Spares::new(spec, 1);
        s.fill(1).unwrap();
        let t = s.take().unwrap();
        assert!(!t.ready);
        assert!(matches!(t.session.state(), State::Starting));
        assert!(s.is_empty() && s.take().is_none());
        t.session.close();
    }

    #[test]
    fn down_spares_are_not_taken_but_can_make_room() {
        let s = Spares::new(dead_spec(), 2);
        s.fill(2).unwrap();
        let pool: Vec<Arc<Session>> = lock(&s.pool).iter().cloned().collect();
        assert!(wait_until(|| pool.iter().all(|p| matches!(p.state(), State::Down))));
        assert!(s.take().is_none(), "a down spare is never handed out");
        assert!(s.close_one_down());
        assert_eq!(s.len(), 1);
        assert!(pool.iter().filter(|p| p.is_closed()).count() == 1);
        s.close_all();
        assert!(pool.iter().all(|p| p.is_closed()));
        assert!(!s.close_one_down());
    }
}
