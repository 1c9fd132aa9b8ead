//! SAM v3 STREAM sessions: one supervised control session per identity, and
//! one fresh socket per client stream (STREAM CONNECT).
//!
//! A [`Session`] owns its control socket in its own thread. That thread
//! creates the session, answers `PING` with `PONG`, and when the socket
//! dies (EOF, error, router restart) marks the session down and rebuilds it
//! with exponential backoff. Clients ask [`Session::wait_ready`]: a session
//! being built makes them wait (within their own deadline); a session known
//! to be down refuses them at once, so nobody hangs on a dead router.
//!
//! The supervisor is also the one owner of the live control socket
//! (`control`): a client that needs a NAMING LOOKUP on its session queues
//! it there and waits for the answer. STREAM CONNECT asks for one when the
//! bridge gives no clear reason for a refusal: it closed the stream's
//! socket without a STREAM STATUS (emissary 0.4 does for a name it cannot
//! resolve) or answered `I2P_ERROR` (emissary, for a name not in its
//! address book). Only the lookup tells an unknown destination from a
//! failing bridge.
//!
//! A session the bridge keeps answering but through which no stream opens
//! any more, not even to targets it reached before (`reach` has the rule),
//! is ended and rebuilt like a lost one.
//!
//! A session also keeps how its streams ended (`linger`): closing it right
//! after some ends would crash i2pd, so its identity asks
//! [`Session::close_at`] before it closes it.
//!
//! Not here: which identity a client gets and what becomes of a new key
//! (`identity`), and the command/reply syntax (`proto`).

use crate::counters::{bump, live, COUNTERS};
use crate::sam::build_warn::{warn_limited, Kind};
use crate::sam::conn::{self, Conn, CreateError, CreateSpec, SESSION_CREATE_TIMEOUT};
use crate::sam::control::{Control, Lookup};
use crate::sam::encryption::Encryption;
use crate::sam::linger::Ends;
use crate::sam::proto::{self, SamResult, Style};
use crate::sam::reach::{Reach, STUCK_SPAN};
use crate::sam::ready::{NotReady, Readiness, State};
use crossbeam_channel::{bounded, select, Receiver, RecvTimeoutError, Sender, TrySendError};
use log::{debug, info, trace};
use std::io::{self, ErrorKind};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// First and last wait between rebuild attempts.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A key's session refused as already held (`DUPLICATED_DEST`) is tried
/// again this often, its clients waiting as for a build: after a quick
/// restart the router may still hold the old process's session of the key
/// (emissary 0.4 answers so for a moment after the old control socket
/// closed).
pub const KEY_RELEASE_RETRY: Duration = Duration::from_millis(250);
/// How long a key may stay held before the session counts as failed (and
/// backs off as any other): longer, another process holds it.
pub const KEY_RELEASE_WAIT: Duration = Duration::from_secs(30);
/// NAMING LOOKUPs waiting for one session's supervisor; more are refused
/// (`Busy`) rather than queued behind a slow one without bound.
pub const LOOKUP_QUEUE: usize = 64;

/// How to build a session: everything but the nickname.
#[derive(Debug, Clone)]
pub struct SessionSpec {
    pub sam: SocketAddr,
    /// `TRANSIENT` or a private key in I2P base64 (never logged).
    pub destination: String,
    /// SESSION CREATE options after SIGNATURE_TYPE, in order (the
    /// encryption types are added per build, after HELLO).
    pub options: Vec<(String, String)>,
    /// Which encryption types to ask for; shared by every session.
    pub encryption: Arc<Encryption>,
    /// A label for log lines (never a credential).
    pub label: String,
    /// Its warnings share the rate limit of `build_warn` (every session
    /// but the listeners' default identities').
    pub limit_warnings: bool,
}

/// What clients need of a ready session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub id: String,
    /// Negotiated SAM minor version (3.x).
    pub minor: u32,
    /// Our own address, `<52>.b32.i2p`.
    pub b32: String,
    /// The private key the bridge returned (for key files), never logged.
    pub private_key: String,
}

impl SessionInfo {
    /// TO_PORT is understood from SAM 3.2 on.
    pub fn supports_ports(&self) -> bool {
        self.minor >= 2
    }
}

