//! SOCKS5 UDP ASSOCIATE (RFC 1928 §7) over SAM repliable datagrams.
//!
//! The SOCKS UDP request header (`RSV RSV FRAG ATYP DST.ADDR DST.PORT
//! DATA`) is encoded and decoded here by pure functions. Around them: the
//! association (one per UDP ASSOCIATE, living exactly as long as its TCP
//! control connection) and the registry of datagram sessions, one per
//! identity (the `identity::Key` of the client's credentials), made on the
//! first association of that identity and closed after
//! `--session-idle-timeout` without one.
//!
//! Client → I2P: a datagram from the client's address with ATYP=3 and a
//! valid `.i2p`/`.b32.i2p` name is queued on the identity's session, which
//! resolves the name and sends it. DST.PORT is not carried (i2pd cannot
//! take ports on the send line). Everything else is dropped and counted:
//! another source, FRAG≠0 (fragmentation is optional and not done), IP
//! addresses and clearnet names, payloads over
//! [`MAX_PAYLOAD`](crate::sam::datagram::MAX_PAYLOAD), a full queue.
//! I2P → client: the session's datagrams go to the associations that sent
//! to that peer, or to every association of the identity if none did,
//! wrapped with ATYP=3, DST.ADDR = the sender's `.b32.i2p` and DST.PORT =
//! its FROM_PORT (0 when the router gives none).
//!
//! Nothing here blocks a TCP relay: each association runs in its own
//! worker, each session in its own threads, and every queue is bounded.
//! Not here: the SAM framing and name cache (`sam::datagram`).

use crate::error::Error;
use crate::i2p_addr;
use crate::identity::Key;
use crate::sam::client::CreateError;
use crate::sam::datagram::{DatagramSession, DgSpec, Dropped, Forwarded, Origin, SendError};
use crate::server::{self, Shared};
use crate::socks::{Addr, Rep, Request};
use log::{debug, warn};
use mio::net::{TcpStream as MioStream, UdpSocket as MioUdp};
use mio::{Events, Interest, Poll, Token};
use std::collections::HashMap;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread;
use std::time::{Duration, Instant};

pub use crate::sam::datagram::{MAX_PAYLOAD, RECOMMENDED_PAYLOAD};

/// RSV(2) FRAG(1) ATYP(1), the fixed start of the header.
const FIXED: usize = 4;
/// The longest header: a 255-byte domain.
pub const MAX_HEADER: usize = FIXED + 1 + 255 + 2;
/// Receive buffer of a relay socket: the largest UDP datagram.
pub const RELAY_BUF: usize = 64 * 1024;
/// Datagrams taken from the client per turn before the control socket and
/// the checks get theirs.
const TURN_DATAGRAMS: usize = 64;
/// Longest wait in `poll`: how often stop, the session and idleness are seen.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(250);
/// Peers remembered per association, to route replies to who asked.
pub const MAX_PEERS: usize = 256;
/// At most one debug line about dropped datagrams per association per this.
pub const DROP_LOG_INTERVAL: Duration = Duration::from_secs(1);
/// How often idle datagram sessions are looked for.
pub const REAP_INTERVAL: Duration = Duration::from_secs(1);
/// Bytes read at once from the control connection (and thrown away: the
/// client has nothing to say on it after the request).
const CONTROL_BUF: usize = 512;
/// Deadline for writing the reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

const ATYP_IPV4: u8 = 1;
const ATYP_DOMAIN: u8 = 3;
const ATYP_IPV6: u8 = 4;

// ------------------------------------------------------------ the header codec

/// DST.ADDR as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dst<'a> {
    Ipv4([u8; 4]),
    Ipv6([u8; 16]),
    /// 1..=255 raw bytes, not validated.
    Domain(&'a [u8]),
}

/// A decoded SOCKS UDP datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram<'a> {
    pub dst: Dst<'a>,
    pub port: u16,
    pub data: &'a [u8],
}

/// Why a datagram from the client was dropped before its target was looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// Ends inside the header.
    Truncated,
    /// RSV is not `00 00`.
    Reserved,
    /// FRAG≠0: a fragment (RFC 1928 lets us drop them).
    Fragmented(u8),
    /// ATYP other than 1, 3, 4.
    BadAtyp(u8),
    /// ATYP=3 with length 0.
    EmptyDomain,
    /// DATA over [`MAX_PAYLOAD`].
    TooLarge,
}

