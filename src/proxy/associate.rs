//! SOCKS5 UDP ASSOCIATE (RFC 1928 §7) over SAM repliable datagrams: the
//! association, one per UDP ASSOCIATE, living exactly as long as its TCP
//! control connection, on a UDP relay socket of its own.
//!
//! Client → I2P: a datagram from the client's address with ATYP=3 and a
//! valid `.i2p`/`.b32.i2p` name is queued on the datagram session of the
//! client's identity, which resolves the name and sends it. DST.PORT is not
//! carried (i2pd cannot take ports on the send line). Everything else is
//! dropped and counted: another source, FRAG≠0 (fragmentation is optional
//! and not done), IP addresses and clearnet names, payloads over
//! [`MAX_PAYLOAD`], a full queue.
//! I2P → client: the session offers each datagram to the associations that
//! sent to that peer, or to every association of the identity if none did
//! (`sam::datagram`); it goes out wrapped with ATYP=3, DST.ADDR = the
//! sender's `.b32.i2p` and DST.PORT = its FROM_PORT (0 when the router
//! gives none).
//!
//! The request is answered at once with the relay address, while the
//! identity's datagram session is still being built (~20 s on i2pd 2.45):
//! the association reads the relay socket meanwhile, and the datagrams
//! that arrive before the session is ready wait in a small queue
//! ([`WAIT_DATAGRAMS`], [`WAIT_BYTES`]), leaving in order once it is; more
//! are dropped and counted. A session that is not ready within
//! `--connect-timeout` ends the association (its TCP connection is closed).
//!
//! Nothing here blocks a TCP relay: each association runs in its own
//! worker, each session in its own threads, and every queue is bounded.
//! Not here: the header codec (`socks::udp`), the SAM framing and name
//! cache (`sam::datagram`), which session an identity has (`identity`).

use crate::client::Client;
use crate::counters::{add, bump, get, COUNTERS};
use crate::error::Error;
use crate::i2p_addr;
use crate::identity::{DatagramCell, Key};
use crate::leak::{warn_leak, Leak};
use crate::proxy::context::{self, Shared};
use crate::sam::datagram::{DatagramSession, Dropped, Forwarded, Member, SendError};
use crate::sam::ready::State;
use crate::socks::udp::{decode, encode_domain, Dst, HeaderError};
use crate::socks::{self, Addr, Rep, Request};
use log::{debug, warn};
use mio::net::{TcpStream as MioStream, UdpSocket as MioUdp};
use mio::{Events, Interest, Poll, Token};
use std::collections::{HashMap, VecDeque};
use std::io::{self, ErrorKind, Read};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

pub use crate::sam::datagram::{MAX_PAYLOAD, RECOMMENDED_PAYLOAD};

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
/// Bytes read at once from the control connection (and thrown away: the
/// client has nothing to say on it after the request).
const CONTROL_BUF: usize = 512;
/// Datagrams held per association while its datagram session is being
/// built: a client's first burst (a handshake, a few queries) fits, a
/// client that streams at full speed before anyone can carry it does not.
pub const WAIT_DATAGRAMS: usize = 64;
/// Payload bytes held per association meanwhile: four full-size (31 KiB)
/// datagrams. Sent at once when the session is ready, this fits a default
/// Linux UDP receive buffer (rmem_default, 208 KiB) at the bridge even if
/// it reads nothing meanwhile; 256 waiting associations (the default
/// --max-clients) hold 32 MiB at most.
pub const WAIT_BYTES: usize = 128 * 1024;
/// While the session is being built, how often its state is looked at:
/// the most the first datagrams wait after it is ready.
const WAIT_CHECK: Duration = Duration::from_millis(20);

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
    /// Over the bound of what waits for the session to be built.
    pub wait_full: AtomicU64,
    pub unresolved: AtomicU64,
    pub send_failed: AtomicU64,
    pub to_client_failed: AtomicU64,
    pub no_client_yet: AtomicU64,
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
            &self.wait_full,
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

/// One association as a member of its datagram session: what the
/// session's threads need of it.
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
}

impl Member for Link {
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

    fn knows(&self, b32: &str) -> bool {
        lock(&self.peers).contains_key(b32)
    }

    fn deliver(&self, f: &Forwarded<'_>) {
        let Some(frame) = encode_domain(f.b32.as_bytes(), f.from_port.unwrap_or(0), f.payload, MAX_PAYLOAD)
        else {
            bump(&self.stats.to_client_failed);
            return;
        };
        let Some(to) = *lock(&self.client) else {
            bump(&self.stats.no_client_yet);
            return;
        };
        match self.relay.send_to(&frame, to) {
            Ok(_) => {
                bump(&self.stats.to_client);
                self.touch();
            }
            Err(_) => bump(&self.stats.to_client_failed),
        }
    }
}

