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
//!
//! Persistent identities keep their key in a file: a listener's default
//! identity with `-l ...,key=FILE` (`-k` for the first one), and, with
//! `--key-dir`, the identity of each SOCKS user name (the password is then
//! not part of its key, and one user name is one identity on every
//! listener). A key file that does not exist yet is written here from the
//! key the bridge made for the identity's first session. SIGHUP never
//! replaces a persistent identity; an idle one may be closed like any
//! other, and is made again from its file on next use. Those whose file
//! exists at start are built at once (within `--max-sessions`), since a
//! spare, having a key of its own, cannot stand in for them.
//!
//! A new identity (and the transient default one after SIGHUP) takes a
//! spare session from `spares` when one is ready or being built, and a
//! replacement starts at once. Spares count against `--max-sessions` and
//! are only built into room that no identity needs: at the cap a new
//! identity finds no spare and is served as without spares (an idle
//! identity evicted, or the client refused).
//!
//! A stream session whose identity closes is not always closed on the
//! router at once: one that had a stream the router never ended stays open
//! for an hour (the rule and the router bug behind it are in `sam::linger`).
//! Such a held session still counts against `--max-sessions`, so an idle
//! identity is evicted for room only when its session can close now (or
//! after the few seconds' grace every session gets); held sessions close in
//! the reaper, and at once when the proxy stops.
//!
//! A datagram session is built in a thread of its own, so that UDP
//! ASSOCIATE can be answered at once; the association watches its
//! [`DatagramCell`].
//!
//! Credentials are hashed into the key at once; no secret is kept here or
//! logged.

use crate::counters::{bump, COUNTERS};
use crate::error::Error;
use crate::keydir;
use crate::keyfile;
use crate::sam::build_warn::{warn_limited, Kind};
use crate::sam::conn::SESSION_CREATE_TIMEOUT;
use crate::sam::datagram::{DatagramSession, DgSpec};
use crate::sam::linger::{Lingering, STREAM_END_GRACE};
use crate::sam::ready::{Readiness, State};
use crate::sam::stream::{OnNewKey, Session, SessionInfo, SessionSpec};
use crate::socks::Credentials;
use crate::spares::{Spares, Taken};
use log::{debug, error, info, warn};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

/// Identities by kind, for the status report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Census {
    /// Listeners' default identities without a key file.
    pub default: usize,
    /// Identities with a key file: listeners' (`,key=`, `-k`) and user
    /// names' (`--key-dir`).
    pub persistent: usize,
    /// Transient identities selected by credentials.
    pub by_credentials: usize,
    pub per_connection: usize,
    /// Sessions built ahead for new identities.
    pub spare: usize,
    /// Stream sessions kept open after their identity closed (`sam::linger`).
    pub held: usize,
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
    /// A listener's own identity (persistent with a key file).
    Default(Listener),
    /// A user name's persistent identity (`--key-dir`): its key file's stem
    /// there (`keydir::stem`), the same on every listener.
    User(String),
    /// A hash of the credentials that select this identity on this listener.
    Named(Listener, [u8; 32]),
    /// One connection's own identity (--isolate client).
    Client(u64),
}

static CLIENT_SEQ: AtomicU64 = AtomicU64::new(0);

/// Why UDP ASSOCIATE is refused under a persistent identity (logged once).
/// Measured: i2pd 2.45 takes the key in a DATAGRAM session beside the
/// STREAM session, but the stream session's CONNECTs then answer
/// CANT_REACH_PEER, and it has no DATAGRAM subsession of a MASTER session
/// ("Unsupported STYLE"); emissary 0.4 answers a second session of one key
/// with DUPLICATE_DEST.
pub const PERSISTENT_UDP: &str = "UDP ASSOCIATE under a persistent identity is refused (07): \
    the SAM bridge cannot hold its key in a datagram session beside its stream session, \
    and another key would send from another address";
static PERSISTENT_UDP_TOLD: AtomicBool = AtomicBool::new(false);

