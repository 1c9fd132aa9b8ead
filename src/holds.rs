//! The client FINs that relays hold back (`relay::Options::half_close_wait`),
//! oldest first, so that a client arriving when every place under
//! `--max-clients` is taken can have the oldest hold end at once and take
//! its place (main.rs's accept loop). A hold is a guess that the I2P side
//! still has something to say; a new client is not a guess, so it wins.
//!
//! Releasing a hold does what `--half-close-wait 0` does in the relay: the
//! FIN goes to the I2P side now (`shutdown(Write)` on the relay's SAM stream
//! socket, done here by the releasing thread, so the held relay need not be
//! woken and a hold costs no descriptor of its own). The relay learns of it
//! when the I2P side answers the FIN, or at its next timed wake-up, and then
//! ends as any relay whose client closed first.
//!
//! Only so many holds at once ([`Holds::set_limit`], `--half-close-max`): a
//! relay that begins a hold beyond it passes on the oldest one itself. Each
//! hold keeps a worker asleep, so under a stream of short connections that
//! close first the limit is what keeps the proxy's threads few and warm; and
//! the places newcomers need are then freed by the relays that hold, in
//! parallel, and not by the accept loop, which every client waits on.
//!
//! Not here: when a hold begins and ends (relay.rs), and waiting for the
//! place a released relay frees (pool.rs).

use crate::counters::{bump, COUNTERS};
use std::collections::BTreeMap;
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

/// The holds of the process. Each relay holds at most one FIN, so there are
/// never more entries than relays, which `--max-clients` bounds.
pub struct Holds {
    held: Mutex<Held>,
    /// Holds at most; a new one beyond it releases the oldest.
    limit: AtomicUsize,
}

struct Held {
    /// The number the next hold gets: holds are ordered by when they began.
    next: u64,
    by_age: BTreeMap<u64, Arc<Entry>>,
}

/// One held FIN.
struct Entry {
    /// The socket the FIN would go to. Weak: the relay owns it, and closes
    /// it when it ends whether or not the hold was released.
    server: Weak<TcpStream>,
    /// The FIN went on by [`Holds::release_oldest`].
    released: AtomicBool,
}

/// The holds every relay of the process registers with.
pub static HOLDS: Holds = Holds::new();

impl Holds {
    /// No limit until [`Holds::set_limit`].
    pub const fn new() -> Holds {
        Holds {
            held: Mutex::new(Held { next: 0, by_age: BTreeMap::new() }),
            limit: AtomicUsize::new(usize::MAX),
        }
    }

    /// At most `limit` holds at once from now on.
    pub fn set_limit(&self, limit: usize) {
        self.limit.store(limit, Ordering::Relaxed);
    }

    /// A relay begins to hold the FIN meant for `server`; the hold lasts
    /// until the ticket is dropped or it is released. Beyond the limit the
    /// oldest hold is released first (this one, if the limit is zero).
    pub fn hold(&self, server: &Arc<TcpStream>) -> Ticket<'_> {
        let entry = Arc::new(Entry { server: Arc::downgrade(server), released: AtomicBool::new(false) });
        let (id, over) = {
            let mut h = self.lock();
            let id = h.next;
            h.next = h.next.wrapping_add(1);
            h.by_age.insert(id, Arc::clone(&entry));
            let over =
                if h.by_age.len() > self.limit.load(Ordering::Relaxed) { h.by_age.pop_first() } else { None };
            (id, over)
        };
        bump(&COUNTERS.holds);
        if let Some((_, oldest)) = over {
            release(&oldest);
        }
        Ticket { holds: self, id, entry }
    }

    /// Pass on the FIN of the hold that began first. False if nothing is held.
    pub fn release_oldest(&self) -> bool {
        let Some((_, entry)) = self.lock().by_age.pop_first() else {
            return false;
        };
        release(&entry);
        true
    }

    /// End every hold, for the stop: its SAM stream socket is shut both
    /// ways, which wakes its relay (asleep until the hold's deadline) to
    /// see the stop flag.
    pub fn end_all(&self) {
        let all = std::mem::take(&mut self.lock().by_age);
        for entry in all.into_values() {
            entry.released.store(true, Ordering::SeqCst);
            if let Some(server) = entry.server.upgrade() {
                let _ = server.shutdown(Shutdown::Both);
            }
        }
    }

    /// Holds now.
    pub fn len(&self) -> usize {
        self.lock().by_age.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Held> {
        // Every update under the lock is a single step.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Default for Holds {
    fn default() -> Self {
        Self::new()
    }
}

/// Pass on `entry`'s FIN, taken off the list by the caller.
fn release(entry: &Entry) {
    entry.released.store(true, Ordering::SeqCst);
    if let Some(server) = entry.server.upgrade() {
        // The I2P side may be gone already; its relay finds out itself.
        let _ = server.shutdown(Shutdown::Write);
    }
    bump(&COUNTERS.holds_released_early);
}

/// A relay's hold; dropping it ends the hold.
pub struct Ticket<'a> {
    holds: &'a Holds,
    id: u64,
    entry: Arc<Entry>,
}