/// Decode `RSV RSV FRAG ATYP DST.ADDR DST.PORT DATA`.
pub fn decode(buf: &[u8]) -> Result<Datagram<'_>, HeaderError> {
    let (fixed, rest) = split(buf, FIXED)?;
    let &[r0, r1, frag, atyp] = fixed else {
        return Err(HeaderError::Truncated);
    };
    if r0 != 0 || r1 != 0 {
        return Err(HeaderError::Reserved);
    }
    if frag != 0 {
        return Err(HeaderError::Fragmented(frag));
    }
    let (dst, rest) = match atyp {
        ATYP_IPV4 => {
            let (a, rest) = split(rest, 4)?;
            (Dst::Ipv4(a.try_into().map_err(|_| HeaderError::Truncated)?), rest)
        }
        ATYP_IPV6 => {
            let (a, rest) = split(rest, 16)?;
            (Dst::Ipv6(a.try_into().map_err(|_| HeaderError::Truncated)?), rest)
        }
        ATYP_DOMAIN => {
            let (&len, rest) = rest.split_first().ok_or(HeaderError::Truncated)?;
            if len == 0 {
                return Err(HeaderError::EmptyDomain);
            }
            let (name, rest) = split(rest, usize::from(len))?;
            (Dst::Domain(name), rest)
        }
        other => return Err(HeaderError::BadAtyp(other)),
    };
    let (p, data) = split(rest, 2)?;
    let port = match p {
        &[hi, lo] => u16::from_be_bytes([hi, lo]),
        _ => return Err(HeaderError::Truncated),
    };
    if data.len() > MAX_PAYLOAD {
        return Err(HeaderError::TooLarge);
    }
    Ok(Datagram { dst, port, data })
}

fn split(buf: &[u8], n: usize) -> Result<(&[u8], &[u8]), HeaderError> {
    if buf.len() < n {
        return Err(HeaderError::Truncated);
    }
    Ok(buf.split_at(n))
}

/// `00 00 00 03 LEN host PORT data`; None if `host` is empty or over 255
/// bytes, or `data` over [`MAX_PAYLOAD`].
pub fn encode_domain(host: &[u8], port: u16, data: &[u8]) -> Option<Vec<u8>> {
    let len = u8::try_from(host.len()).ok().filter(|&l| l > 0)?;
    if data.len() > MAX_PAYLOAD {
        return None;
    }
    let mut out = Vec::with_capacity(FIXED + 1 + host.len() + 2 + data.len());
    out.extend_from_slice(&[0, 0, 0, ATYP_DOMAIN, len]);
    out.extend_from_slice(host);
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(data);
    Some(out)
}