// ------------------------------------------------------------ the association

/// Serve a UDP ASSOCIATE whose request `req` was just read from `client`,
/// on the identity `key`. Replies at once, relays until the control
/// connection ends (or the session cannot be had), frees everything.
pub fn serve(client: TcpStream, req: &Request, key: Key, shared: &Shared) {
    let (Ok(peer), Ok(local)) = (client.peer_addr(), client.local_addr()) else {
        return;
    };
    let tag = peer.to_string();
    let refuse =
        |c: TcpStream, e: Error| context::refuse(Client::Tcp(c), req, e, &format!("{tag}: UDP ASSOCIATE"));
    let deadline = Instant::now() + shared.config.connect_timeout;
    let lease = match shared.identities.acquire(key) {
        Ok(l) => l,
        Err(e) => return refuse(client, e),
    };
    let cell = match lease.datagram() {
        Ok(c) => c,
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
    let member: Arc<dyn Member> = Arc::clone(&link) as Arc<dyn Member>;
    let mut control = Client::Tcp(client);
    let replied = context::write_reply(&mut control, &socks::reply_bound(req.version, Rep::Succeeded, bnd));
    let (Ok(()), Client::Tcp(client)) = (replied, control) else {
        return;
    };
    debug!("{peer}: UDP association on {bnd}");
    bump(&COUNTERS.udp_opened);
    let mut assoc = Association {
        cell: &cell,
        session: None,
        waiting: Waiting::default(),
        deadline,
        link: &link,
        member: &member,
        expect,
        shared,
        peer,
        last_drop_log: None,
    };
    let end = assoc.run(client, relay);
    if let Some(s) = &assoc.session {
        s.leave(&member);
    }
    drop(lease);
    let s = &link.stats;
    let c = &COUNTERS;
    bump(&c.udp_ended);
    add(&c.datagrams_out, get(&s.to_i2p));
    add(&c.datagrams_in, get(&s.to_client));
    add(&c.datagrams_dropped, s.dropped());
    debug!(
        "{peer}: UDP association ended ({end}): {} datagrams from the client, {} sent to I2P, \
         {} delivered from I2P, {} dropped (foreign source {}, malformed {}, fragments {}, \
         not I2P {}, too large {}, queue full {}, waiting queue full {}, unresolved {}, \
         send failed {}, delivery failed {}, before the client's port was known {})",
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
        get(&s.wait_full),
        get(&s.unresolved),
        get(&s.send_failed),
        get(&s.to_client_failed),
        get(&s.no_client_yet),
    );
}

/// Datagrams from the client (target name, payload) held until the
/// session is ready, within [`WAIT_DATAGRAMS`] and [`WAIT_BYTES`].
#[derive(Debug, Default)]
struct Waiting {
    queue: VecDeque<(String, Vec<u8>)>,
    bytes: usize,
}

impl Waiting {
    /// Keep it, or false (dropped) when the bound would be passed.
    fn push(&mut self, target: &str, payload: &[u8]) -> bool {
        if self.queue.len() >= WAIT_DATAGRAMS || self.bytes + payload.len() > WAIT_BYTES {
            return false;
        }
        self.bytes += payload.len();
        self.queue.push_back((target.to_string(), payload.to_vec()));
        true
    }

    /// Everything held, oldest first.
    fn drain(&mut self) -> impl Iterator<Item = (String, Vec<u8>)> + '_ {
        self.bytes = 0;
        self.queue.drain(..)
    }
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
    /// The session could not be built (its builder logged why).
    NoSession,
    /// Still being built at --connect-timeout.
    SessionLate,
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
            End::NoSession => "no datagram session",
            End::SessionLate => "no datagram session within --connect-timeout",
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
    /// The identity's datagram session, ready or not yet.
    cell: &'a DatagramCell,
    /// Set (and joined) once the cell is ready.
    session: Option<Arc<DatagramSession>>,
    /// What the client sent before that.
    waiting: Waiting,
    /// When a session still being built is given up.
    deadline: Instant,
    link: &'a Link,
    /// The same association as the session knows it.
    member: &'a Arc<dyn Member>,
    expect: Expect,
    shared: &'a Shared,
    peer: SocketAddr,
    last_drop_log: Option<Instant>,
}

