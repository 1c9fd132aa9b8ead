//! The blocking SAM v3 client: one supervised control session per identity,
//! and one fresh socket per client stream (sam-v3.md).
//!
//! A [`Session`] owns its control socket in its own thread. That thread
//! creates the session, answers `PING` with `PONG`, and when the socket
//! dies (EOF, error, router restart) marks the session down and rebuilds it
//! with exponential backoff. Clients ask [`Session::wait_ready`]: a session
//! being built makes them wait (within their own deadline); a session known
//! to be down refuses them at once, so nobody hangs on a dead router.
//!
//! Not here: which identity a client gets (that is `server`'s business), and
//! the command/reply syntax (that is `proto`'s).

use crate::error::Error;
use crate::i2p_addr;
use crate::keyfile;
use crate::sam::proto::{self, LineBuf, SamResult, Style};
use log::{debug, error, info, trace, warn};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// Deadline for the TCP connect to the bridge.
pub const SAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline for a HELLO reply.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline for SESSION CREATE: tunnels are built before the reply comes,
/// which takes ~20 s on i2pd 2.45 and can take minutes on a busy network.
pub const SESSION_CREATE_TIMEOUT: Duration = Duration::from_secs(300);
/// First and last wait between rebuild attempts.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Size of each read while waiting for a reply line.
const READ_CHUNK: usize = 1024;
/// Length of the random session nickname.
pub const ID_LEN: usize = 16;

/// How to build a session: everything but the nickname.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionSpec {
    pub sam: SocketAddr,
    /// `TRANSIENT` or a private key in I2P base64 (never logged).
    pub destination: String,
    /// SESSION CREATE options after SIGNATURE_TYPE, in order.
    pub options: Vec<(String, String)>,
    /// A label for log lines (never a credential).
    pub label: String,
    /// Where to keep the key the bridge returns for a TRANSIENT destination,
    /// so the next start reuses it (`--keyfile` when the file is missing).
    pub keyfile: Option<std::path::PathBuf>,
}

/// What clients need of a ready session. Holds no private key.
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

#[derive(Debug, Clone)]
enum State {
    /// An attempt is under way: clients wait.
    Starting,
    Ready(Arc<SessionInfo>),
    /// The last attempt failed or the session died: clients are refused.
    Down,
    /// Closed for good.
    Closed,
}

/// A supervised SAM session.
pub struct Session {
    spec: SessionSpec,
    state: Mutex<State>,
    changed: Condvar,
    /// A clone of the live control socket, so `close` can wake its reader.
    control: Mutex<Option<TcpStream>>,
}