/// The success reply to UDP ASSOCIATE: BND = the relay socket's address.
pub fn associate_reply(bnd: SocketAddr) -> Vec<u8> {
    let mut out = vec![5, Rep::Succeeded as u8, 0];
    match bnd.ip() {
        IpAddr::V4(ip) => {
            out.push(ATYP_IPV4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(ATYP_IPV6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&bnd.port().to_be_bytes());
    out
}

// ------------------------------------------------------------ per-association state

/// Counters of one association (debug log at its end).
#[derive(Debug, Default)]
pub struct Stats {
    pub from_client: AtomicU64,
    pub to_i2p: AtomicU64,
    pub to_client: AtomicU64,
    pub foreign: AtomicU64,
    pub malformed: AtomicU64,
    pub fragmented: AtomicU64,
    pub not_i2p: AtomicU64,
    pub too_large: AtomicU64,
    pub queue_full: AtomicU64,
    pub unresolved: AtomicU64,
    pub send_failed: AtomicU64,
    pub to_client_failed: AtomicU64,
    pub no_client_yet: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

impl Stats {
    fn dropped(&self) -> u64 {
        [
            &self.foreign,
            &self.malformed,
            &self.fragmented,
            &self.not_i2p,
            &self.too_large,
            &self.queue_full,
            &self.unresolved,
            &self.send_failed,
            &self.to_client_failed,
            &self.no_client_yet,
        ]
        .iter()
        .map(|c| get(c))
        .sum()
    }
}

/// What the session's receiving thread needs of an association.
struct Link {
    /// A handle on the relay socket (non-blocking: a slow client loses
    /// datagrams, it never stalls the session).
    relay: UdpSocket,
    /// Where the client receives: known from the request or its first datagram.
    client: Mutex<Option<SocketAddr>>,
    /// `.b32.i2p` addresses this association sent to, with the last time.
    peers: Mutex<HashMap<String, Instant>>,
    stats: Stats,
    /// Milliseconds after `born` of the last datagram either way.
    active_ms: AtomicU64,
    born: Instant,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Link {
    fn touch(&self) {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.active_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let last = Duration::from_millis(self.active_ms.load(Ordering::Relaxed));
        self.born.elapsed().saturating_sub(last)
    }

    fn knows(&self, b32: &str) -> bool {
        lock(&self.peers).contains_key(b32)
    }

    fn deliver(&self, frame: &[u8]) {
        let Some(to) = *lock(&self.client) else {
            bump(&self.stats.no_client_yet);
            return;
        };
        match self.relay.send_to(frame, to) {
            Ok(_) => {
                bump(&self.stats.to_client);
                self.touch();
            }
            Err(_) => bump(&self.stats.to_client_failed),
        }
    }
}

impl Origin for Link {
    fn sending(&self, b32: &str) {
        bump(&self.stats.to_i2p);
        let now = Instant::now();
        let mut peers = lock(&self.peers);
        if !peers.contains_key(b32) && peers.len() >= MAX_PEERS {
            let oldest = peers.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                peers.remove(&k);
            }
        }
        peers.insert(b32.to_string(), now);
    }

    fn dropped(&self, why: Dropped) {
        match why {
            Dropped::Unresolved => bump(&self.stats.unresolved),
            Dropped::SendFailed => {
                // It was counted as sent in `sending`.
                self.stats.to_i2p.fetch_sub(1, Ordering::Relaxed);
                bump(&self.stats.send_failed);
            }
        }
    }
}

// ------------------------------------------------------------ the session registry

enum SlotState {
    Starting,
    Ready(Arc<DatagramSession>),
    Failed,
}

/// One identity's datagram session and the associations using it.
struct Slot {
    key: Key,
    state: Mutex<SlotState>,
    ready: Condvar,
    members: Mutex<Members>,
    /// Datagrams from I2P that no association could take.
    undelivered: AtomicU64,
}

struct Members {
    links: Vec<Arc<Link>>,
    last_used: Instant,
}

impl Slot {
    /// Failed, or its session died.
    fn is_dead(&self) -> bool {
        match &*lock(&self.state) {
            SlotState::Starting => false,
            SlotState::Ready(s) => !s.is_alive(),
            SlotState::Failed => true,
        }
    }

    fn is_starting(&self) -> bool {
        matches!(*lock(&self.state), SlotState::Starting)
    }

    fn close(&self) {
        if let SlotState::Ready(s) = &*lock(&self.state) {
            s.close();
        }
    }

    fn set(&self, st: SlotState) {
        *lock(&self.state) = st;
        self.ready.notify_all();
    }

    /// Wait while another association creates the session.
    fn wait(&self, deadline: Instant) -> Result<Arc<DatagramSession>, Error> {
        let mut st = lock(&self.state);
        loop {
            match &*st {
                SlotState::Ready(s) => return Ok(Arc::clone(s)),
                SlotState::Failed => return Err(Error::SessionDown),
                SlotState::Starting => {}
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::ConnectTimeout);
            }
            st = match self.ready.wait_timeout(st, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// A datagram from I2P: to the associations that sent to its sender,
    /// else to all of this identity's.
    fn route(&self, f: Forwarded<'_>) {
        let Some(frame) = encode_domain(f.b32.as_bytes(), f.from_port.unwrap_or(0), f.payload) else {
            bump(&self.undelivered);
            return;
        };
        let links: Vec<Arc<Link>> = lock(&self.members).links.clone();
        let asked: Vec<&Arc<Link>> = links.iter().filter(|l| l.knows(&f.b32)).collect();
        let targets: Vec<&Arc<Link>> = if asked.is_empty() { links.iter().collect() } else { asked };
        if targets.is_empty() {
            bump(&self.undelivered);
        }
        for l in targets {
            l.deliver(&frame);
        }
    }
}

/// Every identity's datagram session.
pub struct Udp {
    spec: DgSpec,
    max_sessions: usize,
    /// Zero: never close idle sessions.
    idle_timeout: Duration,
    slots: Mutex<HashMap<Key, Arc<Slot>>>,
    seq: AtomicU64,
}

impl Udp {
    /// The registry (empty: sessions are made on first use) and its reaper.
    pub fn start(spec: DgSpec, max_sessions: usize, idle_timeout: Duration) -> io::Result<Arc<Udp>> {
        let udp = Arc::new(Udp {
            spec,
            max_sessions: max_sessions.max(1),
            idle_timeout,
            slots: Mutex::new(HashMap::new()),
            seq: AtomicU64::new(1),
        });
        let me = Arc::downgrade(&udp);
        thread::Builder::new().name("udp-reaper".into()).spawn(move || loop {
            thread::sleep(REAP_INTERVAL);
            match me.upgrade() {
                Some(u) => {
                    u.reap(Instant::now());
                }
                None => return,
            }
        })?;
        Ok(udp)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Key, Arc<Slot>>> {
        lock(&self.slots)
    }

    /// The live session of `key`, made now if needed (or waited for while
    /// another association makes it), by `deadline`.
    fn acquire(&self, key: Key, deadline: Instant) -> Result<(Arc<Slot>, Arc<DatagramSession>), Error> {
        let (slot, create) = {
            let mut slots = self.lock();
            match slots.get(&key) {
                Some(s) if !s.is_dead() => (Arc::clone(s), false),
                _ => {
                    if let Some(old) = slots.remove(&key) {
                        old.close();
                    }
                    if slots.len() >= self.max_sessions {
                        self.evict_one(&mut slots)?;
                    }
                    let slot = Arc::new(Slot {
                        key: key.clone(),
                        state: Mutex::new(SlotState::Starting),
                        ready: Condvar::new(),
                        members: Mutex::new(Members { links: Vec::new(), last_used: Instant::now() }),
                        undelivered: AtomicU64::new(0),
                    });
                    slots.insert(key, Arc::clone(&slot));
                    (slot, true)
                }
            }
        };
        if !create {
            let s = slot.wait(deadline)?;
            return Ok((slot, s));
        }
        let label = format!("datagram session #{}", self.seq.fetch_add(1, Ordering::Relaxed));
        let weak: Weak<Slot> = Arc::downgrade(&slot);
        let sink = Box::new(move |f: Forwarded<'_>| {
            if let Some(s) = weak.upgrade() {
                s.route(f);
            }
        });
        match DatagramSession::open(&self.spec, &label, sink, deadline) {
            Ok(s) => {
                let s = Arc::new(s);
                slot.set(SlotState::Ready(Arc::clone(&s)));
                Ok((slot, s))
            }
            Err(e) => {
                warn!("{label}: cannot create a SAM datagram session at {}: {e}", self.spec.sam);
                slot.set(SlotState::Failed);
                let mut slots = self.lock();
                if slots.get(&slot.key).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                    slots.remove(&slot.key);
                }
                Err(match e {
                    CreateError::Io(e) if e.kind() == ErrorKind::TimedOut => Error::ConnectTimeout,
                    _ => Error::SamUnreachable,
                })
            }
        }
    }

    /// At the session cap: close the least recently used idle session.
    fn evict_one(&self, slots: &mut HashMap<Key, Arc<Slot>>) -> Result<(), Error> {
        let victim = slots
            .values()
            .filter(|s| !s.is_starting())
            .filter_map(|s| {
                let m = lock(&s.members);
                m.links.is_empty().then_some((m.last_used, s.key.clone()))
            })
            .min_by_key(|(t, _)| *t)
            .map(|(_, k)| k);
        match victim.and_then(|k| slots.remove(&k)) {
            Some(old) => {
                debug!("--max-sessions reached: closing the least recently used idle datagram session");
                old.close();
                Ok(())
            }
            None => {
                warn!("too many datagram sessions (--max-sessions {}): refusing UDP", self.max_sessions);
                Err(Error::Overloaded)
            }
        }
    }

    fn join(slot: &Slot, link: &Arc<Link>) {
        let mut m = lock(&slot.members);
        m.links.push(Arc::clone(link));
        m.last_used = Instant::now();
    }

    /// An association ended. A connection's own identity (`--isolate
    /// client`) is never used again: its session goes at once.
    fn leave(&self, slot: &Arc<Slot>, link: &Arc<Link>) {
        let empty = {
            let mut m = lock(&slot.members);
            m.links.retain(|l| !Arc::ptr_eq(l, link));
            m.last_used = Instant::now();
            m.links.is_empty()
        };
        if empty && matches!(slot.key, Key::Client(_)) {
            let mut slots = self.lock();
            if slots.get(&slot.key).is_some_and(|s| Arc::ptr_eq(s, slot)) {
                slots.remove(&slot.key);
            }
            drop(slots);
            slot.close();
        }
    }

    /// Close dead sessions, and those idle for the idle timeout. Returns
    /// how many were closed.
    pub fn reap(&self, now: Instant) -> usize {
        let mut slots = self.lock();
        let gone: Vec<Key> = slots
            .values()
            .filter(|s| {
                if s.is_dead() {
                    return true;
                }
                if self.idle_timeout.is_zero() || s.is_starting() {
                    return false;
                }
                let m = lock(&s.members);
                m.links.is_empty() && now.saturating_duration_since(m.last_used) >= self.idle_timeout
            })
            .map(|s| s.key.clone())
            .collect();
        for k in &gone {
            if let Some(s) = slots.remove(k) {
                let lost = get(&s.undelivered);
                if lost > 0 {
                    debug!("closing a datagram session ({lost} datagrams from I2P had no association)");
                }
                s.close();
            }
        }
        gone.len()
    }

    /// Datagram sessions registered now (tests, logs).
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// Close every session (shutdown).
    pub fn close_all(&self) {
        for (_, s) in self.lock().drain() {
            s.close();
        }
    }
}

// ------------------------------------------------------------ the association

/// Serve a UDP ASSOCIATE whose request `req` was just read from `client`.
/// Replies, relays until the control connection ends, frees everything.
pub fn serve(mut client: TcpStream, req: &Request, shared: &Shared) {
    let peer = match client.peer_addr() {
        Ok(p) => p,
        Err(_) => return,
    };
    let refuse = |mut c: TcpStream, e: Error| {
        debug!("{peer}: UDP ASSOCIATE refused: {e}");
        let _ = write_reply(&mut c, &crate::socks::reply(req.version, e.rep()));
        server::graceful_close(c);
    };
    let Ok(local) = client.local_addr() else {
        return refuse(client, Error::SamUnreachable);
    };
    let key = Key::for_client(shared.config.isolate, &req.credentials, shared.auth.is_some());
    let deadline = Instant::now() + shared.config.connect_timeout;
    let (slot, session) = match shared.udp.acquire(key, deadline) {
        Ok(x) => x,
        Err(e) => return refuse(client, e),
    };
    // The relay listens where the client reached us (the listen address,
    // or the interface it came in on when listening on a wildcard).
    let relay = match UdpSocket::bind((local.ip(), 0)).and_then(|r| {
        r.set_nonblocking(true)?;
        Ok(r)
    }) {
        Ok(r) => r,
        Err(e) => {
            debug!("{peer}: cannot bind a UDP relay: {e}");
            return refuse(client, Error::Overloaded);
        }
    };
    let (bnd, handle) = match (relay.local_addr(), relay.try_clone()) {
        (Ok(b), Ok(h)) => (b, h),
        _ => return refuse(client, Error::Overloaded),
    };
    let expect = Expect::from_request(req, peer);
    let link = Arc::new(Link {
        relay: handle,
        client: Mutex::new(expect.known()),
        peers: Mutex::new(HashMap::new()),
        stats: Stats::default(),
        active_ms: AtomicU64::new(0),
        born: Instant::now(),
    });
    Udp::join(&slot, &link);
    if write_reply(&mut client, &associate_reply(bnd)).is_err() {
        shared.udp.leave(&slot, &link);
        return;
    }
    debug!("{peer}: UDP association on {bnd}");
    let end = Association { session: &session, link: &link, expect, shared, peer, last_drop_log: None }
        .run(client, relay);
    shared.udp.leave(&slot, &link);
    let s = &link.stats;
    debug!(
        "{peer}: UDP association ended ({end}): {} datagrams from the client, {} sent to I2P, \
         {} delivered from I2P, {} dropped (foreign source {}, malformed {}, fragments {}, \
         not I2P {}, too large {}, queue full {}, unresolved {}, send failed {}, \
         delivery failed {}, before the client's port was known {})",
        get(&s.from_client),
        get(&s.to_i2p),
        get(&s.to_client),
        s.dropped(),
        get(&s.foreign),
        get(&s.malformed),
        get(&s.fragmented),
        get(&s.not_i2p),
        get(&s.too_large),
        get(&s.queue_full),
        get(&s.unresolved),
        get(&s.send_failed),
        get(&s.to_client_failed),
        get(&s.no_client_yet),
    );
}

fn write_reply(s: &mut TcpStream, data: &[u8]) -> io::Result<()> {
    s.set_write_timeout(Some(REPLY_TIMEOUT))?;
    s.write_all(data)
}

/// Which source addresses may use the association.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Expect {
    ip: IpAddr,
    /// Fixed by the request, or by the first datagram from `ip`.
    port: Option<u16>,
}

impl Expect {
    /// The request's address and port when given (non-zero), else the
    /// control connection's IP and "the first port we hear from".
    fn from_request(req: &Request, peer: SocketAddr) -> Expect {
        let ip = match &req.addr {
            Addr::Ipv4(a) if *a != [0; 4] => IpAddr::from(*a),
            Addr::Ipv6(a) if *a != [0; 16] => IpAddr::from(*a),
            // A name can't be checked without resolving it, which we never do.
            _ => peer.ip(),
        };
        Expect { ip, port: (req.port != 0).then_some(req.port) }
    }

    fn known(&self) -> Option<SocketAddr> {
        self.port.map(|p| SocketAddr::new(self.ip, p))
    }

    /// Whether `src` may send; learns the port on first use.
    fn admit(&mut self, src: SocketAddr) -> bool {
        if !same_ip(src.ip(), self.ip) {
            return false;
        }
        match self.port {
            Some(p) => p == src.port(),
            None => {
                self.port = Some(src.port());
                true
            }
        }
    }
}

/// Equal, counting an IPv4-mapped IPv6 address as its IPv4 address.
fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    canon(a) == canon(b)
}

/// Why an association ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    ControlClosed,
    ControlError,
    SessionLost,
    Idle,
    Stopped,
    PollFailed,
}

impl std::fmt::Display for End {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            End::ControlClosed => "control connection closed",
            End::ControlError => "control connection failed",
            End::SessionLost => "datagram session lost",
            End::Idle => "idle timeout",
            End::Stopped => "shutting down",
            End::PollFailed => "poll failed",
        })
    }
}

