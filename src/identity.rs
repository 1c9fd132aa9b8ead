//! Which I2P identity serves a client, and the lifetime of the SAM sessions
//! behind the identities: the one registry of them.
//!
//! An identity is an I2P destination of ours: a STREAM session for its
//! CONNECTs, and, once a client of it asks for UDP ASSOCIATE, a DATAGRAM
//! session beside it (SAM 3.1 gives a datagram session an address of its
//! own). Each listener (`-l`) has a default identity of its own, and
//! credentials select identities per listener, as Tor isolates streams by
//! SOCKS port. `--isolate` picks the key: `none` gives everybody their
//! listener's default identity; `auth` (the default) gives each distinct
//! SOCKS5 username+password pair (or SOCKS4 USERID; or, with access
//! control, each username) an identity of its own, as Tor's
//! IsolateSOCKSAuth does; `client` gives every connection a fresh one.
//! Identities other than the default ones are made on first use, kept while streams or associations
//! hold a [`Lease`] on them, closed after `--session-idle-timeout` without
//! one, and capped by `--max-sessions` (an identity counts once, whatever
//! sessions it has). A datagram session unused for the idle timeout closes
//! on its own, the default identity's too. `retire_transient` (SIGHUP)
//! makes new streams get new destinations while open streams keep theirs.
//! The first listener's default identity is the one with the key file
//! (`-k`), written here from the key the bridge made for its first session
//! when the file did not exist yet.
//!
//! A new identity (and the transient default one after SIGHUP) takes a
//! spare session from `spares` when one is ready or being built, and a
//! replacement starts at once. Spares count against `--max-sessions` and
//! are only built into room that no identity needs: at the cap a new
//! identity finds no spare and is served as without spares (an idle
//! identity evicted, or the client refused).
//!
//! A datagram session is built in a thread of its own, so that UDP
//! ASSOCIATE can be answered at once; the association watches its
//! [`DatagramCell`].
//!
//! Credentials are hashed into the key at once; no secret is kept here or
//! logged.

use crate::counters::{bump, COUNTERS};
use crate::error::Error;
use crate::keyfile;
use crate::sam::conn::SESSION_CREATE_TIMEOUT;
use crate::sam::datagram::{DatagramSession, DgSpec};
use crate::sam::ready::{Readiness, State};
use crate::sam::stream::{OnNewKey, Session, SessionInfo, SessionSpec};
use crate::socks::Credentials;
use crate::spares::{Spares, Taken};
use log::{debug, error, info, warn};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// Identities by kind, for the status report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Census {
    pub default: usize,
    pub by_credentials: usize,
    pub per_connection: usize,
    /// Sessions built ahead for new identities.
    pub spare: usize,
}

/// How often idle identities and datagram sessions are looked for.
pub const REAP_INTERVAL: Duration = Duration::from_secs(1);

/// The `--isolate` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolate {
    None,
    Auth,
    Client,
}

/// Which listener a client came in on: its index in `-l` order.
pub type Listener = usize;

/// What an identity is keyed on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// A listener's own identity (the first one's persistent with --keyfile).
    Default(Listener),
    /// A hash of the credentials that select this identity on this listener.
    Named(Listener, [u8; 32]),
    /// One connection's own identity (--isolate client).
    Client(u64),
}

static CLIENT_SEQ: AtomicU64 = AtomicU64::new(0);

impl Key {
    /// The key for a client of `listener` that presented `creds`. With access
    /// control on, only the username counts (the password was checked already).
    pub fn for_client(listener: Listener, mode: Isolate, creds: &Credentials, access_control: bool) -> Key {
        match mode {
            Isolate::None => Key::Default(listener),
            Isolate::Client => Key::Client(CLIENT_SEQ.fetch_add(1, Ordering::Relaxed)),
            Isolate::Auth => {
                let mut h = Sha256::new();
                match creds {
                    Credentials::None => return Key::Default(listener),
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
                Key::Named(listener, h.finalize().into())
            }
        }
    }

    fn is_default(&self) -> bool {
        matches!(self, Key::Default(_))
    }
}

/// The identity `--keyfile` belongs to.
const KEYED: Key = Key::Default(0);

/// The recipe for new sessions.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// Spec of the first listener's default identity's stream session (its
    /// destination may be a persistent key); the other identities' differ
    /// only in being TRANSIENT and in their labels.
    pub default: SessionSpec,
    /// Whether that identity has a persistent key (SIGHUP keeps it).
    pub default_persistent: bool,
    /// How many listeners, each with a default identity (at least one).
    pub listeners: usize,
    /// Where to keep the default identity's key once the bridge has made
    /// it: `--keyfile` when that file does not exist yet.
    pub new_keyfile: Option<PathBuf>,
    /// How to build datagram sessions.
    pub datagram: DgSpec,
    /// Identities and spares at once (a datagram session is not counted:
    /// it belongs to its identity).
    pub max_sessions: usize,
    /// Zero: never close idle sessions.
    pub idle_timeout: Duration,
    /// Spare sessions kept ready for new identities (`--spare-sessions`).
    pub spare_sessions: usize,
}