/// Called once a session made from a TRANSIENT destination is ready; true
/// means the key was kept, so rebuilds must reuse it rather than make a new
/// address.
pub type OnNewKey = Box<dyn FnMut(&SessionInfo) -> bool + Send>;

/// Why a stream could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectError {
    /// The session is down (being rebuilt) or closed.
    SessionDown,
    /// Our deadline passed first.
    Timeout,
    /// The bridge could not be reached, or broke the protocol.
    Unreachable,
    /// The bridge answered with this RESULT.
    Refused(SamResult),
    /// The target cannot be put on a SAM line (validation lets none through).
    BadTarget,
    /// The bridge ended the stream's socket after a good HELLO without a
    /// STREAM STATUS, and a NAMING LOOKUP did not call the target unknown.
    NoStatus,
    /// A NAMING LOOKUP on the session says the router does not know the
    /// target (after a refusal that gave no clear reason).
    UnknownDestination,
    /// Too many NAMING LOOKUPs are waiting for this session.
    Busy,
}

impl From<NotReady> for ConnectError {
    fn from(e: NotReady) -> Self {
        match e {
            NotReady::Down => ConnectError::SessionDown,
            NotReady::TimedOut => ConnectError::Timeout,
        }
    }
}

/// A NAMING LOOKUP queued for the supervisor.
struct LookupRequest {
    name: String,
    /// The client gives up then; a request found later is skipped.
    deadline: Instant,
    reply: Sender<Lookup>,
}