const CONTROL: Token = Token(0);
const RELAY: Token = Token(1);

struct Association<'a> {
    session: &'a DatagramSession,
    link: &'a Arc<Link>,
    expect: Expect,
    shared: &'a Shared,
    peer: SocketAddr,
    last_drop_log: Option<Instant>,
}

impl Association<'_> {
    fn run(mut self, client: TcpStream, relay: UdpSocket) -> End {
        let end = self.relay(client, relay);
        end.unwrap_or(End::PollFailed)
    }

    fn relay(&mut self, client: TcpStream, relay: UdpSocket) -> io::Result<End> {
        client.set_nonblocking(true)?;
        let mut control = MioStream::from_std(client);
        let mut relay = MioUdp::from_std(relay);
        let mut poll = Poll::new()?;
        poll.registry().register(&mut control, CONTROL, Interest::READABLE)?;
        poll.registry().register(&mut relay, RELAY, Interest::READABLE)?;
        let mut events = Events::with_capacity(4);
        let mut buf = vec![0u8; RELAY_BUF];
        let mut sink = [0u8; CONTROL_BUF];
        // Edge-triggered: a turn cut short must be resumed without waiting.
        let mut relay_pending = true;
        let end = loop {
            let wait = if relay_pending { Duration::ZERO } else { CHECK_INTERVAL };
            if let Err(e) = poll.poll(&mut events, Some(wait)) {
                if e.kind() != ErrorKind::Interrupted {
                    break End::PollFailed;
                }
            }
            let mut control_ready = false;
            for ev in events.iter() {
                match ev.token() {
                    CONTROL => control_ready = true,
                    RELAY => relay_pending = true,
                    _ => {}
                }
            }
            if control_ready {
                if let Some(end) = drain_control(&mut control, &mut sink) {
                    break end;
                }
            }
            if relay_pending {
                relay_pending = self.turn(&relay, &mut buf);
            }
            if self.shared.stop.load(Ordering::SeqCst) {
                break End::Stopped;
            }
            if !self.session.is_alive() {
                break End::SessionLost;
            }
            let idle = self.shared.config.idle_timeout;
            if !idle.is_zero() && self.link.idle_for() >= idle {
                break End::Idle;
            }
        };
        let _ = control.shutdown(Shutdown::Both);
        Ok(end)
    }

    /// Up to [`TURN_DATAGRAMS`] datagrams from the client. True if more may wait.
    fn turn(&mut self, relay: &MioUdp, buf: &mut [u8]) -> bool {
        for _ in 0..TURN_DATAGRAMS {
            match relay.recv_from(buf) {
                Ok((n, src)) => self.on_datagram(buf.get(..n).unwrap_or_default(), src),
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                // ICMP errors from earlier sends and the like: not fatal.
                Err(_) => return true,
            }
        }
        true
    }

    fn on_datagram(&mut self, dgram: &[u8], src: SocketAddr) {
        let stats = &self.link.stats;
        if !self.expect.admit(src) {
            bump(&stats.foreign);
            return self.log_drop("from a foreign source");
        }
        {
            let mut c = lock(&self.link.client);
            if c.is_none() {
                *c = Some(src);
            }
        }
        bump(&stats.from_client);
        self.link.touch();
        let d = match decode(dgram) {
            Ok(d) => d,
            Err(HeaderError::Fragmented(_)) => {
                bump(&stats.fragmented);
                return self.log_drop("a fragment (FRAG is not 0)");
            }
            Err(HeaderError::TooLarge) => {
                bump(&stats.too_large);
                return self.log_drop("payload over the size limit");
            }
            Err(e) => {
                bump(&stats.malformed);
                debug!("{}: malformed SOCKS UDP header: {e:?}", self.peer);
                return self.log_drop("malformed header");
            }
        };
        let Dst::Domain(host) = d.dst else {
            bump(&stats.not_i2p);
            return self.log_drop("an IP address target");
        };
        let target = match i2p_addr::parse_target(host) {
            Ok(t) => t,
            Err(e) => {
                bump(&stats.not_i2p);
                debug!("{}: datagram target refused: {e:?}", self.peer);
                return self.log_drop("not an I2P target");
            }
        };
        let origin: Arc<dyn Origin> = Arc::clone(self.link) as Arc<dyn Origin>;
        match self.session.send(target.as_str(), d.data.to_vec(), origin) {
            Ok(()) => {}
            Err(SendError::QueueFull) => {
                bump(&stats.queue_full);
                self.log_drop("send queue full");
            }
            Err(SendError::Closed) => bump(&stats.send_failed),
        }
    }

    /// A rate-limited debug line with the running drop count.
    fn log_drop(&mut self, why: &str) {
        let now = Instant::now();
        if self.last_drop_log.is_some_and(|t| now.duration_since(t) < DROP_LOG_INTERVAL) {
            return;
        }
        self.last_drop_log = Some(now);
        debug!("{}: dropped a datagram {why} ({} dropped so far)", self.peer, self.link.stats.dropped());
    }
}