/// A datagram session being built, ready or dead.
pub type DatagramCell = Arc<Readiness<Arc<DatagramSession>>>;

struct Identity {
    key: Key,
    label: String,
    persistent: bool,
    /// Made on the first CONNECT (at once for the default identity).
    stream: Mutex<Option<Arc<Session>>>,
    /// Made on the first UDP ASSOCIATE; gone again after the idle timeout.
    datagram: Mutex<Option<DatagramCell>>,
    use_: Mutex<Use>,
}

struct Use {
    /// Streams and associations holding a lease.
    leases: usize,
    last_used: Instant,
    retired: bool,
    closed: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Identity {
    /// Close both sessions; a closed identity makes no new ones.
    fn close(&self) {
        lock(&self.use_).closed = true;
        if let Some(s) = lock(&self.stream).take() {
            s.close();
        }
        if let Some(cell) = lock(&self.datagram).take() {
            if let Some(s) = cell.close() {
                s.close();
            }
        }
    }

    /// Drop a dead datagram session, or one unused for `idle` (if not
    /// zero), so the next association builds a new one.
    fn reap_datagram(&self, now: Instant, idle: Duration) -> bool {
        let mut slot = lock(&self.datagram);
        let gone = match slot.as_ref().map(|c| c.get()) {
            Some(State::Ready(s)) => {
                !s.is_alive()
                    || (!idle.is_zero()
                        && s.idle_since().is_some_and(|t| now.saturating_duration_since(t) >= idle))
            }
            Some(State::Down | State::Closed) => true,
            Some(State::Starting) | None => false,
        };
        if gone {
            if let Some(s) = slot.take().and_then(|c| c.close()) {
                s.close();
            }
        }
        gone
    }
}

/// Failed, closed, or its session died: the next association builds anew.
fn is_dead(cell: &DatagramCell) -> bool {
    match cell.get() {
        State::Starting => false,
        State::Ready(s) => !s.is_alive(),
        State::Down | State::Closed => true,
    }
}

/// All live identities.
pub struct Identities {
    recipe: Recipe,
    slots: Mutex<HashMap<Key, Arc<Identity>>>,
    /// Only touched with `slots` locked (lock order: slots, then spares).
    spares: Spares,
    seq: AtomicU64,
    datagram_seq: AtomicU64,
}

/// A stream's or an association's hold on its identity: while any lease
/// lives, the identity is not closed for idleness or retirement.
pub struct Lease {
    identity: Arc<Identity>,
    registry: Arc<Identities>,
}

impl Lease {
    /// The identity's stream session, started now if it has none yet.
    pub fn stream(&self) -> Result<Arc<Session>, Error> {
        if lock(&self.identity.use_).closed {
            return Err(Error::SessionDown);
        }
        let mut slot = lock(&self.identity.stream);
        if let Some(s) = slot.as_ref() {
            return Ok(Arc::clone(s));
        }
        let s = self.registry.spawn_stream(&self.identity).map_err(|_| Error::Overloaded)?;
        *slot = Some(Arc::clone(&s));
        Ok(s)
    }

