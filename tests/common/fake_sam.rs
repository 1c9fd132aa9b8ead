//! A scripted fake SAM v3 bridge for black-box tests of the real binary.
//!
//! It speaks just enough SAM v3 for the proxy: `HELLO VERSION`,
//! `SESSION CREATE` (answered with a structurally valid Ed25519/ElGamal
//! private-key blob, a different one per session) and `STREAM CONNECT`
//! (answered per destination from the [`Script`], after which the socket
//! becomes a scripted peer: echo, sink, source, drip or hang). It can misbehave on
//! purpose (hang, garbage, an endless line, close at once), kill the control
//! sockets, send PING, and go down and up on the same port. It records every
//! connection, every SESSION CREATE and STREAM CONNECT line, every PONG, and
//! every byte it received, so tests can check that nothing was injected.
//!
//! Every SESSION CREATE line is recorded as received, options included,
//! whatever the answer ([`FakeSam::creates`]); a script can refuse the ones
//! that ask for an encryption type (`RESULT=I2P_ERROR`, Java's answer when
//! it cannot make a session), and hold DATAGRAM creates longer than STREAM
//! ones.
//!
//! `DEST GENERATE` is answered with a fresh key pair; with
//! [`Script::keep_given_keys`], a SESSION CREATE that brings its own private
//! key gets that key back (as routers do), so persistent identities can be
//! tested. Connection ends are timestamped.
//!
//! Its datagram side (for UDP ASSOCIATE) accepts `SESSION CREATE
//! STYLE=DATAGRAM ... PORT= HOST=`, answers `NAMING LOOKUP` on a session's
//! control socket from [`Script::names`], and owns a UDP socket playing the
//! bridge's datagram port: it records every `3.0 <id> <dest>\n` + payload
//! sent to it, can echo each back as if the destination had answered, and
//! lets tests inject datagrams "from I2P" ([`FakeSam::inject_datagram`]).
//!
//! It is not a router: no tunnels, no real keys, no network behind it. Its
//! keys are tests/common/i2p.rs's made-up ones.
//! std only (plus the crate's own sha2/base32); thread per connection; every
//! buffer and wait is bounded, and all threads end when the FakeSam drops.

#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use super::i2p::{b32_of_blob, b64_decode, b64_encode, make_key, param, PUBLIC_LEN};
use super::rng::pattern;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Longest command line the fake reads before it hangs up.
pub const MAX_LINE: usize = 64 * 1024;
/// At most this many received bytes are kept per connection (the count is exact).
pub const MAX_LOG_PER_CONN: usize = 16 * 1024 * 1024;
/// Size of the "line without newline" fault.
pub const HUGE_LINE: usize = 8 * 1024 * 1024;
/// How often blocked reads and the accept loop look at the stop flag.
const POLL: Duration = Duration::from_millis(50);
/// Bound on any single write (a stuck client must not pin a thread forever).
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long Drop waits for connection threads to end.
const DROP_JOIN: Duration = Duration::from_secs(5);
/// Default wait of the `wait_*` helpers.
pub const WAIT: Duration = Duration::from_secs(10);

/// What the socket becomes after `STREAM STATUS RESULT=OK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Peer {
    /// Copy back everything until EOF, then shut down the write side.
    Echo,
    /// Read everything until EOF; record the count and SHA-256.
    Sink,
    /// Send n bytes of [`pattern`] (tests/common/rng.rs), then close.
    Source(usize),
    /// Read and discard, never answer, never close.
    Hang,
    /// Send `count` chunks of `size` bytes of [`pattern`], each after a
    /// pause of `gap`, without reading; then read to EOF and close (an
    /// answer that keeps coming after the client's request).
    Drip { count: usize, size: usize, gap: Duration },
}

/// The bridge's answer to one STREAM CONNECT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `STREAM STATUS RESULT=OK`, then the socket is this peer.
    Ok(Peer),
    /// `STREAM STATUS RESULT=<result>[ MESSAGE="<message>"]`, then close.
    Fail(String, Option<String>),
    /// Never answer the STREAM CONNECT.
    Hang,
    /// Answer with a line that is not SAM.
    Garbage,
    /// Answer with [`HUGE_LINE`] bytes and no newline.
    HugeLine,
    /// Close without answering (emissary 0.4 for a name it cannot resolve
    /// without an address book).
    Close,
    /// `STREAM STATUS RESULT=<result>` WITHOUT a newline, then close
    /// (emissary 0.4 for an unknown `.b32.i2p`).
    Unterminated(String),
    /// Wait, then behave like the inner outcome.
    Delayed(Duration, Box<Outcome>),
}

/// Misbehaviour of a whole connection, before any command is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Accept, then close at once.
    CloseOnAccept,
    /// Read the HELLO but never answer.
    HangHello,
    /// Answer HELLO with a line that is not SAM.
    GarbageHello,
    /// Answer HELLO with [`HUGE_LINE`] bytes and no newline.
    HugeHello,
    /// Answer HELLO, then close at once without reading further (the
    /// client's next command may meet a reset).
    CloseAfterHello,
}