/// Read and discard what the client sends on the control connection; Some
/// when it ended.
fn drain_control(control: &mut MioStream, sink: &mut [u8]) -> Option<End> {
    loop {
        match control.read(sink) {
            Ok(0) => return Some(End::ControlClosed),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Some(End::ControlError),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
    use super::*;
    use crate::socks::{Command, Credentials, Version};

    #[test]
    fn decode_domain_and_ips() {
        let d = decode(b"\x00\x00\x00\x03\x07foo.i2p\x00\x35hello").unwrap();
        assert_eq!(d, Datagram { dst: Dst::Domain(b"foo.i2p"), port: 53, data: b"hello" });
        let d = decode(b"\x00\x00\x00\x01\x0a\x00\x00\x01\x01\xbb").unwrap();
        assert_eq!(d, Datagram { dst: Dst::Ipv4([10, 0, 0, 1]), port: 443, data: b"" });
        let mut v6 = b"\x00\x00\x00\x04".to_vec();
        v6.extend_from_slice(&[0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        v6.extend_from_slice(b"\xff\xff\x00\n");
        let d = decode(&v6).unwrap();
        assert_eq!(d.port, 65535);
        assert_eq!(d.data, b"\x00\n");
        assert!(matches!(d.dst, Dst::Ipv6(a) if a[0] == 0x20 && a[15] == 1));
        // A 255-byte name, and a payload of exactly MAX_PAYLOAD.
        let mut long = vec![0, 0, 0, 3, 255];
        long.extend_from_slice(&[b'a'; 255]);
        long.extend_from_slice(&[0, 1]);
        long.extend_from_slice(&vec![7u8; MAX_PAYLOAD]);
        let d = decode(&long).unwrap();
        assert_eq!((d.port, d.data.len()), (1, MAX_PAYLOAD));
    }

    #[test]
    fn decode_every_malformed_form() {
        use HeaderError::*;
        let cases: &[(&[u8], HeaderError)] = &[
            (b"", Truncated),
            (b"\x00", Truncated),
            (b"\x00\x00", Truncated),
            (b"\x00\x00\x00", Truncated),
            (b"\x00\x00\x00\x01", Truncated),
            (b"\x00\x00\x00\x01\x7f\x00\x00", Truncated),
            (b"\x00\x00\x00\x01\x7f\x00\x00\x01", Truncated),
            (b"\x00\x00\x00\x01\x7f\x00\x00\x01\x00", Truncated),
            (b"\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", Truncated),
            (b"\x00\x00\x00\x03", Truncated),
            (b"\x00\x00\x00\x03\x07foo.i2", Truncated),
            (b"\x00\x00\x00\x03\x07foo.i2p", Truncated),
            (b"\x00\x00\x00\x03\x07foo.i2p\x00", Truncated),
            (b"\x00\x00\x00\x03\x00\x00\x35", EmptyDomain),
            (b"\x01\x00\x00\x03\x07foo.i2p\x00\x35", Reserved),
            (b"\x00\x01\x00\x03\x07foo.i2p\x00\x35", Reserved),
            (b"\x00\x00\x01\x03\x07foo.i2p\x00\x35", Fragmented(1)),
            (b"\x00\x00\x80\x03\x07foo.i2p\x00\x35", Fragmented(0x80)),
            (b"\x00\x00\xff", Truncated),
            (b"\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", BadAtyp(0)),
            (b"\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00", BadAtyp(2)),
            (b"\x00\x00\x00\x05\x00\x00\x00\x00\x00\x00", BadAtyp(5)),
            (b"\x00\x00\x00\xff\x00\x00\x00\x00\x00\x00", BadAtyp(0xff)),
        ];
        for (input, want) in cases {
            assert_eq!(decode(input), Err(*want), "{input:02x?}");
        }
        let mut big = b"\x00\x00\x00\x03\x07foo.i2p\x00\x35".to_vec();
        big.extend_from_slice(&vec![0u8; MAX_PAYLOAD + 1]);
        assert_eq!(decode(&big), Err(TooLarge));
        // Every prefix of a valid datagram's header is Truncated.
        let full = b"\x00\x00\x00\x03\x07foo.i2p\x00\x35";
        for n in 0..full.len() {
            assert_eq!(decode(&full[..n]), Err(Truncated), "prefix {n}");
        }
    }

    #[test]
    fn decode_never_panics() {
        let alphabet = [0u8, 1, 3, 4, 7, 0xff];
        let mut buf = Vec::new();
        for n in 0..=7u32 {
            for mut code in 0..alphabet.len().pow(n) {
                buf.clear();
                for _ in 0..n {
                    buf.push(alphabet[code % alphabet.len()]);
                    code /= alphabet.len();
                }
                let _ = decode(&buf);
            }
        }
    }

    #[test]
    fn encode_bytes() {
        assert_eq!(
            encode_domain(b"a.b32.i2p", 0, b"x\x00").unwrap(),
            b"\x00\x00\x00\x03\x09a.b32.i2p\x00\x00x\x00"
        );
        assert_eq!(encode_domain(b"h", 0x1234, b"").unwrap(), b"\x00\x00\x00\x03\x01h\x12\x34");
        assert_eq!(encode_domain(b"", 1, b"x"), None);
        assert_eq!(encode_domain(&[b'a'; 256], 1, b"x"), None);
        assert!(encode_domain(&[b'a'; 255], 1, b"x").is_some());
        assert_eq!(encode_domain(b"h", 1, &vec![0; MAX_PAYLOAD + 1]), None);
        // Round trip.
        let e = encode_domain(b"peer.i2p", 7, b"data").unwrap();
        assert_eq!(decode(&e).unwrap(), Datagram { dst: Dst::Domain(b"peer.i2p"), port: 7, data: b"data" });
    }

    #[test]
    fn reply_bytes() {
        assert_eq!(
            associate_reply("127.0.0.1:4660".parse().unwrap()),
            b"\x05\x00\x00\x01\x7f\x00\x00\x01\x12\x34"
        );
        let mut v6 = b"\x05\x00\x00\x04".to_vec();
        v6.extend_from_slice(&[0; 15]);
        v6.extend_from_slice(b"\x01\x00\x35");
        assert_eq!(associate_reply("[::1]:53".parse().unwrap()), v6);
    }

    fn req(addr: Addr, port: u16) -> Request {
        Request {
            version: Version::V5,
            command: Command::UdpAssociate,
            addr,
            port,
            credentials: Credentials::None,
        }
    }

    #[test]
    fn expected_source() {
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let a = |s: &str| -> SocketAddr { s.parse().unwrap() };
        // All zeros: the peer's IP, port learned from the first datagram.
        let mut e = Expect::from_request(&req(Addr::Ipv4([0; 4]), 0), peer);
        assert_eq!(e.known(), None);
        assert!(!e.admit(a("127.0.0.2:5000")));
        assert!(e.admit(a("127.0.0.1:5000")));
        assert_eq!(e.known(), Some(a("127.0.0.1:5000")));
        assert!(!e.admit(a("127.0.0.1:5001")));
        assert!(e.admit(a("127.0.0.1:5000")));
        // A port given: only that port, from the first datagram on.
        let mut e = Expect::from_request(&req(Addr::Ipv4([0; 4]), 6000), peer);
        assert_eq!(e.known(), Some(a("127.0.0.1:6000")));
        assert!(!e.admit(a("127.0.0.1:5000")));
        assert!(e.admit(a("127.0.0.1:6000")));
        // An address given: that address.
        let mut e = Expect::from_request(&req(Addr::Ipv4([127, 0, 0, 9]), 0), peer);
        assert!(!e.admit(a("127.0.0.1:5000")));
        assert!(e.admit(a("127.0.0.9:5000")));
        // A name (PySocks sends "0"): the peer's IP.
        let mut e = Expect::from_request(&req(Addr::Domain(b"0".to_vec()), 7000), peer);
        assert!(e.admit(a("127.0.0.1:7000")));
        // IPv4-mapped IPv6 equals IPv4.
        let mut e = Expect::from_request(&req(Addr::Ipv6([0; 16]), 0), a("[::ffff:127.0.0.1]:1"));
        assert!(e.admit(a("127.0.0.1:5000")));
    }

    #[test]
    fn peers_are_bounded() {
        let relay = UdpSocket::bind("127.0.0.1:0").unwrap();
        let link = Link {
            relay,
            client: Mutex::new(None),
            peers: Mutex::new(HashMap::new()),
            stats: Stats::default(),
            active_ms: AtomicU64::new(0),
            born: Instant::now(),
        };
        for i in 0..(MAX_PEERS + 10) {
            link.sending(&format!("peer{i}"));
        }
        assert_eq!(lock(&link.peers).len(), MAX_PEERS);
        assert!(link.knows(&format!("peer{}", MAX_PEERS + 9)));
        assert_eq!(get(&link.stats.to_i2p), (MAX_PEERS + 10) as u64);
        // Without a client address, delivery is counted as a drop.
        link.deliver(b"x");
        assert_eq!(get(&link.stats.no_client_yet), 1);
        link.dropped(Dropped::Unresolved);
        assert_eq!(link.stats.dropped(), 2);
    }
}