    /// The identity's datagram session as a cell that a thread of its own
    /// makes Ready (or Down): started now if the identity has none or only
    /// a dead one, else the one it has. The build is not bound to the
    /// deadline of the client that asked for it (a client that gives up
    /// and asks again finds it further along); it ends with the identity.
    /// Refused at once when the identity's stream session is down (its last
    /// build failed: the bridge is gone or refusing, and a datagram session
    /// would fare no better).
    pub fn datagram(&self) -> Result<DatagramCell, Error> {
        let id = &self.identity;
        if lock(&id.use_).closed {
            return Err(Error::SessionDown);
        }
        if lock(&id.stream).as_ref().is_some_and(|s| matches!(s.state(), State::Down)) {
            return Err(Error::SessionDown);
        }
        let cell = {
            let mut slot = lock(&id.datagram);
            match slot.as_ref() {
                Some(c) if !is_dead(c) => return Ok(Arc::clone(c)),
                _ => {
                    if let Some(old) = slot.take().and_then(|c| c.close()) {
                        old.close();
                    }
                    let c: DatagramCell = Arc::new(Readiness::new());
                    *slot = Some(Arc::clone(&c));
                    c
                }
            }
        };
        let (registry, identity, c) = (Arc::clone(&self.registry), Arc::clone(id), Arc::clone(&cell));
        let spawned = std::thread::Builder::new()
            .name("udp-sam-build".into())
            .spawn(move || registry.build_datagram(&identity, &c));
        if spawned.is_err() {
            fail_datagram(id, &cell);
            return Err(Error::Overloaded);
        }
        Ok(cell)
    }
}

/// A datagram build failed: waiters are told, and the next association
/// starts anew.
fn fail_datagram(id: &Identity, cell: &DatagramCell) {
    cell.set(State::Down);
    let mut slot = lock(&id.datagram);
    if slot.as_ref().is_some_and(|c| Arc::ptr_eq(c, cell)) {
        slot.take();
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let id = &self.identity;
        let close = {
            let mut u = lock(&id.use_);
            u.leases = u.leases.saturating_sub(1);
            u.last_used = Instant::now();
            u.leases == 0 && (u.retired || matches!(id.key, Key::Client(_)))
        };
        if close {
            debug!("closing an identity whose last user left");
            // The identity's lock is released: taking the registry lock now
            // keeps the registry-then-identity order of `acquire`. A retired
            // identity has left already; a connection's own one leaves here.
            if matches!(id.key, Key::Client(_)) {
                let mut map = self.registry.lock();
                if map.get(&id.key).is_some_and(|s| Arc::ptr_eq(s, id)) {
                    map.remove(&id.key);
                }
            }
            id.close();
        }
    }
}

impl Identities {
    /// The registry, with every listener's default identity's stream
    /// session started at once, in parallel (so their addresses are logged
    /// at startup and the first clients need not wait).
    pub fn start(recipe: Recipe) -> std::io::Result<Arc<Identities>> {
        let spares = Spares::new(recipe.default.clone(), recipe.spare_sessions);
        let ids = Arc::new(Identities {
            recipe,
            slots: Mutex::new(HashMap::new()),
            spares,
            seq: AtomicU64::new(1),
            datagram_seq: AtomicU64::new(1),
        });
        let mut slots = ids.lock();
        for n in 0..ids.recipe.listeners.max(1) {
            let default = ids.make_default(n, false)?;
            slots.insert(Key::Default(n), default);
        }
        // Built beside the default identities' sessions: on i2pd parallel
        // creates finish together.
        ids.spares.fill(ids.room(&slots))?;
        drop(slots);
        Ok(ids)
    }

    /// Sessions that may still be started under `--max-sessions`.
    fn room(&self, slots: &HashMap<Key, Arc<Identity>>) -> usize {
        self.recipe.max_sessions.saturating_sub(slots.len() + self.spares.len())
    }

    /// Replace taken spares, as far as there is room.
    fn top_up(&self, slots: &HashMap<Key, Arc<Identity>>) {
        if let Err(e) = self.spares.fill(self.room(slots)) {
            warn!("cannot start a spare session: {e}");
        }
    }

    /// Make a taken spare `id`'s stream session.
    fn give_spare(&self, id: &Identity, taken: Taken) {
        taken.session.relabel(&id.label);
        debug!(
            "{}: took a spare session ({})",
            id.label,
            if taken.ready { "ready" } else { "still being built" }
        );
        *lock(&id.stream) = Some(taken.session);
    }

