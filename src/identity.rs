//! Which I2P identity serves a client, and the lifetime of the SAM
//! sessions behind the identities.
//!
//! An identity is one SAM session, hence one I2P destination. `--isolate`
//! picks the key: `none` gives everybody the default identity; `auth`
//! (the default) gives each distinct SOCKS5 username+password pair (or
//! SOCKS4 USERID; or, with access control, each username) an identity of
//! its own, as Tor's IsolateSOCKSAuth does; `client` gives every connection
//! a fresh one. Sessions other than the default one are made on first use,
//! kept while streams use them, closed after `--session-idle-timeout`, and
//! capped by `--max-sessions`. `retire_transient` (SIGHUP) makes new
//! streams get new destinations while open streams keep theirs.
//!
//! Credentials are hashed into the key at once; no secret is kept here or
//! logged.

use crate::error::Error;
use crate::sam::client::{Session, SessionSpec};
use crate::socks::Credentials;
use log::{debug, info};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// How often idle sessions are looked for.
pub const REAP_INTERVAL: Duration = Duration::from_secs(1);

/// The `--isolate` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolate {
    None,
    Auth,
    Client,
}

/// What an identity is keyed on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// The proxy's own identity (persistent with --keyfile).
    Default,
    /// A hash of the credentials that select this identity.
    Named([u8; 32]),
    /// One connection's own identity (--isolate client).
    Client(u64),
}

static CLIENT_SEQ: AtomicU64 = AtomicU64::new(0);

impl Key {
    /// The key for a client that presented `creds`. With access control on,
    /// only the username counts (the password was checked already).
    pub fn for_client(mode: Isolate, creds: &Credentials, access_control: bool) -> Key {
        match mode {
            Isolate::None => Key::Default,
            Isolate::Client => Key::Client(CLIENT_SEQ.fetch_add(1, Ordering::Relaxed)),
            Isolate::Auth => {
                let mut h = Sha256::new();
                match creds {
                    Credentials::None => return Key::Default,
                    Credentials::UserPass { user, pass } => {
                        h.update(b"socks5\0");
                        h.update((user.len() as u64).to_be_bytes());
                        h.update(user);
                        if !access_control {
                            h.update(pass);
                        }
                    }
                    Credentials::UserId(id) => {
                        h.update(b"socks4\0");
                        h.update(id);
                    }
                }
                Key::Named(h.finalize().into())
            }
        }
    }
}

/// The recipe for new sessions.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// Spec of the default identity (its destination may be persistent).
    pub default: SessionSpec,
    /// Whether the default identity has a persistent key (SIGHUP keeps it).
    pub default_persistent: bool,
    pub max_sessions: usize,
    /// Zero: never close idle sessions.
    pub idle_timeout: Duration,
}

struct Slot {
    key: Key,
    session: Arc<Session>,
    persistent: bool,
    use_: Mutex<Use>,
}

struct Use {
    streams: usize,
    last_used: Instant,
    retired: bool,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, Use> {
        self.use_.lock().unwrap_or_else(|p| p.into_inner())
    }
}

type Slots = Mutex<HashMap<Key, Arc<Slot>>>;

fn lock_slots(m: &Slots) -> MutexGuard<'_, HashMap<Key, Arc<Slot>>> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// All live identities.
pub struct Identities {
    recipe: Recipe,
    /// Shared with the leases, so a connection's own identity (--isolate
    /// client) can leave the registry when its stream ends.
    slots: Arc<Slots>,
    seq: AtomicU64,
}

/// A stream's hold on its identity: while any lease lives, the session is
/// not closed for idleness or retirement.
pub struct Lease {
    slot: Arc<Slot>,
    slots: Weak<Slots>,
}

impl Lease {
    pub fn session(&self) -> &Arc<Session> {
        &self.slot.session
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let close = {
            let mut u = self.slot.lock();
            u.streams = u.streams.saturating_sub(1);
            u.last_used = Instant::now();
            u.streams == 0 && (u.retired || matches!(self.slot.key, Key::Client(_)))
        };
        if close {
            debug!("closing a session whose last stream ended");
            // The slot lock is released: taking the registry lock now keeps
            // the registry-then-slot order of `acquire`. A retired slot has
            // left already; a connection's own one leaves here.
            if let (Key::Client(_), Some(slots)) = (&self.slot.key, self.slots.upgrade()) {
                let mut map = lock_slots(&slots);
                if map.get(&self.slot.key).is_some_and(|s| Arc::ptr_eq(s, &self.slot)) {
                    map.remove(&self.slot.key);
                }
            }
            self.slot.session.close();
        }
    }
}