/// What the fake does. Can be changed at runtime with [`FakeSam::script`].
#[derive(Debug, Clone)]
pub struct Script {
    /// VERSION in HELLO REPLY.
    pub version: String,
    /// If set, HELLO is refused with this RESULT (e.g. `NOVERSION`).
    pub hello_result: Option<String>,
    /// Wait this long before answering SESSION CREATE (tunnel building).
    pub session_delay: Duration,
    /// If set, DATAGRAM creates wait this long instead of `session_delay`.
    pub dg_session_delay: Option<Duration>,
    /// If set, a SESSION CREATE whose `i2cp.leaseSetEncType` lists this
    /// type is refused with `RESULT=I2P_ERROR`.
    pub refuse_enc_type: Option<String>,
    /// If set, SESSION CREATE is refused with this RESULT (e.g. `I2P_ERROR`).
    pub session_result: Option<String>,
    /// Per-destination STREAM CONNECT outcomes.
    pub outcomes: HashMap<String, Outcome>,
    /// Outcome for destinations not in `outcomes`.
    pub default_outcome: Outcome,
    /// Applied to every new connection while set.
    pub fault: Option<Fault>,
    /// SESSION CREATE with `DESTINATION=<private key>` answers with that key
    /// (a malformed one gets `INVALID_KEY`); otherwise every session gets a
    /// fresh key whatever it asked for.
    pub keep_given_keys: bool,
    /// NAMING LOOKUP answers (name → base64 destination).
    pub names: HashMap<String, String>,
    /// The RESULT for a name not in `names` (i2pd's `INVALID_KEY` unless
    /// set; `KEY_NOT_FOUND` is Java's and emissary's); None: never answered.
    pub lookup_miss: Option<String>,
    /// Send every datagram received on the UDP side back to its session,
    /// from the destination it was sent to.
    pub datagram_echo: bool,
    /// With echo: add ` FROM_PORT=n TO_PORT=0` to the echo's header (SAM
    /// 3.2 style) instead of i2pd 2.45's bare destination.
    pub echo_from_port: Option<u16>,
}

impl Default for Script {
    fn default() -> Self {
        Script {
            version: "3.1".into(),
            hello_result: None,
            session_delay: Duration::ZERO,
            dg_session_delay: None,
            refuse_enc_type: None,
            session_result: None,
            outcomes: HashMap::new(),
            default_outcome: Outcome::Ok(Peer::Echo),
            fault: None,
            keep_given_keys: false,
            names: HashMap::new(),
            lookup_miss: Some("INVALID_KEY".into()),
            datagram_echo: false,
            echo_from_port: None,
        }
    }
}

impl Script {
    pub fn version(mut self, v: &str) -> Self {
        self.version = v.into();
        self
    }
    pub fn outcome(mut self, dest: &str, o: Outcome) -> Self {
        self.outcomes.insert(dest.into(), o);
        self
    }
    pub fn default_outcome(mut self, o: Outcome) -> Self {
        self.default_outcome = o;
        self
    }
    pub fn fault(mut self, f: Fault) -> Self {
        self.fault = Some(f);
        self
    }
    pub fn session_delay(mut self, d: Duration) -> Self {
        self.session_delay = d;
        self
    }
    pub fn refuse_enc_type(mut self, t: &str) -> Self {
        self.refuse_enc_type = Some(t.into());
        self
    }
    pub fn keep_given_keys(mut self) -> Self {
        self.keep_given_keys = true;
        self
    }
    pub fn name(mut self, name: &str, dest_b64: &str) -> Self {
        self.names.insert(name.into(), dest_b64.into());
        self
    }
    pub fn lookup_miss(mut self, result: Option<&str>) -> Self {
        self.lookup_miss = result.map(str::to_string);
        self
    }
    pub fn datagram_echo(mut self, on: bool) -> Self {
        self.datagram_echo = on;
        self
    }
}

/// One DATAGRAM session the fake accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DgSessionRecord {
    pub id: String,
    /// Where it forwards received datagrams (PORT=/HOST=).
    pub forward: SocketAddr,
    /// Index of its control connection.
    pub conn: usize,
}

/// One datagram sent to the fake's UDP side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatagramRecord {
    /// The header line, without `\n`.
    pub header: String,
    pub id: String,
    pub dest: String,
    pub payload: Vec<u8>,
    pub from: SocketAddr,
}

/// One SESSION CREATE the fake accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// The full command line (without newline).
    pub line: String,
    /// Its ID= value.
    pub id: String,
    /// The private key sent back, in I2P base64.
    pub private_key: String,
    /// The matching `<52>.b32.i2p`.
    pub b32: String,
    /// Index of the connection (see [`FakeSam::received`]).
    pub conn: usize,
}