    /// Spares held now (for tests and logs).
    pub fn spare_count(&self) -> usize {
        self.spares.len()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Arc<Identity>>> {
        lock(&self.slots)
    }

    fn make(&self, key: Key) -> Arc<Identity> {
        let persistent = key == KEYED && self.recipe.default_persistent;
        let label = match key {
            // The first listener's label stays plain: scripts match it.
            Key::Default(0) => self.recipe.default.label.clone(),
            Key::Default(n) => format!("{} of listener {}", self.recipe.default.label, n + 1),
            _ => format!("identity #{}", self.seq.fetch_add(1, Ordering::Relaxed)),
        };
        Arc::new(Identity {
            key,
            label,
            persistent,
            stream: Mutex::new(None),
            datagram: Mutex::new(None),
            use_: Mutex::new(Use { leases: 0, last_used: Instant::now(), retired: false, closed: false }),
        })
    }

    /// A listener's default identity with its stream session started, or
    /// (if `from_spare` and one is there) a spare's.
    fn make_default(&self, listener: Listener, from_spare: bool) -> std::io::Result<Arc<Identity>> {
        let id = self.make(Key::Default(listener));
        match from_spare.then(|| self.spares.take()).flatten() {
            Some(taken) => self.give_spare(&id, taken),
            None => *lock(&id.stream) = Some(self.spawn_stream(&id)?),
        }
        Ok(id)
    }

    /// Start the stream session of `id`.
    fn spawn_stream(&self, id: &Identity) -> std::io::Result<Arc<Session>> {
        let mut spec = self.recipe.default.clone();
        spec.label = id.label.clone();
        if id.key != KEYED {
            spec.destination = "TRANSIENT".into();
        }
        let keep = match &self.recipe.new_keyfile {
            Some(path) if id.key == KEYED => Some(keep_key(path.clone(), id.label.clone())),
            _ => None,
        };
        Session::spawn(spec, keep)
    }

    fn lease(self: &Arc<Self>, identity: Arc<Identity>) -> Lease {
        lock(&identity.use_).leases += 1;
        Lease { identity, registry: Arc::clone(self) }
    }

    /// The identity for `key`, made now if needed, with a spare session
    /// when there is one (its slot becomes the identity's). Without a
    /// spare, at `--max-sessions`: a spare that is down is closed, else an
    /// idle identity, to make room; if none is idle: Overloaded.
    pub fn acquire(self: &Arc<Self>, key: Key) -> Result<Lease, Error> {
        let mut slots = self.lock();
        if let Some(id) = slots.get(&key) {
            let id = Arc::clone(id);
            return Ok(self.lease(id));
        }
        if let Some(taken) = self.spares.take() {
            let id = self.make(key.clone());
            self.give_spare(&id, taken);
            slots.insert(key, Arc::clone(&id));
            self.top_up(&slots);
            return Ok(self.lease(id));
        }
        if self.room(&slots) == 0 && self.spares.close_one_down() {
            debug!("--max-sessions reached: closed a spare session that is down");
        } else if self.room(&slots) == 0 {
            let victim = slots
                .values()
                .filter(|s| !s.key.is_default())
                .filter_map(|s| {
                    let u = lock(&s.use_);
                    (u.leases == 0).then_some((u.last_used, s.key.clone()))
                })
                .min_by_key(|(t, _)| *t)
                .map(|(_, k)| k);
            match victim.and_then(|k| slots.remove(&k)) {
                Some(old) => {
                    debug!("--max-sessions reached: closing the least recently used idle identity");
                    old.close();
                }
                None => {
                    warn!(
                        "too many identities (--max-sessions {}): refusing a client",
                        self.recipe.max_sessions
                    );
                    return Err(Error::Overloaded);
                }
            }
        }
        let id = self.make(key.clone());
        slots.insert(key, Arc::clone(&id));
        Ok(self.lease(id))
    }

    /// Close identities idle for longer than the idle timeout (never a
    /// default one), and datagram sessions that died or went unused that
    /// long. Returns how many identities were closed.
    pub fn reap(&self, now: Instant) -> usize {
        let limit = self.recipe.idle_timeout;
        let mut slots = self.lock();
        let idle: Vec<Key> = if limit.is_zero() {
            Vec::new()
        } else {
            slots
                .values()
                .filter(|s| !s.key.is_default())
                .filter(|s| {
                    let u = lock(&s.use_);
                    u.leases == 0 && now.saturating_duration_since(u.last_used) >= limit
                })
                .map(|s| s.key.clone())
                .collect()
        };
        for k in &idle {
            if let Some(s) = slots.remove(k) {
                s.close();
            }
        }
        if !idle.is_empty() {
            debug!("closed {} idle identities", idle.len());
        }
        let datagrams = slots.values().filter(|s| s.reap_datagram(now, limit)).count();
        if datagrams > 0 {
            debug!("closed {datagrams} idle or dead datagram sessions");
        }
        // Room freed by closed identities (or spares taken) is refilled.
        self.top_up(&slots);
        idle.len()
    }

    /// New streams get new destinations: every transient identity leaves
    /// the registry; each is closed once its last user leaves. Transient
    /// default identities are made again at once.
    pub fn retire_transient(&self) -> std::io::Result<usize> {
        let mut slots = self.lock();
        let keys: Vec<Key> = slots.values().filter(|s| !s.persistent).map(|s| s.key.clone()).collect();
        for k in &keys {
            if let Some(s) = slots.remove(k) {
                let idle = {
                    let mut u = lock(&s.use_);
                    u.retired = true;
                    u.leases == 0
                };
                if idle {
                    s.close();
                }
            }
        }
        // A spare has never been used: as a new default identity it is as
        // unlinked to earlier streams as a session built now, and ready sooner.
        for n in 0..self.recipe.listeners.max(1) {
            if let std::collections::hash_map::Entry::Vacant(e) = slots.entry(Key::Default(n)) {
                e.insert(self.make_default(n, true)?);
            }
        }
        self.top_up(&slots);
        info!("new identity: {} transient identities retired", keys.len());
        Ok(keys.len())
    }

    /// Identities currently registered (for tests and logs).
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// How many identities of each kind there are now (the status report).
    pub fn census(&self) -> Census {
        let mut c = Census::default();
        for key in self.lock().keys() {
            match key {
                Key::Default(_) => c.default += 1,
                Key::Named(..) => c.by_credentials += 1,
                Key::Client(_) => c.per_connection += 1,
            }
        }
        c.spare = self.spares.len();
        c
    }

    /// Where the first listener's default identity's stream session stands
    /// (the status report shows it as the bridge's state).
    pub fn default_state(&self) -> Option<State<Arc<SessionInfo>>> {
        let id = self.lock().get(&Key::Default(0)).map(Arc::clone)?;
        let stream = lock(&id.stream).as_ref().map(Arc::clone)?;
        Some(stream.state())
    }

    /// Close every session (shutdown).
    pub fn close_all(&self) {
        let mut slots = self.lock();
        for (_, s) in slots.drain() {
            s.close();
        }
        self.spares.close_all();
    }

    /// Build `id`'s datagram session into `cell` (in its own thread).
    fn build_datagram(&self, id: &Identity, cell: &DatagramCell) {
        let n = self.datagram_seq.fetch_add(1, Ordering::Relaxed);
        let label = format!("datagram session #{n}");
        let deadline = Instant::now() + SESSION_CREATE_TIMEOUT;
        match DatagramSession::open(&self.recipe.datagram, &label, deadline) {
            Ok(s) => {
                bump(&COUNTERS.session_builds);
                let s = Arc::new(s);
                if !cell.set(State::Ready(Arc::clone(&s))) {
                    // The identity was closed meanwhile.
                    s.close();
                }
            }
            Err(e) => {
                bump(&COUNTERS.session_failures);
                warn!("{label}: cannot create a SAM datagram session at {}: {e}", self.recipe.datagram.sam);
                fail_datagram(id, cell);
            }
        }
    }

    /// Run [`Identities::reap`] every [`REAP_INTERVAL`] in its own thread.
    pub fn spawn_reaper(self: &Arc<Self>) -> std::io::Result<()> {
        let me: Weak<Identities> = Arc::downgrade(self);
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

/// Write the key the bridge made for the default identity into `path`, so
/// the next start reuses its address.
fn keep_key(path: PathBuf, label: String) -> OnNewKey {
    Box::new(move |info| match keyfile::create(&path, &info.private_key) {
        Ok(()) => {
            info!("{label}: created key file {}", path.display());
            true
        }
        Err(e) => {
            error!("{label}: {e}; this identity will not survive a restart");
            false
        }
    })
}
#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]
    use super::*;
    use crate::sam::encryption::{Encryption, Mode};
    use std::net::{SocketAddr, TcpListener};

    /// A port nothing listens on: sessions stay down and retry in the
    /// background, which is all the registry logic needs.
    fn dead_sam() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }

    fn registry(max_sessions: usize, idle: u64, persistent: bool) -> Arc<Identities> {
        registry_on(dead_sam(), 1, max_sessions, idle, persistent, 0)
    }

    fn registry_of(listeners: usize, max_sessions: usize, idle: u64, persistent: bool) -> Arc<Identities> {
        registry_on(dead_sam(), listeners, max_sessions, idle, persistent, 0)
    }

    fn registry_on(
        sam: SocketAddr,
        listeners: usize,
        max_sessions: usize,
        idle: u64,
        persistent: bool,
        spare_sessions: usize,
    ) -> Arc<Identities> {
        let encryption = Arc::new(Encryption::new(Mode::Classic));
        let spec = SessionSpec {
            sam,
            destination: if persistent { "persistent-key".into() } else { "TRANSIENT".into() },
            options: Vec::new(),
            encryption: Arc::clone(&encryption),
            label: "test".into(),
        };
        Identities::start(Recipe {
            default: spec,
            default_persistent: persistent,
            listeners,
            new_keyfile: None,
            datagram: DgSpec { sam, sam_udp: sam, options: Vec::new(), encryption },
            max_sessions,
            idle_timeout: Duration::from_secs(idle),
            spare_sessions,
        })
        .unwrap()
    }

    /// A bridge that takes connections and never answers HELLO: sessions
    /// stay "being built" (for the 10 s HELLO deadline), as spares do
    /// while the router builds their tunnels.
    fn hung_sam() -> (TcpListener, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = l.local_addr().unwrap();
        (l, a)
    }

    fn has_stream(l: &Lease) -> bool {
        lock(&l.identity.stream).is_some()
    }

    #[test]
    fn new_identities_take_spares_and_replace_them() {
        let (_hung, sam) = hung_sam();
        let ids = registry_on(sam, 1, 8, 0, false, 2);
        assert_eq!((ids.count(), ids.spare_count()), (1, 2));
        let a = ids.acquire(named("a")).unwrap();
        assert!(has_stream(&a), "a new identity gets a spare as its session at once");
        assert_eq!(ids.spare_count(), 2, "a replacement is started at once");
        let c = ids.acquire(Key::for_client(0, Isolate::Client, &Credentials::None, false)).unwrap();
        assert!(has_stream(&c));
        // The same key again: no spare taken.
        let a2 = ids.acquire(named("a")).unwrap();
        assert!(Arc::ptr_eq(&a.stream().unwrap(), &a2.stream().unwrap()));
        assert_eq!((ids.count(), ids.spare_count()), (3, 2));
        ids.close_all();
        assert_eq!((ids.count(), ids.spare_count()), (0, 0));
        assert!(matches!(a.stream(), Err(Error::SessionDown)));
    }

    #[test]
    fn spares_never_past_the_cap() {
        let (_hung, sam) = hung_sam();
        let ids = registry_on(sam, 1, 3, 0, false, 4);
        assert_eq!((ids.count(), ids.spare_count()), (1, 2), "the default identity + 2 spares = 3");
        let a = ids.acquire(named("a")).unwrap();
        let b = ids.acquire(named("b")).unwrap();
        assert!(has_stream(&a) && has_stream(&b));
        assert_eq!((ids.count(), ids.spare_count()), (3, 0), "at the cap: no replacement");
        // As without spares: refused while both are busy, then the idle one evicted.
        assert!(matches!(ids.acquire(named("c")), Err(Error::Overloaded)));
        let b_session = b.stream().unwrap();
        drop(b);
        let c = ids.acquire(named("c")).unwrap();
        assert!(b_session.is_closed());
        assert!(!has_stream(&c), "no spare: its session is made on first use, as before");
        assert_eq!(ids.reap(Instant::now()), 0);
        assert_eq!((ids.count(), ids.spare_count()), (3, 0));
        // An identity leaving frees a slot: the reaper refills it.
        let c_session = c.stream().unwrap();
        drop(c);
        drop(a);
        assert_eq!(ids.reap(Instant::now() + Duration::from_secs(3600)), 0, "idle timeout 0: none reaped");
        assert!(ids.retire_transient().is_ok());
        assert!(c_session.is_closed());
        assert_eq!(ids.count(), 1);
        assert_eq!(ids.spare_count(), 2, "room again: refilled up to the cap");
        ids.close_all();
    }

    #[test]
    fn a_down_spare_gives_its_slot_to_an_identity() {
        let ids = registry_on(dead_sam(), 1, 2, 0, false, 1);
        assert_eq!(ids.spare_count(), 1);
        let deadline = Instant::now() + Duration::from_secs(5);
        while ids.spares.counts().down < 1 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let a = ids.acquire(named("a")).unwrap();
        assert!(!has_stream(&a), "a down spare is not handed out");
        assert_eq!((ids.count(), ids.spare_count()), (2, 0), "it was closed to make room");
        ids.close_all();
    }

    #[test]
    fn sighup_default_takes_a_spare() {
        let (_hung, sam) = hung_sam();
        let ids = registry_on(sam, 1, 8, 0, false, 1);
        let old = ids.acquire(Key::Default(0)).unwrap().stream().unwrap();
        ids.retire_transient().unwrap();
        let new = ids.acquire(Key::Default(0)).unwrap();
        assert!(!Arc::ptr_eq(&new.stream().unwrap(), &old));
        assert!(old.is_closed());
        assert_eq!(ids.spare_count(), 1, "the spare taken is replaced");
        ids.close_all();
        // A persistent default identity is kept; the spare stays a spare.
        let ids = registry_on(sam, 1, 8, 0, true, 1);
        let kept = ids.acquire(Key::Default(0)).unwrap().stream().unwrap();
        ids.retire_transient().unwrap();
        assert!(Arc::ptr_eq(&ids.acquire(Key::Default(0)).unwrap().stream().unwrap(), &kept));
        assert_eq!(ids.spare_count(), 1);
        ids.close_all();
    }

    fn named(user: &str) -> Key {
        Key::for_client(0, Isolate::Auth, &up(user, "x"), false)
    }

    #[test]
    fn same_key_same_session() {
        let ids = registry(8, 0, false);
        assert_eq!(ids.count(), 1);
        let a1 = ids.acquire(named("a")).unwrap();
        let a2 = ids.acquire(named("a")).unwrap();
        let b = ids.acquire(named("b")).unwrap();
        let d = ids.acquire(Key::Default(0)).unwrap();
        assert!(Arc::ptr_eq(&a1.stream().unwrap(), &a2.stream().unwrap()));
        assert!(!Arc::ptr_eq(&a1.stream().unwrap(), &b.stream().unwrap()));
        assert!(!Arc::ptr_eq(&a1.stream().unwrap(), &d.stream().unwrap()));
        assert_eq!(ids.count(), 3);
        let (a1_session, d_session) = (a1.stream().unwrap(), d.stream().unwrap());
        ids.close_all();
        assert!(a1_session.is_closed() && d_session.is_closed());
        assert!(matches!(a1.stream(), Err(Error::SessionDown)), "a closed identity makes no new session");
    }

    #[test]
    fn client_identity_ends_with_its_stream() {
        let ids = registry(8, 0, false);
        let k1 = Key::for_client(0, Isolate::Client, &Credentials::None, false);
        let k2 = Key::for_client(0, Isolate::Client, &Credentials::None, false);
        let l1 = ids.acquire(k1).unwrap();
        let l2 = ids.acquire(k2).unwrap();
        assert!(!Arc::ptr_eq(&l1.stream().unwrap(), &l2.stream().unwrap()));
        assert_eq!(ids.count(), 3);
        let s1 = l1.stream().unwrap();
        drop(l1);
        assert!(s1.is_closed());
        assert_eq!(ids.count(), 2, "a connection's identity leaves the registry with it");
        assert!(!l2.stream().unwrap().is_closed());
        drop(l2);
        assert_eq!(ids.count(), 1);
    }

    #[test]
    fn reap_only_idle_non_default() {
        let ids = registry(8, 5, false);
        let now = Instant::now();
        let busy = ids.acquire(named("busy")).unwrap();
        let idle = ids.acquire(named("idle")).unwrap();
        let idle_session = idle.stream().unwrap();
        let default_session = ids.acquire(Key::Default(0)).unwrap().stream().unwrap();
        drop(idle);
        assert_eq!(ids.reap(now), 0, "not idle long enough");
        assert_eq!(ids.reap(now + Duration::from_secs(60)), 1);
        assert!(idle_session.is_closed());
        assert!(!busy.stream().unwrap().is_closed());
        assert!(!default_session.is_closed(), "the default identity is never reaped");
        assert_eq!(ids.count(), 2);
        // Once the busy one's stream ends it goes too.
        let busy_session = busy.stream().unwrap();
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
        let (a_session, b_session) = (a.stream().unwrap(), b.stream().unwrap());
        drop(b);
        let c = ids.acquire(named("c")).unwrap();
        assert!(b_session.is_closed(), "the idle one was evicted");
        assert!(!a_session.is_closed());
        assert_eq!(ids.count(), 3);
        drop((a, a2));
        // The least recently used idle one goes first.
        std::thread::sleep(Duration::from_millis(5));
        drop(c);
        let c_session = ids.acquire(named("c")).unwrap().stream().unwrap();
        let _d = ids.acquire(named("d")).unwrap();
        assert!(a_session.is_closed());
        assert!(!c_session.is_closed());
    }

    #[test]
    fn retire_keeps_open_streams() {
        let ids = registry(8, 0, false);
        let old_default = ids.acquire(Key::Default(0)).unwrap();
        let busy = ids.acquire(named("a")).unwrap();
        let idle_session = ids.acquire(named("b")).unwrap().stream().unwrap();
        assert_eq!(ids.retire_transient().unwrap(), 3);
        assert!(idle_session.is_closed(), "an unused retired identity closes at once");
        assert!(!busy.stream().unwrap().is_closed(), "an open stream keeps its identity");
        assert!(!old_default.stream().unwrap().is_closed());
        assert_eq!(ids.count(), 1, "a fresh default identity");
        let new_default = ids.acquire(Key::Default(0)).unwrap();
        assert!(!Arc::ptr_eq(&new_default.stream().unwrap(), &old_default.stream().unwrap()));
        let new_a = ids.acquire(named("a")).unwrap();
        assert!(!Arc::ptr_eq(&new_a.stream().unwrap(), &busy.stream().unwrap()));
        let (busy_session, old_default_session) = (busy.stream().unwrap(), old_default.stream().unwrap());
        drop(busy);
        drop(old_default);
        assert!(busy_session.is_closed() && old_default_session.is_closed());
        assert!(!new_a.stream().unwrap().is_closed() && !new_default.stream().unwrap().is_closed());
    }

    #[test]
    fn retire_keeps_a_persistent_default() {
        let ids = registry(8, 0, true);
        let d = ids.acquire(Key::Default(0)).unwrap().stream().unwrap();
        let a = ids.acquire(named("a")).unwrap().stream().unwrap();
        assert_eq!(ids.retire_transient().unwrap(), 1);
        assert!(a.is_closed());
        assert!(!d.is_closed());
        assert!(Arc::ptr_eq(&ids.acquire(Key::Default(0)).unwrap().stream().unwrap(), &d));
    }

    #[test]
    fn listeners_keep_identities_apart() {
        let ids = registry_of(3, 8, 5, true);
        assert_eq!(ids.count(), 3, "one default identity per listener");
        let labels: Vec<String> =
            (0..3).map(|n| ids.acquire(Key::Default(n)).unwrap().identity.label.clone()).collect();
        assert_eq!(labels, ["test", "test of listener 2", "test of listener 3"]);
        let d: Vec<Arc<Session>> =
            (0..3).map(|n| ids.acquire(Key::Default(n)).unwrap().stream().unwrap()).collect();
        assert!(!Arc::ptr_eq(&d[0], &d[1]) && !Arc::ptr_eq(&d[1], &d[2]));
        // The same credentials on two listeners: two identities.
        let creds = up("app", "x");
        let k0 = Key::for_client(0, Isolate::Auth, &creds, false);
        let k1 = Key::for_client(1, Isolate::Auth, &creds, false);
        assert_ne!(k0, k1);
        let (a0, a1) = (ids.acquire(k0).unwrap(), ids.acquire(k1).unwrap());
        assert!(!Arc::ptr_eq(&a0.stream().unwrap(), &a1.stream().unwrap()));
        // No credentials, or no isolation: the listener's own default.
        assert_eq!(Key::for_client(2, Isolate::Auth, &Credentials::None, false), Key::Default(2));
        assert_eq!(Key::for_client(1, Isolate::None, &creds, false), Key::Default(1));
        drop((a0, a1));
        // Defaults are never reaped; SIGHUP keeps the keyed one, remakes the others.
        assert_eq!(ids.reap(Instant::now() + Duration::from_secs(60)), 2);
        assert_eq!(ids.retire_transient().unwrap(), 2);
        assert_eq!(ids.count(), 3);
        assert!(Arc::ptr_eq(&ids.acquire(Key::Default(0)).unwrap().stream().unwrap(), &d[0]));
        assert!(d[1].is_closed() && d[2].is_closed());
        assert!(!Arc::ptr_eq(&ids.acquire(Key::Default(1)).unwrap().stream().unwrap(), &d[1]));
    }

    fn up(u: &str, p: &str) -> Credentials {
        Credentials::UserPass { user: u.as_bytes().to_vec(), pass: p.as_bytes().to_vec() }
    }

    #[test]
    fn keys() {
        let a = Key::for_client(0, Isolate::Auth, &up("app1", "x"), false);
        assert_eq!(a, Key::for_client(0, Isolate::Auth, &up("app1", "x"), false));
        assert_ne!(a, Key::for_client(0, Isolate::Auth, &up("app1", "y"), false));
        assert_ne!(a, Key::for_client(0, Isolate::Auth, &up("app2", "x"), false));
        // user/pass boundaries matter: "ab"+"c" differs from "a"+"bc"
        assert_ne!(
            Key::for_client(0, Isolate::Auth, &up("ab", "c"), false),
            Key::for_client(0, Isolate::Auth, &up("a", "bc"), false)
        );
        // With access control the username alone selects the identity.
        assert_eq!(
            Key::for_client(0, Isolate::Auth, &up("app1", "x"), true),
            Key::for_client(0, Isolate::Auth, &up("app1", "y"), true)
        );
        assert_ne!(
            Key::for_client(0, Isolate::Auth, &Credentials::UserId(b"app1".to_vec()), false),
            Key::for_client(0, Isolate::Auth, &up("app1", ""), false)
        );
        assert_eq!(Key::for_client(0, Isolate::Auth, &Credentials::None, false), Key::Default(0));
        assert_eq!(Key::for_client(0, Isolate::None, &up("a", "b"), false), Key::Default(0));
        assert_ne!(
            Key::for_client(0, Isolate::Client, &Credentials::None, false),
            Key::for_client(0, Isolate::Client, &Credentials::None, false)
        );
    }
}