impl Key {
    /// The key for a client of `listener` that presented `creds`. With access
    /// control on, only the username counts (the password was checked
    /// already); with `by_name` (`--key-dir`) the user name alone selects a
    /// persistent identity.
    pub fn for_client(
        listener: Listener,
        mode: Isolate,
        creds: &Credentials,
        access_control: bool,
        by_name: bool,
    ) -> Key {
        match mode {
            Isolate::None => Key::Default(listener),
            Isolate::Client => Key::Client(CLIENT_SEQ.fetch_add(1, Ordering::Relaxed)),
            Isolate::Auth if by_name => match creds {
                Credentials::None => Key::Default(listener),
                Credentials::UserPass { user, .. } | Credentials::UserId(user) => {
                    Key::User(keydir::stem(user))
                }
            },
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

    /// Served only by its own key, never by a spare.
    fn may_take_spare(&self) -> bool {
        !matches!(self, Key::User(_))
    }
}

/// A key file of a persistent identity, and its key when the file exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFile {
    pub path: PathBuf,
    /// The private key in I2P base64 (never logged); None: made by the
    /// first session, then written to `path`.
    pub key: Option<String>,
}

/// The recipe for new sessions.
#[derive(Debug, Clone)]
pub struct Recipe {
    /// Spec of the first listener's default identity's stream session,
    /// TRANSIENT; the other identities' differ in their labels and, for
    /// persistent ones, their destination.
    pub default: SessionSpec,
    /// One per listener, each with a default identity (at least one): its
    /// key file, if it is persistent.
    pub listener_keys: Vec<Option<KeyFile>>,
    /// `--key-dir`: user names' key files.
    pub key_dir: Option<PathBuf>,
    /// Stems of the user names' key files found in `key_dir` at start,
    /// built at once as far as `max_sessions` allows.
    pub preload: Vec<String>,
    /// How to build datagram sessions.
    pub datagram: DgSpec,
    /// Identities and spares at once (a datagram session is not counted:
    /// it belongs to its identity).
    pub max_sessions: usize,
    /// Zero: never close idle sessions.
    pub idle_timeout: Duration,
    /// Spare sessions kept ready for new identities (`--spare-sessions`).
    pub spare_sessions: usize,
    /// How long a closed identity's session stays open after a stream its
    /// router did not end (`--session-linger`, `sam::linger`).
    pub linger: Duration,
}

/// A datagram session being built, ready or dead.
pub type DatagramCell = Arc<Readiness<Arc<DatagramSession>>>;

struct Identity {
    key: Key,
    label: String,
    /// Where a persistent identity keeps its key, and the key if known when
    /// the identity was made.
    keyfile: Option<KeyFile>,
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
    /// Close both sessions; a closed identity makes no new ones. The stream
    /// session is handed to `registry`, which closes it on the router when
    /// its streams allow (`Identities::end_session`).
    fn close(&self, registry: &Identities) {
        if let Some(s) = self.close_but_stream() {
            registry.end_session(s);
        }
    }

    /// Close both sessions now, whatever their streams (the proxy stops).
    fn close_now(&self) {
        if let Some(s) = self.close_but_stream() {
            s.close();
        }
    }

    /// Mark it closed and close its datagram session; its stream session is
    /// returned to be closed.
    fn close_but_stream(&self) -> Option<Arc<Session>> {
        lock(&self.use_).closed = true;
        let stream = lock(&self.stream).take();
        if let Some(cell) = lock(&self.datagram).take() {
            if let Some(s) = cell.close() {
                s.close();
            }
        }
        stream
    }