impl Association<'_> {
    fn run(&mut self, client: TcpStream, relay: UdpSocket) -> End {
        let end = self.relay(client, relay);
        end.unwrap_or(End::PollFailed)
    }

    /// While no session: take it once ready (joining it and sending what
    /// waited, in order); Some when the association must end instead.
    fn await_session(&mut self) -> Option<End> {
        if self.session.is_some() {
            return None;
        }
        match self.cell.get() {
            State::Ready(s) => {
                s.join(Arc::clone(self.member));
                let waited: Vec<(String, Vec<u8>)> = self.waiting.drain().collect();
                if !waited.is_empty() {
                    debug!(
                        "{}: datagram session ready; sending {} waiting datagrams",
                        self.peer,
                        waited.len()
                    );
                }
                for (target, payload) in waited {
                    self.send(&s, &target, payload);
                }
                self.session = Some(s);
                None
            }
            State::Down | State::Closed => Some(End::NoSession),
            State::Starting if Instant::now() >= self.deadline => {
                warn!(
                    "UDP association closed: the SAM datagram session was not ready within \
                     --connect-timeout ({} s)",
                    self.shared.config.connect_timeout.as_secs()
                );
                Some(End::SessionLate)
            }
            State::Starting => None,
        }
    }

    fn send(&mut self, session: &DatagramSession, target: &str, payload: Vec<u8>) {
        match session.send(target, payload, Arc::clone(self.member)) {
            Ok(()) => {}
            Err(SendError::QueueFull) => {
                bump(&self.link.stats.queue_full);
                self.log_drop("send queue full");
            }
            Err(SendError::Closed) => bump(&self.link.stats.send_failed),
        }
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
            if let Some(end) = self.await_session() {
                break end;
            }
            let wait = match (relay_pending, &self.session) {
                (true, _) => Duration::ZERO,
                (false, None) => WAIT_CHECK,
                (false, Some(_)) => CHECK_INTERVAL,
            };
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
            if self.session.as_ref().is_some_and(|s| !s.is_alive()) {
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
        let d = match decode(dgram, MAX_PAYLOAD) {
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
            warn_leak(Leak::IpAddress, "SOCKS5 UDP", d.port, &self.peer.to_string());
            return self.log_drop("an IP address target");
        };
        let target = match i2p_addr::parse_target(host) {
            Ok(t) => t,
            Err(e) => {
                bump(&stats.not_i2p);
                debug!("{}: datagram target refused: {e:?}", self.peer);
                if let Some(leak) = Leak::of(e.into()) {
                    warn_leak(leak, "SOCKS5 UDP", d.port, &self.peer.to_string());
                }
                return self.log_drop("not an I2P target");
            }
        };
        match self.session.clone() {
            Some(s) => self.send(&s, target.as_str(), d.data.to_vec()),
            None => {
                if !self.waiting.push(target.as_str(), d.data) {
                    bump(&self.link.stats.wait_full);
                    self.log_drop("while the session is being built, over the waiting bound");
                }
            }
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
    fn waiting_is_bounded_and_ordered() {
        let mut w = Waiting::default();
        for i in 0..WAIT_DATAGRAMS {
            assert!(w.push("a.i2p", &[i as u8]), "{i}");
        }
        assert!(!w.push("a.i2p", b"x"), "over the count bound");
        let got: Vec<u8> = w.drain().map(|(_, p)| p[0]).collect();
        assert_eq!(got, (0..WAIT_DATAGRAMS).map(|i| i as u8).collect::<Vec<_>>());
        assert_eq!((w.queue.len(), w.bytes), (0, 0));
        // The byte bound: full-size payloads, exactly up to it.
        let big = vec![0u8; MAX_PAYLOAD];
        let fit = WAIT_BYTES / MAX_PAYLOAD;
        for i in 0..fit {
            assert!(w.push("b.i2p", &big), "{i}");
        }
        assert!(!w.push("b.i2p", &big));
        assert!(w.push("b.i2p", &vec![0u8; WAIT_BYTES - fit * MAX_PAYLOAD]), "the rest still fits");
        assert!(!w.push("b.i2p", b"1"));
        assert_eq!(w.bytes, WAIT_BYTES);
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
        let (dest, b32) = crate::i2p_addr::test_dest(3);
        link.deliver(&Forwarded { dest: &dest, b32, from_port: None, to_port: None, payload: b"x" });
        assert_eq!(get(&link.stats.no_client_yet), 1);
        link.dropped(Dropped::Unresolved);
        assert_eq!(link.stats.dropped(), 2);
    }
}