/// A supervised SAM session.
pub struct Session {
    spec: SessionSpec,
    state: Readiness<Arc<SessionInfo>>,
    /// A clone of the live control socket, so `close` can wake its reader.
    control: Mutex<Option<TcpStream>>,
    /// Lookups for the supervisor while the session is up.
    lookups: Mutex<Option<Sender<LookupRequest>>>,
    /// What log lines call it: the spec's label until [`Session::relabel`].
    label: Mutex<String>,
    /// What the live session's streams reached and how its refusals run.
    reach: Mutex<Reach>,
    /// Set when `reach` calls the live session stuck; its supervisor then
    /// rebuilds it and says why.
    stuck: AtomicBool,
    /// How its streams ended: when it may be closed.
    ends: Mutex<Ends>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Session {
    /// Start the supervisor thread; the session begins in the Starting
    /// state. `on_new_key` is told when a TRANSIENT destination got its key.
    pub fn spawn(spec: SessionSpec, on_new_key: Option<OnNewKey>) -> io::Result<Arc<Session>> {
        let label = Mutex::new(spec.label.clone());
        let s = Arc::new(Session {
            spec,
            state: Readiness::new(),
            control: Mutex::new(None),
            lookups: Mutex::new(None),
            label,
            reach: Mutex::new(Reach::new()),
            stuck: AtomicBool::new(false),
            ends: Mutex::new(Ends::default()),
        });
        let me = Arc::clone(&s);
        thread::Builder::new().name("sam-session".into()).spawn(move || me.supervise(on_new_key))?;
        Ok(s)
    }

    /// The ready session, waiting while one is being built, until `deadline`.
    pub fn wait_ready(&self, deadline: Instant) -> Result<Arc<SessionInfo>, ConnectError> {
        Ok(self.state.wait_ready(deadline)?)
    }

    /// Close for good: the control socket is shut, which ends the session
    /// on the router; streams already open on it end too.
    pub fn close(&self) {
        self.state.close();
        if let Some(c) = self.lock_control().take() {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    pub fn is_closed(&self) -> bool {
        self.state.is_closed()
    }

    /// A stream on it ended; `router_ended` when the router's end of it
    /// came before the proxy ended its side (see `linger`).
    pub fn stream_ended(&self, router_ended: bool) {
        lock(&self.ends).record(Instant::now(), router_ended);
    }

    /// When the router may be told to end it (`linger`), a stream the proxy
    /// ended first holding it for `hold`; None: now. Only a ready session's
    /// router holds its streams: one down or being built has none (its
    /// control socket ended, which ended its destination).
    pub fn close_at(&self, now: Instant, hold: Duration) -> Option<Instant> {
        match self.state.get() {
            State::Ready(_) => lock(&self.ends).close_at(now, hold),
            _ => None,
        }
    }

    /// Take no more streams, but keep the session on the router until
    /// [`Session::close`]: its control socket stays open and answered.
    pub fn retire(&self) {
        self.state.close();
    }

    /// Where it stands now (without waiting).
    pub fn state(&self) -> State<Arc<SessionInfo>> {
        self.state.get()
    }

    /// Log lines name it `label` from now on (a spare handed to an identity
    /// takes that identity's name).
    pub fn relabel(&self, label: &str) {
        *lock(&self.label) = label.to_string();
    }

    fn label(&self) -> String {
        lock(&self.label).clone()
    }

    fn lock_control(&self) -> MutexGuard<'_, Option<TcpStream>> {
        lock(&self.control)
    }

    /// NAMING LOOKUP of `name` on this session's control socket, asked of
    /// the supervisor that owns it; the answer by `deadline`.
    pub fn lookup(&self, name: &str, deadline: Instant) -> Result<Lookup, ConnectError> {
        let Some(queue) = lock(&self.lookups).clone() else {
            return Err(ConnectError::SessionDown);
        };
        let (reply, answer) = bounded(1);
        match queue.try_send(LookupRequest { name: name.to_string(), deadline, reply }) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(ConnectError::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(ConnectError::SessionDown),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match answer.recv_timeout(left) {
            Ok(l) => Ok(l),
            Err(RecvTimeoutError::Timeout) => Err(ConnectError::Timeout),
            Err(RecvTimeoutError::Disconnected) => Err(ConnectError::SessionDown),
        }
    }

    /// Open a stream to `target` on this session, ready as `info`
    /// ([`open_stream`]). A refusal without a clear reason (see the module
    /// doc) becomes [`ConnectError::UnknownDestination`] when a NAMING
    /// LOOKUP on the session says the router does not know the target; the
    /// session found down meanwhile, or the deadline, wins over the refusal.
    pub fn connect(
        &self,
        info: &SessionInfo,
        target: &str,
        port: u16,
        deadline: Instant,
    ) -> Result<(TcpStream, Vec<u8>), ConnectError> {
        let result = match open_stream(self.spec.sam, info, target, port, deadline) {
            Err(e @ (ConnectError::NoStatus | ConnectError::Refused(SamResult::I2pError))) => {
                Err(self.why_refused(e, target, deadline))
            }
            other => other,
        };
        self.record(info, target, &result);
        result
    }

    /// Keep the live session's `reach` record; when it calls the session
    /// stuck, end its control socket so that the supervisor rebuilds it.
    /// A result from a session already replaced is not this one's to judge.
    fn record<T>(&self, info: &SessionInfo, target: &str, result: &Result<T, ConnectError>) {
        match self.state.get() {
            State::Ready(live) if live.id == info.id => {}
            _ => return,
        }
        let stuck = match result {
            Ok(_) => {
                lock(&self.reach).opened(target);
                false
            }
            Err(ConnectError::Refused(SamResult::CantReachPeer)) => {
                lock(&self.reach).refused(target, Instant::now())
            }
            Err(_) => false,
        };
        if stuck && !self.stuck.swap(true, Ordering::SeqCst) {
            if let Some(c) = self.lock_control().as_ref() {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
    }

    /// What a refusal `e` without a clear reason means, asked of the
    /// session by NAMING LOOKUP. Never inlined: the lookup's locals would
    /// otherwise deepen every connection's stack, and the stack pages a held
    /// connection once touched stay resident (see `pool::WORKER_STACK`).
    #[inline(never)]
    fn why_refused(&self, e: ConnectError, target: &str, deadline: Instant) -> ConnectError {
        debug!("no clear reason for the refusal ({e:?}): asking the session about the target");
        match self.lookup(target, deadline) {
            Ok(Lookup::Unknown) => ConnectError::UnknownDestination,
            // The lookup shares the client's deadline: past it, that is the answer.
            Ok(Lookup::TimedOut) if Instant::now() >= deadline => ConnectError::Timeout,
            Ok(Lookup::Found(_) | Lookup::Refused(_) | Lookup::TimedOut) | Err(ConnectError::Busy) => e,
            Err(other) => other,
        }
    }

    /// Keep a handle on the control socket for `close`; if the session
    /// was closed meanwhile, cut the socket at once.
    fn register_control(&self, s: &TcpStream) {
        let Ok(clone) = s.try_clone() else { return };
        let mut slot = self.lock_control();
        if self.is_closed() {
            let _ = clone.shutdown(Shutdown::Both);
        } else {
            *slot = Some(clone);
        }
    }

    fn supervise(self: Arc<Self>, mut on_new_key: Option<OnNewKey>) {
        let mut backoff = BACKOFF_MIN;
        let mut spec = self.spec.clone();
        // Whether a session was up before: the next one is a rebuild.
        let mut lost = false;
        // Since when the router has refused this key as held.
        let mut held_since: Option<Instant> = None;
        loop {
            if !self.state.set(State::Starting) {
                return;
            }
            let result = create(&spec, &self.label(), &|s| self.register_control(s));
            if result.is_err() {
                self.lock_control().take();
            }
            let held = spec.destination != "TRANSIENT"
                && matches!(result, Err(CreateError::Refused(SamResult::DuplicatedDest)));
            if !held {
                held_since = None;
            } else if held_since.get_or_insert_with(Instant::now).elapsed() < KEY_RELEASE_WAIT {
                debug!("{}: the router still holds this key; trying again", self.label());
                if !self.state.sleep_unless_closed(KEY_RELEASE_RETRY) {
                    return;
                }
                continue;
            }
            match result {
                Ok((conn, info)) => {
                    backoff = BACKOFF_MIN;
                    bump(&COUNTERS.session_builds);
                    if lost {
                        bump(&COUNTERS.session_rebuilds);
                    }
                    if spec.destination == "TRANSIENT" {
                        if let Some(mut keep) = on_new_key.take() {
                            if keep(&info) {
                                // Rebuilds reuse the kept identity.
                                spec.destination = info.private_key.clone();
                            }
                        }
                    }
                    let why = match Control::start(conn, &self.label()) {
                        Ok(ctl) => {
                            // Lookups are taken before clients can see the session ready.
                            let (queue, requests) = bounded(LOOKUP_QUEUE);
                            *lock(&self.lookups) = Some(queue);
                            let b32 = info.b32.clone();
                            if !self.state.set(State::Ready(Arc::new(info))) {
                                lock(&self.lookups).take();
                                return;
                            }
                            info!("{}: I2P destination ready: {b32}", self.label());
                            let why = watch(ctl, &requests);
                            lock(&self.lookups).take();
                            *lock(&self.reach) = Reach::new();
                            if self.stuck.swap(false, Ordering::SeqCst) {
                                bump(&COUNTERS.session_stuck);
                                format!(
                                    "no stream opened for {} s, even to targets it reached before",
                                    STUCK_SPAN.as_secs()
                                )
                            } else {
                                why
                            }
                        }
                        Err(e) => format!("cannot hold the control socket: {e}"),
                    };
                    if let Some(c) = self.lock_control().take() {
                        let _ = c.shutdown(Shutdown::Both);
                    }
                    if !self.state.set(State::Down) {
                        debug!("{}: session closed", self.label());
                        return;
                    }
                    lost = true;
                    warn_limited(
                        Kind::StreamLost,
                        spec.limit_warnings,
                        format_args!(
                            "{}: SAM session lost ({why}) while the proxy had {} streams open; rebuilding",
                            self.label(),
                            live(&COUNTERS.streams_opened, &COUNTERS.streams_ended)
                        ),
                    );
                }
                Err(e) => {
                    if !self.state.set(State::Down) {
                        return;
                    }
                    bump(&COUNTERS.session_failures);
                    let hint = match e {
                        CreateError::NoPostQuantum { .. } => "",
                        CreateError::Refused(SamResult::DuplicatedDest) => {
                            " (does another process use this key?)"
                        }
                        _ => " (is the I2P router running with SAM enabled?)",
                    };
                    warn_limited(
                        Kind::StreamCreate,
                        spec.limit_warnings,
                        format_args!(
                            "{}: cannot create a SAM session at {}: {e}; retrying in {} s{hint}",
                            self.label(),
                            spec.sam,
                            backoff.as_secs()
                        ),
                    );
                }
            }
            if !self.state.sleep_unless_closed(backoff) {
                return;
            }
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}

/// Connect, HELLO, SESSION CREATE. Returns the control connection and the
/// session's facts. `register` sees the socket as soon as it is connected,
/// so that a close during the (long) SESSION CREATE can cut it.
fn create(
    spec: &SessionSpec,
    label: &str,
    register: &dyn Fn(&TcpStream),
) -> Result<(Conn, SessionInfo), CreateError> {
    let deadline = Instant::now() + SESSION_CREATE_TIMEOUT;
    let conn = Conn::open(spec.sam, deadline, register)?;
    let what = CreateSpec {
        style: Style::Stream,
        destination: &spec.destination,
        options: &spec.options,
        encryption: &spec.encryption,
        label,
    };
    let c = conn::create_session(conn, &what, spec.sam, deadline, register)?;
    let minor = c.conn.minor;
    Ok((c.conn, SessionInfo { id: c.id, minor, b32: c.b32, private_key: c.private_key }))
}

/// Hold the control socket: answer PING and serve queued NAMING LOOKUPs,
/// one at a time, until the socket dies; returns why.
fn watch(mut ctl: Control, requests: &Receiver<LookupRequest>) -> String {
    let lines = ctl.lines();
    let failed = loop {
        select! {
            recv(lines) -> line => match line {
                Ok(l) => if ctl.on_line(&l).is_err() { break true },
                Err(_) => break false,
            },
            recv(requests) -> r => {
                let Ok(r) = r else { break false };
                if Instant::now() >= r.deadline {
                    continue; // its client has given up
                }
                match ctl.lookup(&r.name, r.deadline) {
                    Ok(answer) => {
                        let _ = r.reply.try_send(answer);
                    }
                    Err(_) => break true,
                }
            },
        }
    };
    let why = ctl.why();
    if failed && why.is_empty() {
        "writing to the control socket failed".into()
    } else {
        why
    }
}

/// Open a stream to `target` on a ready session: a fresh socket, HELLO,
/// STREAM CONNECT. On success the socket carries payload; the returned
/// bytes arrived after the status line and belong to the client. The
/// socket ended (closed or reset) after a good HELLO and before any STREAM
/// STATUS is [`ConnectError::NoStatus`]: the bridge was reached.
pub fn open_stream(
    sam: SocketAddr,
    info: &SessionInfo,
    target: &str,
    port: u16,
    deadline: Instant,
) -> Result<(TcpStream, Vec<u8>), ConnectError> {
    if Instant::now() >= deadline {
        return Err(ConnectError::Timeout);
    }
    let mut conn = match Conn::open(sam, deadline, &|_| {}) {
        Ok(c) => c,
        Err(CreateError::Refused(r)) => return Err(ConnectError::Refused(r)),
        Err(e) if e.is_timeout() && Instant::now() >= deadline => return Err(ConnectError::Timeout),
        Err(e) => {
            debug!("SAM connect or HELLO failed: {e}");
            return Err(ConnectError::Unreachable);
        }
    };
    let to_port = info.supports_ports().then_some(port);
    let cmd = proto::stream_connect(&info.id, target, to_port).map_err(|_| ConnectError::BadTarget)?;
    trace!("> {}", proto::redact_line(&cmd));
    let line = match conn.command(&cmd, deadline) {
        Ok(l) => l,
        Err(e) if e.kind() == ErrorKind::TimedOut => return Err(ConnectError::Timeout),
        Err(e) if ended(&e) => {
            debug!("the SAM bridge ended the stream without a STREAM STATUS: {e}");
            return Err(ConnectError::NoStatus);
        }
        Err(e) => {
            debug!("SAM STREAM CONNECT failed: {e}");
            return Err(ConnectError::Unreachable);
        }
    };
    trace!("< {}", proto::redact_line(&line));
    match proto::stream_status(&line) {
        Ok(()) => {
            let (s, lines) = conn.into_parts().map_err(|_| ConnectError::Unreachable)?;
            Ok((s, lines.into_surplus()))
        }
        Err(proto::ReplyError::Refused(r)) => Err(ConnectError::Refused(r)),
        Err(e) => {
            debug!("SAM STREAM CONNECT failed: {e}");
            Err(ConnectError::Unreachable)
        }
    }
}

/// The bridge closed (or reset) the socket: what a close right after HELLO
/// looks like, depending on whether our command reached it first.
fn ended(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::UnexpectedEof
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
    )
}