    /// Whether closing it now frees its place under `--max-sessions` within
    /// the grace every session gets (its stream session is not held).
    fn frees_room(&self, now: Instant, hold: Duration) -> bool {
        match lock(&self.stream).as_ref().and_then(|s| s.close_at(now, hold)) {
            None => true,
            Some(t) => t <= now + STREAM_END_GRACE,
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
    /// Stream sessions of closed identities, kept open on the router until
    /// their streams allow closing (a leaf lock: nothing is taken under it).
    lingering: Mutex<Lingering<Arc<Session>>>,
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
    /// would fare no better), and always for a persistent identity: its key
    /// cannot be in a datagram session beside its stream session (see
    /// [`PERSISTENT_UDP`]), and a datagram session of another key would send
    /// from an address the program did not choose.
    pub fn datagram(&self) -> Result<DatagramCell, Error> {
        let id = &self.identity;
        if lock(&id.use_).closed {
            return Err(Error::SessionDown);
        }
        if id.keyfile.is_some() {
            if !PERSISTENT_UDP_TOLD.swap(true, Ordering::Relaxed) {
                warn!("{}: {PERSISTENT_UDP}", id.label);
            }
            return Err(Error::CommandNotSupported);
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
            id.close(&self.registry);
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
            lingering: Mutex::new(Lingering::new()),
            seq: AtomicU64::new(1),
            datagram_seq: AtomicU64::new(1),
        });
        let mut slots = ids.lock();
        for n in 0..ids.listeners() {
            let default = ids.make_default(n, false)?;
            slots.insert(Key::Default(n), default);
        }
        ids.preload(&mut slots)?;
        // Built beside the default identities' sessions: on i2pd parallel
        // creates finish together.
        ids.spares.fill(ids.room(&slots))?;
        drop(slots);
        Ok(ids)
    }

    fn listeners(&self) -> usize {
        self.recipe.listener_keys.len().max(1)
    }

    /// Start the sessions of the user names whose key files exist, so that
    /// a program that used its name before waits for nothing; as many as
    /// `--max-sessions` leaves room for beside the default identities (the
    /// others are built on first use).
    fn preload(&self, slots: &mut HashMap<Key, Arc<Identity>>) -> std::io::Result<()> {
        let stems = &self.recipe.preload;
        for (n, stem) in stems.iter().enumerate() {
            if self.room(slots) == 0 {
                warn!(
                    "--max-sessions {} leaves no room to build {} more persistent identities at start; \
                     they are built on first use",
                    self.recipe.max_sessions,
                    stems.len() - n
                );
                break;
            }
            let key = Key::User(stem.clone());
            let id = match self.make(key.clone()) {
                Ok(id) => id,
                Err(e) => {
                    error!("{e}; that identity is not built at start");
                    continue;
                }
            };
            *lock(&id.stream) = Some(self.spawn_stream(&id)?);
            slots.insert(key, id);
        }
        if !stems.is_empty() {
            info!("building {} persistent identities found in --key-dir", stems.len().min(slots.len()));
        }
        Ok(())
    }

    /// Sessions that may still be started under `--max-sessions`. A held
    /// session in its last seconds (the grace every session gets) is not
    /// counted: it is about to go, and counting it would refuse clients
    /// only for that moment.
    fn room(&self, slots: &HashMap<Key, Arc<Identity>>) -> usize {
        let held = self.held_beyond(Instant::now() + STREAM_END_GRACE);
        self.recipe.max_sessions.saturating_sub(slots.len() + self.spares.len() + held)
    }

    /// Held sessions that stay past `t`.
    fn held_beyond(&self, t: Instant) -> usize {
        lock(&self.lingering).count_after(t)
    }

    /// Close a closed identity's stream session on the router now, or keep
    /// it open until its streams allow (`sam::linger`).
    fn end_session(&self, s: Arc<Session>) {
        let now = Instant::now();
        match s.close_at(now, self.recipe.linger) {
            None => s.close(),
            Some(until) => {
                s.retire();
                let long = until > now + STREAM_END_GRACE;
                if long {
                    debug!(
                        "keeping a closed identity's SAM session open for {} s: the router did not end \
                         one of its streams",
                        until.saturating_duration_since(now).as_secs()
                    );
                }
                lock(&self.lingering).keep(until, s);
            }
        }
    }

    /// Close the held sessions whose time has come.
    fn close_held(&self, now: Instant) {
        let due = lock(&self.lingering).due(now);
        for s in &due {
            s.close();
        }
        if !due.is_empty() {
            debug!("closed {} held SAM sessions", due.len());
        }
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

    /// A new identity for `key`; a user name's reads its key file (which
    /// may not exist yet).
    fn make(&self, key: Key) -> Result<Arc<Identity>, keyfile::KeyError> {
        let keyfile = match &key {
            Key::Default(n) => self.recipe.listener_keys.get(*n).cloned().flatten(),
            Key::User(stem) => match &self.recipe.key_dir {
                Some(dir) => {
                    let path = keydir::path(dir, stem);
                    let key = keyfile::load(&path)?;
                    Some(KeyFile { path, key })
                }
                None => None,
            },
            Key::Named(..) | Key::Client(_) => None,
        };
        let label = match key {
            // The first listener's label stays plain: scripts match it.
            Key::Default(0) => self.recipe.default.label.clone(),
            Key::Default(n) => format!("{} of listener {}", self.recipe.default.label, n + 1),
            // A user name may say which site a program visits (browsers
            // isolate so): it is named in debug lines only.
            Key::User(ref stem) => {
                let label = format!("persistent identity #{}", self.seq.fetch_add(1, Ordering::Relaxed));
                debug!("{label}: user name {stem}");
                label
            }
            _ => format!("identity #{}", self.seq.fetch_add(1, Ordering::Relaxed)),
        };
        if matches!(key, Key::User(_)) && keyfile.as_ref().is_some_and(|k| k.key.is_none()) {
            info!("{label}: a user name without a key file yet: its first session is built now");
        }
        Ok(Arc::new(Identity {
            key,
            label,
            keyfile,
            stream: Mutex::new(None),
            datagram: Mutex::new(None),
            use_: Mutex::new(Use { leases: 0, last_used: Instant::now(), retired: false, closed: false }),
        }))
    }

    /// A listener's default identity with its stream session started, or
    /// (if `from_spare` and one is there) a spare's.
    fn make_default(&self, listener: Listener, from_spare: bool) -> std::io::Result<Arc<Identity>> {
        let id = self.make(Key::Default(listener)).map_err(|e| std::io::Error::other(e.to_string()))?;
        let from_spare = from_spare && id.keyfile.is_none();
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
        spec.limit_warnings = !id.key.is_default();
        let keep = match &id.keyfile {
            Some(KeyFile { key: Some(k), .. }) => {
                spec.destination = k.clone();
                None
            }
            Some(KeyFile { path, key: None }) => Some(keep_key(path.clone(), id.label.clone())),
            None => None,
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
        if let Some(taken) = key.may_take_spare().then(|| self.spares.take()).flatten() {
            let id = self.make(key.clone()).map_err(key_error)?;
            self.give_spare(&id, taken);
            slots.insert(key, Arc::clone(&id));
            self.top_up(&slots);
            return Ok(self.lease(id));
        }
        if self.room(&slots) == 0 && self.spares.close_one_down() {
            debug!("--max-sessions reached: closed a spare session that is down");
        } else if self.room(&slots) == 0 {
            let now = Instant::now();
            let victim = slots
                .values()
                .filter(|s| !s.key.is_default() && s.frees_room(now, self.recipe.linger))
                .filter_map(|s| {
                    let u = lock(&s.use_);
                    (u.leases == 0).then_some((u.last_used, s.key.clone()))
                })
                .min_by_key(|(t, _)| *t)
                .map(|(_, k)| k);
            match victim.and_then(|k| slots.remove(&k)) {
                Some(old) => {
                    debug!("--max-sessions reached: closing the least recently used idle identity");
                    old.close(self);
                }
                None => {
                    warn!(
                        "too many identities (--max-sessions {}, {} of them sessions held open after \
                         their identity closed): refusing a client",
                        self.recipe.max_sessions,
                        lock(&self.lingering).len()
                    );
                    return Err(Error::Overloaded);
                }
            }
        }
        let id = self.make(key.clone()).map_err(key_error)?;
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
                s.close(self);
            }
        }
        self.close_held(now);
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
        let keys: Vec<Key> = slots.values().filter(|s| s.keyfile.is_none()).map(|s| s.key.clone()).collect();
        for k in &keys {
            if let Some(s) = slots.remove(k) {
                let idle = {
                    let mut u = lock(&s.use_);
                    u.retired = true;
                    u.leases == 0
                };
                if idle {
                    s.close(self);
                }
            }
        }
        // A spare has never been used: as a new default identity it is as
        // unlinked to earlier streams as a session built now, and ready sooner.
        for n in 0..self.listeners() {
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
        for id in self.lock().values() {
            match id.key {
                _ if id.keyfile.is_some() => c.persistent += 1,
                Key::Default(_) => c.default += 1,
                Key::Named(..) | Key::User(_) => c.by_credentials += 1,
                Key::Client(_) => c.per_connection += 1,
            }
        }
        c.spare = self.spares.len();
        c.held = lock(&self.lingering).len();
        c
    }

    /// Where the first listener's default identity's stream session stands
    /// (the status report shows it as the bridge's state).
    pub fn default_state(&self) -> Option<State<Arc<SessionInfo>>> {
        let id = self.lock().get(&Key::Default(0)).map(Arc::clone)?;
        let stream = lock(&id.stream).as_ref().map(Arc::clone)?;
        Some(stream.state())
    }

    /// Close every session (shutdown), the held ones too: once the proxy
    /// is gone nobody could close them later.
    pub fn close_all(&self) {
        let mut slots = self.lock();
        for (_, s) in slots.drain() {
            s.close_now();
        }
        self.spares.close_all();
        for s in lock(&self.lingering).take_all() {
            s.close();
        }
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
                warn_limited(
                    Kind::DatagramCreate,
                    true,
                    format_args!(
                        "{label}: cannot create a SAM datagram session at {}: {e}",
                        self.recipe.datagram.sam
                    ),
                );
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

/// A persistent identity's key file cannot be read: its client is refused
/// (the operator must fix the file; the path says which).
fn key_error(e: keyfile::KeyError) -> Error {
    error!("{e}");
    Error::SessionDown
}

/// Write the key the bridge made for a persistent identity into `path`, so
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
        let mut r = recipe(sam, max_sessions, idle, spare_sessions);
        r.listener_keys = (0..listeners)
            .map(|n| {
                (n == 0 && persistent)
                    .then(|| KeyFile { path: "/nonexistent/key".into(), key: Some("persistent-key".into()) })
            })
            .collect();
        Identities::start(r).unwrap()
    }

    /// One transient listener, no --key-dir.
    fn recipe(sam: SocketAddr, max_sessions: usize, idle: u64, spare_sessions: usize) -> Recipe {
        let encryption = Arc::new(Encryption::new(Mode::Classic));
        let spec = SessionSpec {
            sam,
            destination: "TRANSIENT".into(),
            options: Vec::new(),
            encryption: Arc::clone(&encryption),
            label: "test".into(),
            limit_warnings: false,
        };
        Recipe {
            default: spec,
            listener_keys: vec![None],
            key_dir: None,
            preload: Vec::new(),
            datagram: DgSpec { sam, sam_udp: sam, options: Vec::new(), encryption },
            max_sessions,
            idle_timeout: Duration::from_secs(idle),
            spare_sessions,
            linger: crate::sam::linger::UNENDED_STREAM_HOLD,
        }
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
        let c = ids.acquire(Key::for_client(0, Isolate::Client, &Credentials::None, false, false)).unwrap();
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
        Key::for_client(0, Isolate::Auth, &up(user, "x"), false, false)
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
        let k1 = Key::for_client(0, Isolate::Client, &Credentials::None, false, false);
        let k2 = Key::for_client(0, Isolate::Client, &Credentials::None, false, false);
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
        let k0 = Key::for_client(0, Isolate::Auth, &creds, false, false);
        let k1 = Key::for_client(1, Isolate::Auth, &creds, false, false);
        assert_ne!(k0, k1);
        let (a0, a1) = (ids.acquire(k0).unwrap(), ids.acquire(k1).unwrap());
        assert!(!Arc::ptr_eq(&a0.stream().unwrap(), &a1.stream().unwrap()));
        // No credentials, or no isolation: the listener's own default.
        assert_eq!(Key::for_client(2, Isolate::Auth, &Credentials::None, false, false), Key::Default(2));
        assert_eq!(Key::for_client(1, Isolate::None, &creds, false, false), Key::Default(1));
        drop((a0, a1));
        // Defaults are never reaped; SIGHUP keeps the keyed one, remakes the others.
        assert_eq!(ids.reap(Instant::now() + Duration::from_secs(60)), 2);
        assert_eq!(ids.retire_transient().unwrap(), 2);
        assert_eq!(ids.count(), 3);
        assert!(Arc::ptr_eq(&ids.acquire(Key::Default(0)).unwrap().stream().unwrap(), &d[0]));
        assert!(d[1].is_closed() && d[2].is_closed());
        assert!(!Arc::ptr_eq(&ids.acquire(Key::Default(1)).unwrap().stream().unwrap(), &d[1]));
    }

    /// A registry with `--key-dir` `dir` (key files of `preload` there).
    fn keyed_registry(
        sam: SocketAddr,
        dir: &std::path::Path,
        preload: &[&str],
        spares: usize,
    ) -> Arc<Identities> {
        let mut r = recipe(sam, 8, 5, spares);
        r.key_dir = Some(dir.to_path_buf());
        r.preload = preload.iter().map(|s| s.to_string()).collect();
        Identities::start(r).unwrap()
    }

    /// A private-key blob as the routers make them (see src/keyfile.rs).
    fn key_blob(seed: u8) -> Vec<u8> {
        let mut b: Vec<u8> = (0..384u32).map(|i| (i as u8).wrapping_mul(seed)).collect();
        b.extend_from_slice(&[0x05, 0x00, 0x04, 0x00, 0x07, 0x00, 0x04]);
        b.extend((0..32 + 32).map(|i| i as u8));
        b
    }

    fn by_name(user: &str, pass: &str) -> Key {
        Key::for_client(0, Isolate::Auth, &up(user, pass), false, true)
    }

    #[test]
    fn user_names_are_persistent() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("i2psocks-identity-keydir-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let known = dir.join("known.dat");
        std::fs::write(&known, key_blob(3)).unwrap();
        std::fs::set_permissions(&known, std::fs::Permissions::from_mode(0o600)).unwrap();
        // The password never counts; the name is the same identity on every listener.
        assert_eq!(by_name("irc", "a"), by_name("irc", "b"));
        assert_eq!(by_name("irc", "a"), Key::User("irc".into()));
        assert_eq!(Key::for_client(3, Isolate::Auth, &up("irc", "x"), true, true), Key::User("irc".into()));
        assert_eq!(
            Key::for_client(0, Isolate::Auth, &Credentials::UserId(b"irc".to_vec()), false, true),
            Key::User("irc".into())
        );
        assert_eq!(by_name("../x", "a"), Key::User(keydir::stem(b"../x")));
        assert_eq!(Key::for_client(1, Isolate::Auth, &Credentials::None, false, true), Key::Default(1));

        let (_hung, sam) = hung_sam();
        let ids = keyed_registry(sam, &dir, &["known"], 1);
        assert_eq!(ids.census().persistent, 1, "a key file found at start is built at once");
        assert_eq!((ids.count(), ids.spare_count()), (2, 1));
        let known_session = ids.acquire(Key::User("known".into())).unwrap().stream().unwrap();
        let fresh = ids.acquire(by_name("fresh", "x")).unwrap();
        assert!(!has_stream(&fresh), "a persistent identity never takes a spare");
        assert_eq!(ids.spare_count(), 1);
        assert_eq!(fresh.identity.keyfile, Some(KeyFile { path: dir.join("fresh.dat"), key: None }));
        assert!(matches!(fresh.datagram(), Err(Error::CommandNotSupported)));
        let c = ids.census();
        assert_eq!((c.default, c.persistent, c.by_credentials), (1, 2, 0));
        drop(fresh);
        // SIGHUP keeps both; idleness closes them, and the file brings them back.
        assert_eq!(ids.retire_transient().unwrap(), 1);
        assert!(!known_session.is_closed());
        assert_eq!(ids.reap(Instant::now() + Duration::from_secs(60)), 2);
        assert!(known_session.is_closed());
        let again = ids.acquire(Key::User("known".into())).unwrap();
        let k = again.identity.keyfile.clone().unwrap();
        assert_eq!(k.key.as_deref(), Some(crate::i2p_addr::b64_encode(&key_blob(3)).as_str()));
        drop(again);
        // A key file others can read refuses its client and changes nothing.
        std::fs::set_permissions(&known, std::fs::Permissions::from_mode(0o644)).unwrap();
        ids.reap(Instant::now() + Duration::from_secs(60));
        assert!(matches!(ids.acquire(Key::User("known".into())), Err(Error::SessionDown)));
        assert_eq!(std::fs::read(&known).unwrap(), key_blob(3));
        ids.close_all();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn up(u: &str, p: &str) -> Credentials {
        Credentials::UserPass { user: u.as_bytes().to_vec(), pass: p.as_bytes().to_vec() }
    }

    #[test]
    fn keys() {
        let a = Key::for_client(0, Isolate::Auth, &up("app1", "x"), false, false);
        assert_eq!(a, Key::for_client(0, Isolate::Auth, &up("app1", "x"), false, false));
        assert_ne!(a, Key::for_client(0, Isolate::Auth, &up("app1", "y"), false, false));
        assert_ne!(a, Key::for_client(0, Isolate::Auth, &up("app2", "x"), false, false));
        // user/pass boundaries matter: "ab"+"c" differs from "a"+"bc"
        assert_ne!(
            Key::for_client(0, Isolate::Auth, &up("ab", "c"), false, false),
            Key::for_client(0, Isolate::Auth, &up("a", "bc"), false, false)
        );
        // With access control the username alone selects the identity.
        assert_eq!(
            Key::for_client(0, Isolate::Auth, &up("app1", "x"), true, false),
            Key::for_client(0, Isolate::Auth, &up("app1", "y"), true, false)
        );
        assert_ne!(
            Key::for_client(0, Isolate::Auth, &Credentials::UserId(b"app1".to_vec()), false, false),
            Key::for_client(0, Isolate::Auth, &up("app1", ""), false, false)
        );
        assert_eq!(Key::for_client(0, Isolate::Auth, &Credentials::None, false, false), Key::Default(0));
        assert_eq!(Key::for_client(0, Isolate::None, &up("a", "b"), false, false), Key::Default(0));
        assert_ne!(
            Key::for_client(0, Isolate::Client, &Credentials::None, false, false),
            Key::for_client(0, Isolate::Client, &Credentials::None, false, false)
        );
    }
}