impl Identities {
    /// The registry, with the default identity started at once (so its
    /// address is logged at startup and the first client need not wait).
    pub fn start(recipe: Recipe) -> std::io::Result<Arc<Identities>> {
        let ids = Arc::new(Identities {
            recipe,
            slots: Arc::new(Mutex::new(HashMap::new())),
            seq: AtomicU64::new(1),
        });
        {
            let mut slots = ids.lock();
            let slot = ids.make_slot(Key::Default)?;
            slots.insert(Key::Default, slot);
        }
        Ok(ids)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Arc<Slot>>> {
        lock_slots(&self.slots)
    }

    fn lease(&self, slot: Arc<Slot>) -> Lease {
        Lease { slot, slots: Arc::downgrade(&self.slots) }
    }

    fn make_slot(&self, key: Key) -> std::io::Result<Arc<Slot>> {
        let mut spec = self.recipe.default.clone();
        let persistent = key == Key::Default && self.recipe.default_persistent;
        if key != Key::Default {
            spec.destination = "TRANSIENT".into();
            spec.keyfile = None;
            spec.label = format!("identity #{}", self.seq.fetch_add(1, Ordering::Relaxed));
        }
        let session = Session::spawn(spec)?;
        Ok(Arc::new(Slot {
            key,
            session,
            persistent,
            use_: Mutex::new(Use { streams: 0, last_used: Instant::now(), retired: false }),
        }))
    }

    /// The identity for `key`, made now if needed. At `--max-sessions`, an
    /// idle identity is closed to make room; if none is idle: Overloaded.
    pub fn acquire(&self, key: Key) -> Result<Lease, Error> {
        let mut slots = self.lock();
        if let Some(slot) = slots.get(&key) {
            let slot = Arc::clone(slot);
            slot.lock().streams += 1;
            return Ok(self.lease(slot));
        }
        if slots.len() >= self.recipe.max_sessions {
            let victim = slots
                .values()
                .filter(|s| s.key != Key::Default)
                .filter_map(|s| {
                    let u = s.lock();
                    (u.streams == 0).then_some((u.last_used, s.key.clone()))
                })
                .min_by_key(|(t, _)| *t)
                .map(|(_, k)| k);
            match victim.and_then(|k| slots.remove(&k)) {
                Some(old) => {
                    debug!("--max-sessions reached: closing the least recently used idle identity");
                    old.session.close();
                }
                None => return Err(Error::Overloaded),
            }
        }
        let slot = self.make_slot(key.clone()).map_err(|_| Error::Overloaded)?;
        slot.lock().streams = 1;
        slots.insert(key, Arc::clone(&slot));
        Ok(self.lease(slot))
    }

    /// Close identities idle for longer than the idle timeout (never the default one).
    pub fn reap(&self, now: Instant) -> usize {
        let limit = self.recipe.idle_timeout;
        if limit.is_zero() {
            return 0;
        }
        let mut slots = self.lock();
        let idle: Vec<Key> = slots
            .values()
            .filter(|s| s.key != Key::Default)
            .filter(|s| {
                let u = s.lock();
                u.streams == 0 && now.saturating_duration_since(u.last_used) >= limit
            })
            .map(|s| s.key.clone())
            .collect();
        for k in &idle {
            if let Some(s) = slots.remove(k) {
                s.session.close();
            }
        }
        if !idle.is_empty() {
            debug!("closed {} idle identities", idle.len());
        }
        idle.len()
    }

    /// New streams get new destinations: every transient identity leaves
    /// the registry; each is closed once its last stream ends. A transient
    /// default identity is made again at once.
    pub fn retire_transient(&self) -> std::io::Result<usize> {
        let mut slots = self.lock();
        let keys: Vec<Key> = slots.values().filter(|s| !s.persistent).map(|s| s.key.clone()).collect();
        for k in &keys {
            if let Some(s) = slots.remove(k) {
                let idle = {
                    let mut u = s.lock();
                    u.retired = true;
                    u.streams == 0
                };
                if idle {
                    s.session.close();
                }
            }
        }
        if let std::collections::hash_map::Entry::Vacant(e) = slots.entry(Key::Default) {
            e.insert(self.make_slot(Key::Default)?);
        }
        info!("new identity: {} transient identities retired", keys.len());
        Ok(keys.len())
    }

    /// Identities currently registered (for tests and logs).
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// Close every session (shutdown).
    pub fn close_all(&self) {
        for (_, s) in self.lock().drain() {
            s.session.close();
        }
    }

    /// Run [`Identities::reap`] every [`REAP_INTERVAL`] in its own thread.
    pub fn spawn_reaper(self: &Arc<Self>) -> std::io::Result<()> {
        let me = Arc::downgrade(self);
        std::thread::Builder::new().name("reaper".into()).spawn(move || loop {
            std::thread::sleep(REAP_INTERVAL);
            match me.upgrade() {
                Some(ids) => {
                    ids.reap(Instant::now());
                }
                None => return,
            }
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::net::{SocketAddr, TcpListener};

    /// A port nothing listens on: sessions stay down and retry in the
    /// background, which is all the registry logic needs.
    fn dead_sam() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }

    fn registry(max_sessions: usize, idle: u64, persistent: bool) -> Arc<Identities> {
        let spec = SessionSpec {
            sam: dead_sam(),
            destination: if persistent { "persistent-key".into() } else { "TRANSIENT".into() },
            options: Vec::new(),
            label: "test".into(),
            keyfile: None,
        };
        Identities::start(Recipe {
            default: spec,
            default_persistent: persistent,
            max_sessions,
            idle_timeout: Duration::from_secs(idle),
        })
        .unwrap()
    }

    fn named(user: &str) -> Key {
        Key::for_client(Isolate::Auth, &up(user, "x"), false)
    }

    #[test]
    fn same_key_same_session() {
        let ids = registry(8, 0, false);
        assert_eq!(ids.count(), 1);
        let a1 = ids.acquire(named("a")).unwrap();
        let a2 = ids.acquire(named("a")).unwrap();
        let b = ids.acquire(named("b")).unwrap();
        let d = ids.acquire(Key::Default).unwrap();
        assert!(Arc::ptr_eq(a1.session(), a2.session()));
        assert!(!Arc::ptr_eq(a1.session(), b.session()));
        assert!(!Arc::ptr_eq(a1.session(), d.session()));
        assert_eq!(ids.count(), 3);
        ids.close_all();
        assert!(a1.session().is_closed() && d.session().is_closed());
    }

    #[test]
    fn client_identity_ends_with_its_stream() {
        let ids = registry(8, 0, false);
        let k1 = Key::for_client(Isolate::Client, &Credentials::None, false);
        let k2 = Key::for_client(Isolate::Client, &Credentials::None, false);
        let l1 = ids.acquire(k1).unwrap();
        let l2 = ids.acquire(k2).unwrap();
        assert!(!Arc::ptr_eq(l1.session(), l2.session()));
        assert_eq!(ids.count(), 3);
        let s1 = Arc::clone(l1.session());
        drop(l1);
        assert!(s1.is_closed());
        assert_eq!(ids.count(), 2, "a connection's identity leaves the registry with it");
        assert!(!l2.session().is_closed());
        drop(l2);
        assert_eq!(ids.count(), 1);
    }

    #[test]
    fn reap_only_idle_non_default() {
        let ids = registry(8, 5, false);
        let now = Instant::now();
        let busy = ids.acquire(named("busy")).unwrap();
        let idle = ids.acquire(named("idle")).unwrap();
        let idle_session = Arc::clone(idle.session());
        let default_session = Arc::clone(ids.acquire(Key::Default).unwrap().session());
        drop(idle);
        assert_eq!(ids.reap(now), 0, "not idle long enough");
        assert_eq!(ids.reap(now + Duration::from_secs(60)), 1);
        assert!(idle_session.is_closed());
        assert!(!busy.session().is_closed());
        assert!(!default_session.is_closed(), "the default identity is never reaped");
        assert_eq!(ids.count(), 2);
        // Once the busy one's stream ends it goes too.
        let busy_session = Arc::clone(busy.session());
        drop(busy);
        assert_eq!(ids.reap(Instant::now() + Duration::from_secs(60)), 1);
        assert!(busy_session.is_closed());
        assert_eq!(ids.count(), 1);
    }

    #[test]
    fn zero_idle_timeout_never_reaps() {
        let ids = registry(8, 0, false);
        drop(ids.acquire(named("a")).unwrap());
        assert_eq!(ids.reap(Instant::now() + Duration::from_secs(1_000_000)), 0);
        assert_eq!(ids.count(), 2);
    }

    #[test]
    fn cap_evicts_idle_else_refuses() {
        let ids = registry(3, 0, false);
        let a = ids.acquire(named("a")).unwrap();
        let b = ids.acquire(named("b")).unwrap();
        assert!(matches!(ids.acquire(named("c")), Err(Error::Overloaded)));
        // A key already present is never refused.
        let a2 = ids.acquire(named("a")).unwrap();
        let (a_session, b_session) = (Arc::clone(a.session()), Arc::clone(b.session()));
        drop(b);
        let c = ids.acquire(named("c")).unwrap();
        assert!(b_session.is_closed(), "the idle one was evicted");
        assert!(!a_session.is_closed());
        assert_eq!(ids.count(), 3);
        drop((a, a2));
        // The least recently used idle one goes first.
        std::thread::sleep(Duration::from_millis(5));
        drop(c);
        let c_session = Arc::clone(ids.acquire(named("c")).unwrap().session());
        let _d = ids.acquire(named("d")).unwrap();
        assert!(a_session.is_closed());
        assert!(!c_session.is_closed());
    }

    #[test]
    fn retire_keeps_open_streams() {
        let ids = registry(8, 0, false);
        let old_default = ids.acquire(Key::Default).unwrap();
        let busy = ids.acquire(named("a")).unwrap();
        let idle_session = Arc::clone(ids.acquire(named("b")).unwrap().session());
        assert_eq!(ids.retire_transient().unwrap(), 3);
        assert!(idle_session.is_closed(), "an unused retired identity closes at once");
        assert!(!busy.session().is_closed(), "an open stream keeps its identity");
        assert!(!old_default.session().is_closed());
        assert_eq!(ids.count(), 1, "a fresh default identity");
        let new_default = ids.acquire(Key::Default).unwrap();
        assert!(!Arc::ptr_eq(new_default.session(), old_default.session()));
        let new_a = ids.acquire(named("a")).unwrap();
        assert!(!Arc::ptr_eq(new_a.session(), busy.session()));
        let (busy_session, old_default_session) =
            (Arc::clone(busy.session()), Arc::clone(old_default.session()));
        drop(busy);
        drop(old_default);
        assert!(busy_session.is_closed() && old_default_session.is_closed());
        assert!(!new_a.session().is_closed() && !new_default.session().is_closed());
    }

    #[test]
    fn retire_keeps_a_persistent_default() {
        let ids = registry(8, 0, true);
        let d = Arc::clone(ids.acquire(Key::Default).unwrap().session());
        let a = Arc::clone(ids.acquire(named("a")).unwrap().session());
        assert_eq!(ids.retire_transient().unwrap(), 1);
        assert!(a.is_closed());
        assert!(!d.is_closed());
        assert!(Arc::ptr_eq(ids.acquire(Key::Default).unwrap().session(), &d));
    }

    fn up(u: &str, p: &str) -> Credentials {
        Credentials::UserPass { user: u.as_bytes().to_vec(), pass: p.as_bytes().to_vec() }
    }

    #[test]
    fn keys() {
        let a = Key::for_client(Isolate::Auth, &up("app1", "x"), false);
        assert_eq!(a, Key::for_client(Isolate::Auth, &up("app1", "x"), false));
        assert_ne!(a, Key::for_client(Isolate::Auth, &up("app1", "y"), false));
        assert_ne!(a, Key::for_client(Isolate::Auth, &up("app2", "x"), false));
        // user/pass boundaries matter: "ab"+"c" differs from "a"+"bc"
        assert_ne!(
            Key::for_client(Isolate::Auth, &up("ab", "c"), false),
            Key::for_client(Isolate::Auth, &up("a", "bc"), false)
        );
        // With access control the username alone selects the identity.
        assert_eq!(
            Key::for_client(Isolate::Auth, &up("app1", "x"), true),
            Key::for_client(Isolate::Auth, &up("app1", "y"), true)
        );
        assert_ne!(
            Key::for_client(Isolate::Auth, &Credentials::UserId(b"app1".to_vec()), false),
            Key::for_client(Isolate::Auth, &up("app1", ""), false)
        );
        assert_eq!(Key::for_client(Isolate::Auth, &Credentials::None, false), Key::Default);
        assert_eq!(Key::for_client(Isolate::None, &up("a", "b"), false), Key::Default);
        assert_ne!(
            Key::for_client(Isolate::Client, &Credentials::None, false),
            Key::for_client(Isolate::Client, &Credentials::None, false)
        );
    }
}