impl Ticket<'_> {
    /// The FIN was passed on for a new client: the hold is over.
    pub fn released(&self) -> bool {
        self.entry.released.load(Ordering::SeqCst)
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        self.holds.lock().by_age.remove(&self.id);
        bump(&COUNTERS.holds_ended);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    /// (our side, far side) of a loopback connection.
    fn pair() -> (Arc<TcpStream>, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let ours = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (far, _) = l.accept().unwrap();
        far.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        (Arc::new(ours), far)
    }

    fn sees_eof(mut far: &TcpStream) -> bool {
        let mut b = [0u8; 1];
        matches!(far.read(&mut b), Ok(0))
    }

    #[test]
    fn the_oldest_hold_is_released_first_and_its_fin_passed() {
        let holds = Holds::new();
        let (a, far_a) = pair();
        let (b, far_b) = pair();
        let ta = holds.hold(&a);
        let tb = holds.hold(&b);
        assert_eq!(holds.len(), 2);
        assert!(holds.release_oldest());
        assert!(ta.released() && !tb.released());
        assert!(sees_eof(&far_a), "the oldest hold's FIN did not arrive");
        assert_eq!(holds.len(), 1);
        assert!(holds.release_oldest());
        assert!(tb.released());
        assert!(sees_eof(&far_b));
        assert!(!holds.release_oldest(), "nothing is held");
    }

    #[test]
    fn a_hold_beyond_the_limit_releases_the_oldest() {
        let holds = Holds::new();
        holds.set_limit(2);
        let (a, far_a) = pair();
        let (b, _far_b) = pair();
        let (c, _far_c) = pair();
        let ta = holds.hold(&a);
        let tb = holds.hold(&b);
        assert!(!ta.released() && !tb.released(), "within the limit nothing is released");
        let tc = holds.hold(&c);
        assert!(ta.released() && !tb.released() && !tc.released());
        assert!(sees_eof(&far_a), "the oldest hold's FIN did not arrive");
        assert_eq!(holds.len(), 2);
    }

    #[test]
    fn with_no_room_for_holds_a_hold_ends_at_once() {
        let holds = Holds::new();
        holds.set_limit(0);
        let (a, far_a) = pair();
        let ta = holds.hold(&a);
        assert!(ta.released() && holds.is_empty());
        assert!(sees_eof(&far_a));
    }

    #[test]
    fn an_ended_hold_is_not_released() {
        let holds = Holds::new();
        let (a, far_a) = pair();
        let (b, _far_b) = pair();
        drop(holds.hold(&a));
        let tb = holds.hold(&b);
        assert_eq!(holds.len(), 1);
        assert!(holds.release_oldest());
        assert!(tb.released());
        // `a`'s relay ended its hold itself: its socket was left alone.
        far_a.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 1];
        assert!((&far_a).read(&mut buf).is_err(), "a FIN reached a hold that had ended");
    }

    #[test]
    fn end_all_ends_every_hold_both_ways() {
        let holds = Holds::new();
        let (a, far_a) = pair();
        let (b, far_b) = pair();
        let (ta, tb) = (holds.hold(&a), holds.hold(&b));
        holds.end_all();
        assert!(ta.released() && tb.released() && holds.is_empty());
        assert!(sees_eof(&far_a) && sees_eof(&far_b));
        // Shut for reading too: the relay's next read says EOF at once.
        let mut buf = [0u8; 1];
        assert_eq!((&*a).read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn a_hold_whose_relay_is_gone_releases_nothing_but_its_place() {
        let holds = Holds::new();
        let (a, _far) = pair();
        let t = holds.hold(&a);
        drop(a);
        assert!(holds.release_oldest());
        assert!(t.released());
        drop(t);
        assert!(holds.is_empty());
    }
}
