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
use std::sync::{Arc, Mutex, MutexGuard};
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

/// All live identities.
pub struct Identities {
    recipe: Recipe,
    slots: Mutex<HashMap<Key, Arc<Slot>>>,
    seq: AtomicU64,
}

/// A stream's hold on its identity: while any lease lives, the session is
/// not closed for idleness or retirement.
pub struct Lease {
    slot: Arc<Slot>,
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
            self.slot.session.close();
        }
    }
}

impl Identities {
    /// The registry, with the default identity started at once (so its
    /// address is logged at startup and the first client need not wait).
    pub fn start(recipe: Recipe) -> std::io::Result<Arc<Identities>> {
        let ids = Arc::new(Identities { recipe, slots: Mutex::new(HashMap::new()), seq: AtomicU64::new(1) });
        {
            let mut slots = ids.lock();
            let slot = ids.make_slot(Key::Default)?;
            slots.insert(Key::Default, slot);
        }
        Ok(ids)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
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
            return Ok(Lease { slot });
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
        Ok(Lease { slot })
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
    use super::*;

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