impl Session {
    /// Start the supervisor thread; the session begins in the Starting state.
    pub fn spawn(spec: SessionSpec) -> io::Result<Arc<Session>> {
        let s = Arc::new(Session {
            spec,
            state: Mutex::new(State::Starting),
            changed: Condvar::new(),
            control: Mutex::new(None),
        });
        let me = Arc::clone(&s);
        thread::Builder::new().name("sam-session".into()).spawn(move || me.supervise())?;
        Ok(s)
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_state(&self, new: State) -> bool {
        let mut st = self.lock_state();
        if matches!(*st, State::Closed) {
            return false;
        }
        *st = new;
        self.changed.notify_all();
        true
    }

    /// The ready session, waiting while one is being built, until `deadline`.
    pub fn wait_ready(&self, deadline: Instant) -> Result<Arc<SessionInfo>, Error> {
        let mut st = self.lock_state();
        loop {
            match &*st {
                State::Ready(info) => return Ok(Arc::clone(info)),
                State::Down | State::Closed => return Err(Error::SessionDown),
                State::Starting => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::ConnectTimeout);
            }
            st = match self.changed.wait_timeout(st, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// Close for good: the control socket is shut, which ends the session
    /// on the router; streams already open on it end too.
    pub fn close(&self) {
        {
            let mut st = self.lock_state();
            *st = State::Closed;
            self.changed.notify_all();
        }
        if let Some(c) = self.control.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// Keep a handle on the control socket for `close`; if the session
    /// was closed meanwhile, cut the socket at once.
    fn register_control(&self, s: &TcpStream) {
        let Ok(clone) = s.try_clone() else { return };
        let mut slot = self.control.lock().unwrap_or_else(|p| p.into_inner());
        if self.is_closed() {
            let _ = clone.shutdown(Shutdown::Both);
        } else {
            *slot = Some(clone);
        }
    }

    pub fn is_closed(&self) -> bool {
        matches!(*self.lock_state(), State::Closed)
    }

    fn supervise(self: Arc<Self>) {
        let mut backoff = BACKOFF_MIN;
        let mut spec = self.spec.clone();
        loop {
            if !self.set_state(State::Starting) {
                return;
            }
            let result = create(&spec, &|s| self.register_control(s));
            if result.is_err() {
                self.control.lock().unwrap_or_else(|p| p.into_inner()).take();
            }
            match result {
                Ok((control, lines, info)) => {
                    backoff = BACKOFF_MIN;
                    if let Some(path) = spec.keyfile.take() {
                        match keyfile::create(&path, &info.private_key) {
                            Ok(()) => {
                                info!("{}: created key file {}", spec.label, path.display());
                                // Rebuilds reuse the saved identity.
                                spec.destination = info.private_key.clone();
                            }
                            Err(e) => error!("{}: {e}; this identity will not survive a restart", spec.label),
                        }
                    }
                    let b32 = info.b32.clone();
                    if !self.set_state(State::Ready(Arc::new(info))) {
                        let _ = control.shutdown(Shutdown::Both);
                        return;
                    }
                    info!("{}: I2P destination ready: {b32}", spec.label);
                    let why = watch(control, lines);
                    self.control.lock().unwrap_or_else(|p| p.into_inner()).take();
                    if !self.set_state(State::Down) {
                        debug!("{}: session closed", spec.label);
                        return;
                    }
                    warn!("{}: SAM session lost ({why}); rebuilding", spec.label);
                }
                Err(e) => {
                    if !self.set_state(State::Down) {
                        return;
                    }
                    warn!(
                        "{}: cannot create a SAM session at {}: {e}; retrying in {} s \
                         (is the I2P router running with SAM enabled?)",
                        spec.label,
                        spec.sam,
                        backoff.as_secs()
                    );
                }
            }
            // Sleep the backoff, but wake at once if closed.
            let deadline = Instant::now() + backoff;
            let mut st = self.lock_state();
            while !matches!(*st, State::Closed) {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                st = match self.changed.wait_timeout(st, deadline - now) {
                    Ok((g, _)) => g,
                    Err(p) => p.into_inner().0,
                };
            }
            if matches!(*st, State::Closed) {
                return;
            }
            drop(st);
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}

/// Why setting up a session failed (for the log line).
#[derive(Debug)]
pub enum CreateError {
    Io(io::Error),
    Protocol(&'static str),
    Refused(SamResult),
}

impl std::fmt::Display for CreateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CreateError::Io(e) => write!(f, "{e}"),
            CreateError::Protocol(s) => f.write_str(s),
            CreateError::Refused(r) => write!(f, "the bridge answered {r:?}"),
        }
    }
}

impl From<io::Error> for CreateError {
    fn from(e: io::Error) -> Self {
        CreateError::Io(e)
    }
}

/// Connect, HELLO, SESSION CREATE. Returns the control socket, any bytes
/// read past the reply, and the session's public facts.
/// `register` sees the socket as soon as it is connected, so that a close
/// during the (long) SESSION CREATE can cut it.
fn create(
    spec: &SessionSpec,
    register: &dyn Fn(&TcpStream),
) -> Result<(TcpStream, LineBuf, SessionInfo), CreateError> {
    let mut s = TcpStream::connect_timeout(&spec.sam, SAM_CONNECT_TIMEOUT)?;
    register(&s);
    let _ = s.set_nodelay(true);
    let mut lines = LineBuf::new();
    let minor = hello(&mut s, &mut lines, Instant::now() + HELLO_TIMEOUT)?;
    let id = random_id();
    let cmd = proto::session_create(Style::Stream, &id, &spec.destination, &spec.options)
        .map_err(|_| CreateError::Protocol("an option cannot be sent to SAM"))?;
    trace!("{}: > {}", spec.label, proto::redact_line(&cmd));
    s.write_all(&cmd)?;
    let line = read_line(&mut s, &mut lines, Instant::now() + SESSION_CREATE_TIMEOUT)?;
    let reply = proto::parse_reply(&line).map_err(|_| CreateError::Protocol("unreadable SESSION reply"))?;
    // The reply carries our private key: log only its result.
    trace!("{}: < {}", spec.label, proto::redact_line(&line));
    if !reply.is("SESSION", "STATUS") {
        return Err(CreateError::Protocol("unexpected reply to SESSION CREATE"));
    }
    match reply.result() {
        SamResult::Ok => {}
        other => return Err(CreateError::Refused(other)),
    }
    let private_key = reply
        .get("DESTINATION")
        .ok_or(CreateError::Protocol("SESSION STATUS without DESTINATION"))?
        .to_string();
    let b32 = i2p_addr::b32_of_b64(&private_key)
        .ok_or(CreateError::Protocol("SESSION STATUS with an unreadable DESTINATION"))?;
    s.set_read_timeout(None)?;
    Ok((s, lines, SessionInfo { id, minor, b32, private_key }))
}

/// HELLO on a fresh socket; the negotiated minor version.
pub(crate) fn hello(s: &mut TcpStream, lines: &mut LineBuf, deadline: Instant) -> Result<u32, CreateError> {
    let cmd = proto::hello(None).map_err(|_| CreateError::Protocol("bad HELLO"))?;
    // i2pd reads HELLO from the first read only: one write.
    s.write_all(&cmd)?;
    let line = read_line(s, lines, deadline)?;
    let reply = proto::parse_reply(&line).map_err(|_| CreateError::Protocol("unreadable HELLO reply"))?;
    trace!("< {}", proto::redact_line(&line));
    if !reply.is("HELLO", "REPLY") {
        return Err(CreateError::Protocol("unexpected reply to HELLO"));
    }
    match reply.result() {
        SamResult::Ok => reply
            .get("VERSION")
            .and_then(proto::version_minor)
            .ok_or(CreateError::Protocol("HELLO REPLY without a usable VERSION")),
        other => Err(CreateError::Refused(other)),
    }
}

/// Read one reply line by `deadline`, keeping whatever follows it in `lines`.
pub(crate) fn read_line(s: &mut TcpStream, lines: &mut LineBuf, deadline: Instant) -> io::Result<Vec<u8>> {
    let mut chunk = [0u8; READ_CHUNK];
    loop {
        match lines.take_line() {
            Ok(Some(line)) => return Ok(line),
            Ok(None) => {}
            Err(proto::LineTooLong) => {
                return Err(io::Error::new(ErrorKind::InvalidData, "SAM reply line too long"));
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(io::Error::new(ErrorKind::TimedOut, "no SAM reply in time"));
        }
        s.set_read_timeout(Some(deadline - now))?;
        match s.read(&mut chunk) {
            Ok(0) => {
                return Err(io::Error::new(ErrorKind::UnexpectedEof, "SAM bridge closed the connection"))
            }
            Ok(n) => lines.push(chunk.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(io::Error::new(ErrorKind::TimedOut, "no SAM reply in time"));
            }
            Err(e) => return Err(e),
        }
    }
}

/// Hold the control socket: answer PING, return when it dies.
fn watch(mut s: TcpStream, mut lines: LineBuf) -> String {
    let mut chunk = [0u8; READ_CHUNK];
    loop {
        loop {
            match lines.take_line() {
                Ok(Some(line)) => {
                    if let Some(pong) = proto::pong_for(&line) {
                        trace!("< PING; > PONG");
                        if let Err(e) = s.write_all(&pong) {
                            return format!("write: {e}");
                        }
                    } else {
                        trace!("< {} (ignored)", proto::redact_line(&line));
                    }
                }
                Ok(None) => break,
                Err(proto::LineTooLong) => {
                    let _ = s.shutdown(Shutdown::Both);
                    return "control line too long".into();
                }
            }
        }
        match s.read(&mut chunk) {
            Ok(0) => return "the bridge closed the control socket".into(),
            Ok(n) => lines.push(chunk.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return format!("read: {e}"),
        }
    }
}

/// Open a stream to `target` on a ready session: a fresh socket, HELLO,
/// STREAM CONNECT. On success the socket carries payload; the returned
/// bytes arrived after the status line and belong to the client.
pub fn stream_connect(
    sam: SocketAddr,
    info: &SessionInfo,
    target: &str,
    port: u16,
    deadline: Instant,
) -> Result<(TcpStream, Vec<u8>), Error> {
    let timed_out = |e: &io::Error| e.kind() == ErrorKind::TimedOut;
    let now = Instant::now();
    if now >= deadline {
        return Err(Error::ConnectTimeout);
    }
    let mut s = TcpStream::connect_timeout(&sam, SAM_CONNECT_TIMEOUT.min(deadline - now)).map_err(|e| {
        debug!("SAM connect failed: {e}");
        Error::SamUnreachable
    })?;
    let _ = s.set_nodelay(true);
    let mut lines = LineBuf::new();
    match hello(&mut s, &mut lines, deadline.min(Instant::now() + HELLO_TIMEOUT)) {
        Ok(_) => {}
        Err(CreateError::Refused(r)) => return Err(Error::Sam(r)),
        Err(CreateError::Io(e)) if timed_out(&e) && Instant::now() >= deadline => {
            return Err(Error::ConnectTimeout)
        }
        Err(e) => {
            debug!("SAM HELLO failed: {e}");
            return Err(Error::SamUnreachable);
        }
    }
    let to_port = info.supports_ports().then_some(port);
    let cmd = proto::stream_connect(&info.id, target, to_port).map_err(|_| Error::TargetNotAllowed)?;
    trace!("> {}", proto::redact_line(&cmd));
    s.write_all(&cmd).map_err(|_| Error::SamUnreachable)?;
    let line = match read_line(&mut s, &mut lines, deadline) {
        Ok(l) => l,
        Err(e) if timed_out(&e) => return Err(Error::ConnectTimeout),
        Err(e) => {
            debug!("SAM STREAM CONNECT failed: {e}");
            return Err(Error::SamUnreachable);
        }
    };
    let reply = proto::parse_reply(&line).map_err(|_| Error::SamUnreachable)?;
    trace!("< {}", proto::redact_line(&line));
    if !reply.is("STREAM", "STATUS") {
        return Err(Error::SamUnreachable);
    }
    match reply.result() {
        SamResult::Ok => {
            s.set_read_timeout(None).map_err(|_| Error::SamUnreachable)?;
            Ok((s, lines.into_surplus()))
        }
        r => Err(Error::Sam(r)),
    }
}

/// HELLO on a fresh socket and nothing else (`--check`): the minor version.
pub fn probe(sam: SocketAddr) -> Result<u32, CreateError> {
    let mut s = TcpStream::connect_timeout(&sam, SAM_CONNECT_TIMEOUT)?;
    hello(&mut s, &mut LineBuf::new(), Instant::now() + HELLO_TIMEOUT)
}

/// A new key pair from the bridge (`DEST GENERATE`): the private key in
/// I2P base64. Used to create a key file without a session.
pub fn generate_key(sam: SocketAddr) -> Result<String, CreateError> {
    let mut s = TcpStream::connect_timeout(&sam, SAM_CONNECT_TIMEOUT)?;
    let mut lines = LineBuf::new();
    let deadline = Instant::now() + HELLO_TIMEOUT;
    hello(&mut s, &mut lines, deadline)?;
    s.write_all(&proto::dest_generate())?;
    let line = read_line(&mut s, &mut lines, deadline)?;
    let reply = proto::parse_reply(&line).map_err(|_| CreateError::Protocol("unreadable DEST reply"))?;
    if !reply.is("DEST", "REPLY") {
        return Err(CreateError::Protocol("unexpected reply to DEST GENERATE"));
    }
    reply.get("PRIV").map(str::to_string).ok_or(CreateError::Protocol("DEST REPLY without PRIV"))
}

/// A session nickname: [`ID_LEN`] random `[A-Za-z0-9]`.
pub fn random_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let bytes = random_bytes::<ID_LEN>();
    bytes
        .iter()
        .map(|b| char::from(ALPHABET.get(usize::from(*b) % ALPHABET.len()).copied().unwrap_or(b'x')))
        .collect()
}

/// Random bytes from the kernel; if that fails, a hash of time, pid and a
/// counter (the nickname must be unique on the bridge, not secret).
pub fn random_bytes<const N: usize>() -> [u8; N] {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut out = [0u8; N];
    if std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut out)).is_ok() {
        return out;
    }
    use sha2::{Digest, Sha256};
    let mut seed = Vec::new();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    seed.extend_from_slice(&now.as_nanos().to_le_bytes());
    seed.extend_from_slice(&std::process::id().to_le_bytes());
    seed.extend_from_slice(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let mut block = Sha256::digest(&seed);
    for (i, b) in out.iter_mut().enumerate() {
        if i > 0 && i % 32 == 0 {
            block = Sha256::digest(block);
        }
        *b = block.get(i % 32).copied().unwrap_or(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_alnum_and_distinct() {
        let a = random_id();
        let b = random_id();
        assert_eq!(a.len(), ID_LEN);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, b);
    }
}