/// One `DEST GENERATE` the fake answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestRecord {
    pub line: String,
    /// PRIV= of the reply (I2P base64).
    pub private_key: String,
    /// PUB= of the reply (I2P base64).
    pub public: String,
    pub b32: String,
}

/// One STREAM CONNECT the fake received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamRecord {
    pub line: String,
    pub conn: usize,
}

/// What a Sink peer saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SinkRecord {
    pub conn: usize,
    pub count: usize,
    pub sha256: [u8; 32],
}

#[derive(Default)]
struct ConnLog {
    bytes: Vec<u8>,
    total: usize,
    closed: bool,
    closed_at: Option<Instant>,
    /// When a peer read the proxy's FIN (before it answers it with its own).
    eof_at: Option<Instant>,
}

#[derive(Default)]
struct Records {
    connections: usize,
    /// Every SESSION CREATE line, as received.
    creates: Vec<String>,
    sessions: Vec<SessionRecord>,
    streams: Vec<StreamRecord>,
    pongs: Vec<String>,
    sinks: Vec<SinkRecord>,
    other_lines: Vec<String>,
    logs: Vec<ConnLog>,
    dests: Vec<DestRecord>,
    dg_sessions: Vec<DgSessionRecord>,
    /// (connection, name) of every NAMING LOOKUP.
    lookups: Vec<(usize, String)>,
    datagrams: Vec<DatagramRecord>,
}

struct Inner {
    script: Mutex<Script>,
    records: Mutex<Records>,
    changed: Condvar,
    /// Control sockets of live sessions (clones), for kill_sessions/send_ping.
    controls: Mutex<Vec<(usize, TcpStream)>>,
    /// Every live connection (clones), for stop() and Drop.
    live: Mutex<Vec<(usize, TcpStream)>>,
    /// Set by Drop: every thread ends.
    dropping: AtomicBool,
    threads: AtomicUsize,
    /// The bridge's datagram port.
    udp: UdpSocket,
    /// Received bytes kept per connection (see [`FakeSam::set_log_limit`]).
    log_limit: AtomicUsize,
}

struct Listener {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

/// A running fake bridge. See the module doc.
pub struct FakeSam {
    addr: SocketAddr,
    inner: Arc<Inner>,
    listener: Mutex<Option<Listener>>,
}

/// Distinguishes the keys of every session made in this test process.
static KEY_SEQ: AtomicU64 = AtomicU64::new(1);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl FakeSam {
    /// Listen on 127.0.0.1:0 and serve `script`.
    pub fn start(script: Script) -> FakeSam {
        let fake = FakeSam::start_stopped(script);
        fake.restart();
        fake
    }

    /// A fake that owns a free port but is not listening yet ("bridge down");
    /// [`FakeSam::restart`] brings it up on that port.
    pub fn start_stopped(script: Script) -> FakeSam {
        let probe = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind UDP 127.0.0.1:0");
        udp.set_read_timeout(Some(POLL)).unwrap();
        let fake = FakeSam {
            addr,
            inner: Arc::new(Inner {
                script: Mutex::new(script),
                records: Mutex::new(Records::default()),
                changed: Condvar::new(),
                controls: Mutex::new(Vec::new()),
                live: Mutex::new(Vec::new()),
                dropping: AtomicBool::new(false),
                threads: AtomicUsize::new(0),
                udp,
                log_limit: AtomicUsize::new(MAX_LOG_PER_CONN),
            }),
            listener: Mutex::new(None),
        };
        let inner = Arc::clone(&fake.inner);
        inner.threads.fetch_add(1, Ordering::SeqCst);
        thread::Builder::new()
            .name("fake-sam-udp".into())
            .spawn(move || {
                udp_loop(&inner);
                inner.threads.fetch_sub(1, Ordering::SeqCst);
            })
            .unwrap();
        fake
    }

    /// The bridge's datagram port, for `--sam-udp`.
    pub fn udp_addr(&self) -> SocketAddr {
        self.inner.udp.local_addr().unwrap()
    }

    pub fn udp_arg(&self) -> String {
        self.udp_addr().to_string()
    }

    pub fn dg_sessions(&self) -> Vec<DgSessionRecord> {
        lock(&self.inner.records).dg_sessions.clone()
    }

    pub fn wait_dg_sessions(&self, n: usize, timeout: Duration) -> bool {
        self.wait(timeout, |r| r.dg_sessions.len() >= n)
    }

    /// Every name asked with NAMING LOOKUP, in order.
    pub fn lookups(&self) -> Vec<String> {
        lock(&self.inner.records).lookups.iter().map(|(_, n)| n.clone()).collect()
    }

    /// Every NAMING LOOKUP as (connection it came on, name), in order: only
    /// a session's control connection answers them.
    pub fn lookups_on(&self) -> Vec<(usize, String)> {
        lock(&self.inner.records).lookups.clone()
    }

    pub fn wait_lookups(&self, n: usize, timeout: Duration) -> bool {
        self.wait(timeout, |r| r.lookups.len() >= n)
    }

    /// Every datagram received on the UDP side, in order.
    pub fn datagrams(&self) -> Vec<DatagramRecord> {
        lock(&self.inner.records).datagrams.clone()
    }

    pub fn wait_datagrams(&self, n: usize, timeout: Duration) -> bool {
        self.wait(timeout, |r| r.datagrams.len() >= n)
    }

    /// Send `header\n` + `payload` to DATAGRAM session number `session`'s
    /// forward address, as the router does for a datagram from I2P (header:
    /// the sender's base64 destination, maybe followed by ports).
    pub fn inject_datagram(&self, session: usize, header: &str, payload: &[u8]) {
        let to = self.dg_sessions()[session].forward;
        let mut d = format!("{header}\n").into_bytes();
        d.extend_from_slice(payload);
        self.inner.udp.send_to(&d, to).unwrap();
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`, for `-s`.
    pub fn addr_arg(&self) -> String {
        self.addr.to_string()
    }

    /// Keep at most `n` received bytes per connection from now on (default
    /// [`MAX_LOG_PER_CONN`]); byte counts stay exact. Bulk tests set a small
    /// cap so a hundred 10 MiB streams do not pile up in the test's memory.
    pub fn set_log_limit(&self, n: usize) {
        self.inner.log_limit.store(n.min(MAX_LOG_PER_CONN), Ordering::Relaxed);
    }

    /// Change the script of the running fake (applies to new commands).
    pub fn script(&self, f: impl FnOnce(&mut Script)) {
        f(&mut lock(&self.inner.script));
    }

    pub fn set_outcome(&self, dest: &str, o: Outcome) {
        self.script(|s| {
            s.outcomes.insert(dest.into(), o);
        });
    }

    pub fn set_fault(&self, f: Option<Fault>) {
        self.script(|s| s.fault = f);
    }

    /// Bridge down: stop listening and cut every connection (a router that
    /// went away takes its sessions and streams with it).
    pub fn stop(&self) {
        if let Some(l) = lock(&self.listener).take() {
            l.stop.store(true, Ordering::SeqCst);
            let _ = l.handle.join();
        }
        for (_, s) in lock(&self.inner.live).drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        lock(&self.inner.controls).clear();
    }

    /// Bridge up again on the same port (no-op if already listening).
    pub fn restart(&self) {
        let mut slot = lock(&self.listener);
        if slot.is_some() {
            return;
        }
        // The port was ours a moment ago; TIME_WAIT is fine (std sets
        // SO_REUSEADDR), but retry briefly in case the kernel lags.
        let deadline = Instant::now() + Duration::from_secs(5);
        let listener = loop {
            match TcpListener::bind(self.addr) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("fake_sam: rebind {}: {e}; retrying", self.addr);
                    thread::sleep(POLL);
                }
                Err(e) => panic!("fake_sam: cannot listen on {} again: {e}", self.addr),
            }
        };
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (stop2, inner) = (Arc::clone(&stop), Arc::clone(&self.inner));
        let handle = thread::Builder::new()
            .name("fake-sam-accept".into())
            .spawn(move || accept_loop(listener, stop2, inner))
            .unwrap();
        *slot = Some(Listener { stop, handle });
    }

    /// Shut down every session's control socket: the proxy must notice and
    /// build a new session.
    pub fn kill_sessions(&self) {
        for (_, s) in lock(&self.inner.controls).drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Send `PING <text>` on every live control socket; returns how many.
    pub fn send_ping(&self, text: &str) -> usize {
        let mut n = 0;
        for (_, s) in lock(&self.inner.controls).iter() {
            let mut s = s;
            if s.write_all(format!("PING {text}\n").as_bytes()).is_ok() {
                n += 1;
            }
        }
        n
    }

    /// Number of live control sockets.
    pub fn live_sessions(&self) -> usize {
        lock(&self.inner.controls).len()
    }

    pub fn connections(&self) -> usize {
        lock(&self.inner.records).connections
    }

    pub fn sessions(&self) -> Vec<SessionRecord> {
        lock(&self.inner.records).sessions.clone()
    }

    /// Every SESSION CREATE line received, answered or not, in order.
    pub fn creates(&self) -> Vec<String> {
        lock(&self.inner.records).creates.clone()
    }

    pub fn wait_creates(&self, n: usize, timeout: Duration) -> bool {
        self.wait(timeout, |r| r.creates.len() >= n)
    }

    pub fn streams(&self) -> Vec<StreamRecord> {
        lock(&self.inner.records).streams.clone()
    }

    /// The full STREAM CONNECT lines received, in order.
    pub fn stream_lines(&self) -> Vec<String> {
        self.streams().into_iter().map(|s| s.line).collect()
    }

    /// The `text` of every `PONG text` received.
    pub fn pongs(&self) -> Vec<String> {
        lock(&self.inner.records).pongs.clone()
    }

    pub fn sinks(&self) -> Vec<SinkRecord> {
        lock(&self.inner.records).sinks.clone()
    }

    /// Lines that were neither HELLO, SESSION CREATE, STREAM CONNECT nor PONG.
    pub fn other_lines(&self) -> Vec<String> {
        lock(&self.inner.records).other_lines.clone()
    }

    /// Every byte received on connection `conn` (capped at [`MAX_LOG_PER_CONN`]).
    pub fn received(&self, conn: usize) -> Vec<u8> {
        lock(&self.inner.records).logs.get(conn).map(|l| l.bytes.clone()).unwrap_or_default()
    }

    /// Exact count of bytes received on connection `conn`.
    pub fn received_count(&self, conn: usize) -> usize {
        lock(&self.inner.records).logs.get(conn).map_or(0, |l| l.total)
    }

    /// Whether connection `conn` has ended.
    pub fn conn_closed(&self, conn: usize) -> bool {
        lock(&self.inner.records).logs.get(conn).is_some_and(|l| l.closed)
    }

    /// When connection `conn` ended (seen by the fake), if it has.
    pub fn closed_at(&self, conn: usize) -> Option<Instant> {
        lock(&self.inner.records).logs.get(conn).and_then(|l| l.closed_at)
    }

    /// When a peer of connection `conn` read the proxy's FIN: the echo
    /// answers it with its own at once, so the client's EOF can come before
    /// [`FakeSam::closed_at`] is recorded, never before this.
    pub fn eof_at(&self, conn: usize) -> Option<Instant> {
        lock(&self.inner.records).logs.get(conn).and_then(|l| l.eof_at)
    }

    /// Every `DEST GENERATE` answered.
    pub fn dests(&self) -> Vec<DestRecord> {
        lock(&self.inner.records).dests.clone()
    }

    /// Everything received on every connection, concatenated per connection.
    pub fn all_received(&self) -> Vec<Vec<u8>> {
        lock(&self.inner.records).logs.iter().map(|l| l.bytes.clone()).collect()
    }

    /// Wait until `pred` holds over the records, or `timeout` passes.
    fn wait(&self, timeout: Duration, pred: impl Fn(&Records) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut r = lock(&self.inner.records);
        loop {
            if pred(&r) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            r = match self.inner.changed.wait_timeout(r, (deadline - now).min(POLL)) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// Control connection of DATAGRAM session number `n` has ended.
    pub fn dg_session_closed(&self, n: usize) -> bool {
        self.dg_sessions().get(n).is_some_and(|d| self.conn_closed(d.conn))
    }

    /// Wait for at least `n` SESSION CREATEs to have been answered OK.
    pub fn wait_sessions(&self, n: usize, timeout: Duration) -> bool {
        self.wait(timeout, |r| r.sessions.len() >= n)
    }

    pub fn wait_streams(&self, n: usize, timeout: Duration) -> bool {
        self.wait(timeout, |r| r.streams.len() >= n)
    }

    pub fn wait_connections(&self, n: usize, timeout: Duration) -> bool {
        self.wait(timeout, |r| r.connections >= n)
    }

    pub fn wait_pong(&self, text: &str, timeout: Duration) -> bool {
        self.wait(timeout, |r| r.pongs.iter().any(|p| p == text))
    }

    pub fn wait_sinks(&self, n: usize, timeout: Duration) -> bool {
        self.wait(timeout, |r| r.sinks.len() >= n)
    }

    pub fn wait_closed(&self, conn: usize, timeout: Duration) -> bool {
        self.wait(timeout, |r| r.logs.get(conn).is_some_and(|l| l.closed))
    }

    /// Wait until the proxy has a live control socket (a session is up)
    /// whose [`SessionRecord`] is in [`FakeSam::sessions`] (the socket is
    /// registered just before the reply, the record just after it).
    pub fn wait_live_session(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let live: Vec<usize> = lock(&self.inner.controls).iter().map(|(c, _)| *c).collect();
            if lock(&self.inner.records).sessions.iter().any(|r| live.contains(&r.conn)) {
                return true;
            }
            thread::sleep(Duration::from_millis(10));
        }
        false
    }
}

impl Drop for FakeSam {
    fn drop(&mut self) {
        self.inner.dropping.store(true, Ordering::SeqCst);
        self.stop();
        for (_, s) in lock(&self.inner.live).drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
        let deadline = Instant::now() + DROP_JOIN;
        while self.inner.threads.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
        }
    }
}

fn accept_loop(listener: TcpListener, stop: Arc<AtomicBool>, inner: Arc<Inner>) {
    while !stop.load(Ordering::SeqCst) && !inner.dropping.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((s, _)) => {
                let conn = {
                    let mut r = lock(&inner.records);
                    r.connections += 1;
                    r.logs.push(ConnLog::default());
                    inner.changed.notify_all();
                    r.logs.len() - 1
                };
                let _ = s.set_nonblocking(false);
                let _ = s.set_nodelay(true);
                let _ = s.set_write_timeout(Some(WRITE_TIMEOUT));
                if let Ok(c) = s.try_clone() {
                    lock(&inner.live).push((conn, c));
                }
                let inner2 = Arc::clone(&inner);
                inner.threads.fetch_add(1, Ordering::SeqCst);
                let spawned = thread::Builder::new().name(format!("fake-sam-{conn}")).spawn(move || {
                    serve(Conn { s, conn, buf: Vec::new(), inner: Arc::clone(&inner2) });
                    let mut r = lock(&inner2.records);
                    if let Some(l) = r.logs.get_mut(conn) {
                        l.closed = true;
                        l.closed_at = Some(Instant::now());
                    }
                    inner2.changed.notify_all();
                    drop(r);
                    lock(&inner2.live).retain(|(c, _)| *c != conn);
                    lock(&inner2.controls).retain(|(c, _)| *c != conn);
                    inner2.threads.fetch_sub(1, Ordering::SeqCst);
                });
                if spawned.is_err() {
                    inner.threads.fetch_sub(1, Ordering::SeqCst);
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => {
                eprintln!("fake_sam: accept: {e}");
                thread::sleep(POLL);
            }
        }
    }
}

/// One accepted connection: the socket, bytes read past the last line.
struct Conn {
    s: TcpStream,
    conn: usize,
    buf: Vec<u8>,
    inner: Arc<Inner>,
}

enum Got {
    Data(usize),
    Eof,
}

impl Conn {
    fn dropping(&self) -> bool {
        self.inner.dropping.load(Ordering::SeqCst)
    }

    /// One read (polling the drop flag); logs what arrived.
    fn read_some(&mut self, out: &mut [u8]) -> Got {
        let _ = self.s.set_read_timeout(Some(POLL));
        loop {
            if self.dropping() {
                return Got::Eof;
            }
            match self.s.read(out) {
                Ok(0) => {
                    if let Some(l) = lock(&self.inner.records).logs.get_mut(self.conn) {
                        l.eof_at.get_or_insert_with(Instant::now);
                    }
                    return Got::Eof;
                }
                Ok(n) => {
                    let mut r = lock(&self.inner.records);
                    if let Some(l) = r.logs.get_mut(self.conn) {
                        l.total += n;
                        let cap = self.inner.log_limit.load(Ordering::Relaxed);
                        let room = cap.saturating_sub(l.bytes.len());
                        l.bytes.extend_from_slice(&out[..n.min(room)]);
                    }
                    return Got::Data(n);
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) => {}
                Err(_) => return Got::Eof,
            }
        }
    }

    /// The next `\n`-terminated line (without `\n` or a `\r` before it);
    /// None on EOF or a line over [`MAX_LINE`]. Bytes after it stay in `buf`.
    fn read_line(&mut self) -> Option<String> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return Some(String::from_utf8_lossy(&line).into_owned());
            }
            if self.buf.len() > MAX_LINE {
                return None;
            }
            match self.read_some(&mut chunk) {
                Got::Data(n) => self.buf.extend_from_slice(&chunk[..n]),
                Got::Eof => return None,
            }
        }
    }

    fn send(&mut self, data: &[u8]) -> bool {
        self.s.write_all(data).is_ok()
    }

    fn send_line(&mut self, line: &str) -> bool {
        self.send(format!("{line}\n").as_bytes())
    }

    /// Read and discard until EOF (or drop).
    fn hang(&mut self) {
        let mut chunk = [0u8; 4096];
        while let Got::Data(_) = self.read_some(&mut chunk) {}
    }

    fn sleep(&self, d: Duration) {
        let end = Instant::now() + d;
        while Instant::now() < end && !self.dropping() {
            thread::sleep(POLL.min(end.saturating_duration_since(Instant::now())));
        }
    }

    fn script(&self) -> Script {
        lock(&self.inner.script).clone()
    }

    fn record(&self, f: impl FnOnce(&mut Records)) {
        let mut r = lock(&self.inner.records);
        f(&mut r);
        self.inner.changed.notify_all();
    }
}

fn serve(mut c: Conn) {
    let script = c.script();
    match script.fault {
        Some(Fault::CloseOnAccept) => {
            let _ = c.s.shutdown(Shutdown::Both);
            return;
        }
        Some(f) => {
            if c.read_line().is_none() {
                return;
            }
            match f {
                Fault::HangHello => c.hang(),
                Fault::GarbageHello => {
                    c.send_line("WHAT IS THIS \u{1}\u{2} =====");
                    c.hang();
                }
                Fault::CloseAfterHello => {
                    c.send_line("HELLO REPLY RESULT=OK VERSION=3.2");
                    let _ = c.s.shutdown(Shutdown::Both);
                }
                _ => {
                    c.send(&vec![b'A'; HUGE_LINE]);
                    c.hang();
                }
            }
            return;
        }
        None => {}
    }
    let Some(hello) = c.read_line() else { return };
    if !hello.starts_with("HELLO VERSION") {
        c.record(|r| r.other_lines.push(hello));
        c.send_line("HELLO REPLY RESULT=I2P_ERROR MESSAGE=\"expected HELLO\"");
        return;
    }
    if let Some(res) = &script.hello_result {
        c.send_line(&format!("HELLO REPLY RESULT={res}"));
        return;
    }
    if !c.send_line(&format!("HELLO REPLY RESULT=OK VERSION={}", script.version)) {
        return;
    }
    let Some(line) = c.read_line() else { return };
    if line.starts_with("SESSION CREATE ") {
        session(c, line);
    } else if line.starts_with("STREAM CONNECT ") {
        stream(c, line);
    } else if line.starts_with("DEST GENERATE") {
        dest_generate(c, line);
    } else {
        c.record(|r| r.other_lines.push(line));
        c.send_line("SESSION STATUS RESULT=I2P_ERROR MESSAGE=\"fake: unsupported\"");
    }
}

fn session(mut c: Conn, line: String) {
    let script = c.script();
    c.record(|r| r.creates.push(line.clone()));
    let datagram = param(&line, "STYLE") == Some("DATAGRAM");
    c.sleep(match script.dg_session_delay {
        Some(d) if datagram => d,
        _ => script.session_delay,
    });
    if let Some(res) = &script.session_result {
        c.send_line(&format!("SESSION STATUS RESULT={res} MESSAGE=\"fake refusal\""));
        return;
    }
    let types = param(&line, "i2cp.leaseSetEncType").unwrap_or_default();
    if script.refuse_enc_type.as_deref().is_some_and(|t| types.split(',').any(|x| x == t)) {
        c.send_line("SESSION STATUS RESULT=I2P_ERROR MESSAGE=\"fake: unsupported crypto type\"");
        return;
    }
    let id = param(&line, "ID").unwrap_or_default().to_string();
    let given = param(&line, "DESTINATION").filter(|d| *d != "TRANSIENT");
    let (private_key, b32) = match given {
        Some(key) if script.keep_given_keys => match b64_decode(key).and_then(|blob| b32_of_blob(&blob)) {
            Some(b32) => (key.to_string(), b32),
            None => {
                c.send_line("SESSION STATUS RESULT=INVALID_KEY MESSAGE=\"fake: bad key\"");
                return;
            }
        },
        _ => make_key(KEY_SEQ.fetch_add(1, Ordering::SeqCst)),
    };
    // Record the control socket before answering, so a test that saw the
    // reply's effects can already kill or ping it.
    if let Ok(clone) = c.s.try_clone() {
        lock(&c.inner.controls).push((c.conn, clone));
    }
    let forward = datagram.then(|| {
        let host = param(&line, "HOST").unwrap_or("127.0.0.1");
        let port = param(&line, "PORT").unwrap_or("0");
        format!("{host}:{port}").parse::<SocketAddr>().expect("PORT/HOST of a DATAGRAM session")
    });
    let dg = forward.map(|forward| DgSessionRecord { id: id.clone(), forward, conn: c.conn });
    // Likewise the session itself: a test that saw the proxy log it ready
    // must find it here.
    let rec = SessionRecord { line, id, private_key: private_key.clone(), b32, conn: c.conn };
    c.record(|r| {
        r.sessions.push(rec);
        r.dg_sessions.extend(dg);
    });
    if !c.send_line(&format!("SESSION STATUS RESULT=OK DESTINATION={private_key}")) {
        return;
    }
    // Hold the control socket: answer NAMING LOOKUP, record PONGs, ignore
    // anything else.
    while let Some(l) = c.read_line() {
        if let Some(name) = l.strip_prefix("NAMING LOOKUP ").and_then(|r| param(r, "NAME")) {
            let name = name.to_string();
            let script = c.script();
            let conn = c.conn;
            c.record(|r| r.lookups.push((conn, name.clone())));
            let reply = match (script.names.get(&name), script.lookup_miss) {
                (Some(v), _) => format!("NAMING REPLY RESULT=OK NAME={name} VALUE={v}"),
                (None, Some(miss)) => format!("NAMING REPLY RESULT={miss} NAME={name}"),
                (None, None) => continue,
            };
            if !c.send_line(&reply) {
                return;
            }
        } else if let Some(text) = l.strip_prefix("PONG") {
            let text = text.strip_prefix(' ').unwrap_or(text).to_string();
            c.record(|r| r.pongs.push(text));
        } else {
            c.record(|r| r.other_lines.push(l));
        }
    }
}

/// `DEST GENERATE ...` → `DEST REPLY PUB=<b64> PRIV=<b64>`, then wait
/// for the client to close.
fn dest_generate(mut c: Conn, line: String) {
    let (private_key, b32) = make_key(KEY_SEQ.fetch_add(1, Ordering::SeqCst));
    let blob = b64_decode(&private_key).unwrap();
    let public = b64_encode(&blob[..PUBLIC_LEN]);
    let rec = DestRecord { line, private_key: private_key.clone(), public: public.clone(), b32 };
    if c.send_line(&format!("DEST REPLY PUB={public} PRIV={private_key}")) {
        c.record(|r| r.dests.push(rec));
        c.hang();
    }
}

fn stream(mut c: Conn, line: String) {
    let dest = param(&line, "DESTINATION").unwrap_or_default().to_string();
    c.record(|r| r.streams.push(StreamRecord { line, conn: c.conn }));
    let script = c.script();
    let mut outcome = script.outcomes.get(&dest).cloned().unwrap_or(script.default_outcome);
    while let Outcome::Delayed(d, next) = outcome {
        c.sleep(d);
        outcome = *next;
    }
    match outcome {
        Outcome::Ok(peer) => {
            if c.send_line("STREAM STATUS RESULT=OK") {
                run_peer(c, peer);
            }
        }
        Outcome::Fail(result, message) => {
            let line = match message {
                Some(m) => format!("STREAM STATUS RESULT={result} MESSAGE=\"{m}\""),
                None => format!("STREAM STATUS RESULT={result}"),
            };
            c.send_line(&line);
            let _ = c.s.shutdown(Shutdown::Write);
            c.hang();
        }
        Outcome::Hang => c.hang(),
        Outcome::Garbage => {
            c.send_line("\u{7f}\u{7f} garbage reply");
            c.hang();
        }
        Outcome::HugeLine => {
            c.send(&vec![b'B'; HUGE_LINE]);
            c.hang();
        }
        Outcome::Close => {
            let _ = c.s.shutdown(Shutdown::Both);
        }
        Outcome::Unterminated(result) => {
            c.send(format!("STREAM STATUS RESULT={result}").as_bytes());
            let _ = c.s.shutdown(Shutdown::Both);
        }
        Outcome::Delayed(..) => unreachable!(),
    }
}

fn run_peer(mut c: Conn, peer: Peer) {
    let mut chunk = vec![0u8; 64 * 1024];
    match peer {
        Peer::Echo => {
            let surplus = std::mem::take(&mut c.buf);
            if !surplus.is_empty() && !c.send(&surplus) {
                return;
            }
            while let Got::Data(n) = c.read_some(&mut chunk) {
                let data = chunk[..n].to_vec();
                if !c.send(&data) {
                    return;
                }
            }
            let _ = c.s.shutdown(Shutdown::Write);
        }
        Peer::Sink => {
            let mut h = Sha256::new();
            let surplus = std::mem::take(&mut c.buf);
            h.update(&surplus);
            let mut count = surplus.len();
            while let Got::Data(n) = c.read_some(&mut chunk) {
                h.update(&chunk[..n]);
                count += n;
            }
            let rec = SinkRecord { conn: c.conn, count, sha256: h.finalize().into() };
            c.record(|r| r.sinks.push(rec));
            let _ = c.s.shutdown(Shutdown::Both);
        }
        Peer::Source(n) => {
            if c.send(&pattern(n)) {
                let _ = c.s.shutdown(Shutdown::Write);
                // Let the proxy read everything before the socket goes.
                c.hang();
            }
        }
        Peer::Hang => c.hang(),
        Peer::Drip { count, size, gap } => {
            for piece in pattern(count * size).chunks(size.max(1)) {
                c.sleep(gap);
                if c.dropping() || !c.send(piece) {
                    return;
                }
            }
            c.hang();
        }
    }
}

/// The UDP side: record `3.0 <id> <dest>\n` + payload; echo if scripted.
fn udp_loop(inner: &Inner) {
    let mut buf = vec![0u8; 65536];
    while !inner.dropping.load(Ordering::SeqCst) {
        let (n, from) = match inner.udp.recv_from(&mut buf) {
            Ok(x) => x,
            Err(_) => continue,
        };
        let d = &buf[..n];
        let Some(nl) = d.iter().position(|&b| b == b'\n') else { continue };
        let header = String::from_utf8_lossy(&d[..nl]).into_owned();
        let payload = d[nl + 1..].to_vec();
        let mut words = header.split(' ');
        let (_, id, dest) =
            (words.next(), words.next().unwrap_or_default(), words.next().unwrap_or_default());
        let rec = DatagramRecord { header: header.clone(), id: id.into(), dest: dest.into(), payload, from };
        let script = lock(&inner.script).clone();
        let forward = {
            let mut r = lock(&inner.records);
            r.datagrams.push(rec.clone());
            inner.changed.notify_all();
            r.dg_sessions.iter().find(|s| s.id == rec.id).map(|s| s.forward)
        };
        if let (true, Some(to)) = (script.datagram_echo, forward) {
            let mut out = match script.echo_from_port {
                Some(p) => format!("{} FROM_PORT={p} TO_PORT=0\n", rec.dest),
                None => format!("{}\n", rec.dest),
            }
            .into_bytes();
            out.extend_from_slice(&rec.payload);
            let _ = inner.udp.send_to(&out, to);
        }
    }
}
