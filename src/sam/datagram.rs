//! SAM v3 repliable datagrams (`STYLE=DATAGRAM`), the I2P side of SOCKS5
//! UDP ASSOCIATE: the UDP framing both ways and a bounded, expiring name
//! cache as pure functions, then the blocking session that uses them and
//! hands what arrives to the associations that joined it.
//!
//! A [`DatagramSession`] is one SAM session with its own transient
//! destination. Its control socket carries SESSION CREATE (with `PORT=` and
//! `HOST=` so that the router forwards what it receives to our UDP socket)
//! and, afterwards, the NAMING LOOKUPs that turn `.i2p` and `.b32.i2p` names
//! into the base64 destinations i2pd insists on when sending. Three threads
//! serve it: one reads the control socket into lines, one owns every write
//! to it and sends the queued datagrams (resolving names first), one reads
//! the datagrams the router forwards and routes each to the [`Member`]s
//! that sent to its sender, or to all of them if none did.
//!
//! Not here: SOCKS (the UDP request header and the associations are
//! `proxy::associate`'s, behind the [`Member`] interface), and which
//! identity owns the session (`identity`). Spec: SAM v3 "Datagrams" and
//! "NAMING LOOKUP"; i2pd reads the destination on the send line up to the
//! end of the line, so we never add FROM_PORT/TO_PORT there.

use crate::i2p_addr;
use crate::sam::build_warn::{warn_limited, Kind};
use crate::sam::conn::{self, Conn, CreateError, CreateSpec, SESSION_CREATE_TIMEOUT};
use crate::sam::control::{Control, Dead, Lookup, LOOKUP_TIMEOUT};
use crate::sam::encryption::Encryption;
use crate::sam::proto::{self, BadValue, Resolved, Style};
use crossbeam_channel::{bounded, select, Receiver, Sender, TrySendError};
use log::{debug, info};
use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// First word of every datagram we send to the bridge's UDP port. Both
/// routers take `3.0` whatever version the control socket negotiated.
pub const SEND_VERSION: &str = "3.0";
/// Largest payload we send or deliver. I2P datagrams carry ~31 KiB at most;
/// ~11 KiB and below survive the network far better (SAM v3 "Datagrams").
pub const MAX_PAYLOAD: usize = 31 * 1024;
/// Payload size we recommend to users (documented, not enforced).
pub const RECOMMENDED_PAYLOAD: usize = 11 * 1024;
/// Receive buffer: the largest UDP datagram.
pub const UDP_BUF: usize = 64 * 1024;
/// Longest header line of a forwarded datagram (a destination is ~520
/// base64 characters; certificates can make it longer, never this long).
pub const MAX_FORWARD_HEADER: usize = 4096;
/// Names kept in a session's cache.
pub const NAME_CACHE_MAX: usize = 1024;
/// How long a resolved name is trusted.
pub const NAME_TTL: Duration = Duration::from_secs(600);
/// How long a failed name is not asked again (a client sending a stream of
/// datagrams to an unknown name must not become a stream of lookups).
pub const NAME_NEGATIVE_TTL: Duration = Duration::from_secs(30);
/// Datagrams waiting to be sent, per session; more are dropped.
pub const SEND_QUEUE: usize = 256;
/// How often the receiving thread looks at the closed flag.
const RECV_POLL: Duration = Duration::from_millis(250);
/// Pause after an unexpected receive error, so it can't spin.
const RECV_ERROR_PAUSE: Duration = Duration::from_millis(100);

// ------------------------------------------------------------ framing

/// `3.0 <id> <dest>\n` + payload: one datagram for the bridge's UDP port.
/// `dest` must be a base64 destination (i2pd accepts nothing else).
pub fn send_frame(id: &str, dest: &str, payload: &[u8]) -> Result<Vec<u8>, BadValue> {
    if !proto::is_safe_key(id) {
        return Err(BadValue("ID".into()));
    }
    if i2p_addr::b64_decode(dest).and_then(|b| i2p_addr::public_dest_len(&b)).is_none() {
        return Err(BadValue("DESTINATION".into()));
    }
    let mut out = Vec::with_capacity(SEND_VERSION.len() + id.len() + dest.len() + 3 + payload.len());
    out.extend_from_slice(SEND_VERSION.as_bytes());
    out.push(b' ');
    out.extend_from_slice(id.as_bytes());
    out.push(b' ');
    out.extend_from_slice(dest.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(payload);
    Ok(out)
}

/// A datagram the router forwarded to our UDP port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded<'a> {
    /// The sender's base64 destination.
    pub dest: &'a str,
    /// The sender's `<52>.b32.i2p`.
    pub b32: String,
    /// SAM 3.2+ only (Java); i2pd 2.45 sends no ports.
    pub from_port: Option<u16>,
    pub to_port: Option<u16>,
    pub payload: &'a [u8],
}

/// Why a forwarded datagram was not understood.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardError {
    /// No `\n` at all.
    NoHeader,
    /// No `\n` within [`MAX_FORWARD_HEADER`] bytes.
    HeaderTooLong,
    /// Empty or not ASCII.
    BadHeader,
    /// The first word is not a base64 destination.
    BadDestination,
}

/// Split `<sender b64>[ FROM_PORT=n TO_PORT=n]\n<payload>`. Unknown words
/// and unreadable port values are ignored; the sender must be a destination.
pub fn parse_forwarded(buf: &[u8]) -> Result<Forwarded<'_>, ForwardError> {
    let window = buf.get(..buf.len().min(MAX_FORWARD_HEADER + 1)).unwrap_or(buf);
    let nl = match window.iter().position(|&b| b == b'\n') {
        Some(n) => n,
        None if buf.len() > MAX_FORWARD_HEADER => return Err(ForwardError::HeaderTooLong),
        None => return Err(ForwardError::NoHeader),
    };
    let (header, rest) = buf.split_at(nl);
    let payload = rest.get(1..).unwrap_or(&[]);
    let header = header.strip_suffix(b"\r").unwrap_or(header);
    if !header.is_ascii() {
        return Err(ForwardError::BadHeader);
    }
    let header = std::str::from_utf8(header).map_err(|_| ForwardError::BadHeader)?;
    let mut words = header.split([' ', '\t']).filter(|w| !w.is_empty());
    let dest = words.next().ok_or(ForwardError::BadHeader)?;
    let b32 = i2p_addr::b32_of_b64(dest).ok_or(ForwardError::BadDestination)?;
    let (mut from_port, mut to_port) = (None, None);
    for w in words {
        match w.split_once('=') {
            Some(("FROM_PORT", v)) => from_port = v.parse().ok(),
            Some(("TO_PORT", v)) => to_port = v.parse().ok(),
            _ => {}
        }
    }
    Ok(Forwarded { dest, b32, from_port, to_port, payload })
}

/// What the cache knows about a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached {
    Hit(Resolved),
    /// Looked up recently and not found: don't ask again yet.
    Negative,
    Miss,
}

#[derive(Debug)]
struct CacheEntry {
    value: Option<Resolved>,
    expires: Instant,
}

/// Names → destinations, at most `max` of them, each for [`NAME_TTL`]
/// ([`NAME_NEGATIVE_TTL`] for failures). When full, expired entries go
/// first, then the one closest to expiry.
#[derive(Debug)]
pub struct NameCache {
    map: HashMap<String, CacheEntry>,
    max: usize,
}

impl NameCache {
    pub fn new(max: usize) -> NameCache {
        NameCache { map: HashMap::new(), max }
    }

    pub fn get(&mut self, name: &str, now: Instant) -> Cached {
        match self.map.get(name) {
            Some(e) if e.expires > now => match &e.value {
                Some(r) => Cached::Hit(r.clone()),
                None => Cached::Negative,
            },
            Some(_) => {
                self.map.remove(name);
                Cached::Miss
            }
            None => Cached::Miss,
        }
    }

    /// Remember `value` (None: not found) for `name`.
    pub fn insert(&mut self, name: &str, value: Option<Resolved>, now: Instant) {
        if self.max == 0 {
            return;
        }
        if !self.map.contains_key(name) && self.map.len() >= self.max {
            self.map.retain(|_, e| e.expires > now);
            if self.map.len() >= self.max {
                let soonest = self.map.iter().min_by_key(|(_, e)| e.expires).map(|(k, _)| k.clone());
                if let Some(k) = soonest {
                    self.map.remove(&k);
                }
            }
        }
        let ttl = if value.is_some() { NAME_TTL } else { NAME_NEGATIVE_TTL };
        self.map.insert(name.to_string(), CacheEntry { value, expires: now + ttl });
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

// ------------------------------------------------------------ the session

/// How to build datagram sessions.
#[derive(Debug, Clone)]
pub struct DgSpec {
    /// The SAM bridge (TCP).
    pub sam: SocketAddr,
    /// The bridge's datagram port (UDP), by default SAM's port - 1.
    pub sam_udp: SocketAddr,
    /// SESSION CREATE options after PORT/HOST (tunnels, user options; the
    /// encryption types are added per build, after HELLO).
    pub options: Vec<(String, String)>,
    /// Which encryption types to ask for; shared with the stream sessions.
    pub encryption: Arc<Encryption>,
}

/// Why a queued datagram never left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// NAMING LOOKUP failed or timed out (now or recently).
    Unresolved,
    /// The UDP send to the bridge failed.
    SendFailed,
}

/// One user of a session (a SOCKS UDP association): told what becomes of
/// what it queued, and offered what arrives from I2P.
pub trait Member: Send + Sync {
    /// About to go to the destination whose address is `b32`. Called
    /// before the send, so that a reply racing back finds the peer known.
    fn sending(&self, b32: &str);
    /// Not sent; after `sending` if the send itself failed.
    fn dropped(&self, why: Dropped);
    /// Whether this member sent to `b32` (replies go to those that did).
    fn knows(&self, b32: &str) -> bool;
    /// A datagram from I2P for this member.
    fn deliver(&self, datagram: &Forwarded<'_>);
}

/// Why [`DatagramSession::send`] refused a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    QueueFull,
    Closed,
}

struct Outgoing {
    name: String,
    payload: Vec<u8>,
    from: Arc<dyn Member>,
}

/// The members of a session, shared with its receiving thread.
struct Members {
    list: Mutex<MemberList>,
    /// Datagrams from I2P that no member could take.
    undelivered: AtomicU64,
}

struct MemberList {
    members: Vec<Arc<dyn Member>>,
    /// When the last member left (or the session was made).
    idle_since: Instant,
}

impl Members {
    fn lock(&self) -> MutexGuard<'_, MemberList> {
        self.list.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A datagram from I2P: to the members that sent to its sender, else to
    /// all of them.
    fn route(&self, f: &Forwarded<'_>) {
        let members: Vec<Arc<dyn Member>> = self.lock().members.clone();
        let asked: Vec<&Arc<dyn Member>> = members.iter().filter(|m| m.knows(&f.b32)).collect();
        let targets: Vec<&Arc<dyn Member>> = if asked.is_empty() { members.iter().collect() } else { asked };
        if targets.is_empty() {
            self.undelivered.fetch_add(1, Ordering::Relaxed);
        }
        for m in targets {
            m.deliver(f);
        }
    }
}

/// One live DATAGRAM session. Dropping it closes it.
pub struct DatagramSession {
    b32: String,
    out: Sender<Outgoing>,
    alive: Arc<AtomicBool>,
    control: TcpStream,
    members: Arc<Members>,
}

impl DatagramSession {
    /// Connect, HELLO, bind our UDP socket beside the control socket's
    /// local address, SESSION CREATE STYLE=DATAGRAM, then start the threads.
    /// `label` names the session in logs. Blocks until the router answers
    /// (tunnels are built first) or `deadline`.
    pub fn open(spec: &DgSpec, label: &str, deadline: Instant) -> Result<DatagramSession, CreateError> {
        let deadline = deadline.min(Instant::now() + SESSION_CREATE_TIMEOUT);
        let conn = Conn::open(spec.sam, deadline, &|_| {})?;
        // The router forwards to HOST:PORT; our side of the control
        // connection is an address the bridge can reach.
        let IpAddr::V4(host) = conn.socket.local_addr()?.ip() else {
            return Err(CreateError::Protocol("datagrams need an IPv4 address for the SAM bridge".into()));
        };
        let udp = UdpSocket::bind((host, 0))?;
        let port = udp.local_addr()?.port();
        let what = CreateSpec {
            style: Style::Datagram { host, port },
            destination: "TRANSIENT",
            options: &spec.options,
            encryption: &spec.encryption,
            label,
        };
        // The reply's DESTINATION is our private key: used for the b32, never kept.
        let created = conn::create_session(conn, &what, spec.sam, deadline, &|_| {})?;
        let (b32, id) = (created.b32, created.id);
        let minor = created.conn.minor;
        let control = created.conn.socket.try_clone()?;
        let ctl = Control::start(created.conn, label)?;
        info!("{label}: I2P datagram destination ready: {b32} (SAM 3.{minor})");

        let alive = Arc::new(AtomicBool::new(true));
        let members = Arc::new(Members {
            list: Mutex::new(MemberList { members: Vec::new(), idle_since: Instant::now() }),
            undelivered: AtomicU64::new(0),
        });
        let (out_tx, out_rx) = bounded::<Outgoing>(SEND_QUEUE);
        let udp = Arc::new(udp);
        let ctl = Controller {
            ctl,
            cache: NameCache::new(NAME_CACHE_MAX),
            udp: Arc::clone(&udp),
            bridge: spec.sam_udp,
            id,
            label: label.to_string(),
        };
        let a = Arc::clone(&alive);
        let l = label.to_string();
        thread::Builder::new().name("udp-sam-send".into()).spawn(move || {
            let lost = ctl.run(out_rx);
            // Not when `close` ended it: then `alive` is false already.
            if let (true, Some(why)) = (a.swap(false, Ordering::SeqCst), lost) {
                warn_limited(Kind::DatagramLost, true, format_args!("{l}: datagram session lost ({why})"));
            }
        })?;
        let a = Arc::clone(&alive);
        let m = Arc::clone(&members);
        let (bridge_ip, l) = (spec.sam_udp.ip(), label.to_string());
        thread::Builder::new()
            .name("udp-sam-recv".into())
            .spawn(move || receive(&udp, bridge_ip, &m, &a, &l))?;
        Ok(DatagramSession { b32, out: out_tx, alive, control, members })
    }

    /// Queue `payload` for `name` (a validated `.i2p`/`.b32.i2p` name) on
    /// behalf of `from`. Never blocks.
    pub fn send(&self, name: &str, payload: Vec<u8>, from: Arc<dyn Member>) -> Result<(), SendError> {
        if !self.is_alive() {
            return Err(SendError::Closed);
        }
        match self.out.try_send(Outgoing { name: name.to_string(), payload, from }) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(SendError::QueueFull),
            Err(TrySendError::Disconnected(_)) => Err(SendError::Closed),
        }
    }

    /// Start offering `m` what arrives.
    pub fn join(&self, m: Arc<dyn Member>) {
        self.members.lock().members.push(m);
    }

    /// Stop offering `m` anything.
    pub fn leave(&self, m: &Arc<dyn Member>) {
        let mut list = self.members.lock();
        list.members.retain(|x| !Arc::ptr_eq(x, m));
        if list.members.is_empty() {
            list.idle_since = Instant::now();
        }
    }

    /// Since when nobody uses the session; None while somebody does.
    pub fn idle_since(&self) -> Option<Instant> {
        let list = self.members.lock();
        list.members.is_empty().then_some(list.idle_since)
    }

    /// False once the control socket died or [`close`](Self::close) ran.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Our own `.b32.i2p` for datagrams.
    pub fn b32(&self) -> &str {
        &self.b32
    }

    /// End the session: the router drops it with its control socket; the
    /// threads notice within [`RECV_POLL`].
    pub fn close(&self) {
        self.alive.store(false, Ordering::SeqCst);
        let _ = self.control.shutdown(Shutdown::Both);
    }
}

impl Drop for DatagramSession {
    fn drop(&mut self) {
        self.close();
    }
}

/// Owns the control socket: sends queued datagrams, looking names up
/// first, and answers PING.
struct Controller {
    ctl: Control,
    cache: NameCache,
    udp: Arc<UdpSocket>,
    bridge: SocketAddr,
    id: String,
    label: String,
}

impl Controller {
    /// Until the session is dropped (None) or its control socket dies
    /// (why). The control socket is shut on return.
    fn run(mut self, out: Receiver<Outgoing>) -> Option<String> {
        let lines = self.ctl.lines();
        let dead = loop {
            select! {
                recv(out) -> msg => match msg {
                    Ok(o) => if self.send(o).is_err() { break true },
                    Err(_) => break false,
                },
                recv(lines) -> line => match line {
                    Ok(l) => if self.ctl.on_line(&l).is_err() { break true },
                    Err(_) => break true,
                },
            }
        };
        dead.then(|| self.ctl.why())
    }

    fn send(&mut self, o: Outgoing) -> Result<(), Dead> {
        let now = Instant::now();
        let resolved = match self.cache.get(&o.name, now) {
            Cached::Hit(r) => Some(r),
            Cached::Negative => None,
            Cached::Miss => {
                let r = self.lookup(&o.name)?;
                self.cache.insert(&o.name, r.clone(), Instant::now());
                r
            }
        };
        let Some(r) = resolved else {
            o.from.dropped(Dropped::Unresolved);
            return Ok(());
        };
        // Cannot fail for a destination `naming_reply` accepted.
        let Ok(frame) = send_frame(&self.id, &r.dest, &o.payload) else {
            o.from.dropped(Dropped::Unresolved);
            return Ok(());
        };
        o.from.sending(&r.b32);
        if let Err(e) = self.udp.send_to(&frame, self.bridge) {
            debug!("{}: datagram send to the bridge failed: {e}", self.label);
            o.from.dropped(Dropped::SendFailed);
        }
        Ok(())
    }

    /// NAMING LOOKUP on this session's control socket (so the lookup uses
    /// this identity's tunnels). None: not found, refused or timed out.
    fn lookup(&mut self, name: &str) -> Result<Option<Resolved>, Dead> {
        match self.ctl.lookup(name, Instant::now() + LOOKUP_TIMEOUT)? {
            Lookup::Found(r) => Ok(Some(r)),
            Lookup::Unknown | Lookup::Refused(_) | Lookup::TimedOut => Ok(None),
        }
    }
}

/// Datagrams the router forwards → the members, while `alive`. Only the
/// bridge's address may send here: anything else is dropped.
fn receive(udp: &UdpSocket, bridge: IpAddr, members: &Members, alive: &AtomicBool, label: &str) {
    let mut buf = vec![0u8; UDP_BUF];
    let foreign = AtomicU64::new(0);
    let malformed = AtomicU64::new(0);
    if udp.set_read_timeout(Some(RECV_POLL)).is_err() {
        alive.store(false, Ordering::SeqCst);
        return;
    }
    while alive.load(Ordering::SeqCst) {
        match udp.recv_from(&mut buf) {
            Ok((n, src)) => {
                if src.ip() != bridge {
                    foreign.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                match parse_forwarded(buf.get(..n).unwrap_or_default()) {
                    Ok(f) => members.route(&f),
                    Err(e) => {
                        malformed.fetch_add(1, Ordering::Relaxed);
                        debug!("{label}: unreadable datagram from the bridge: {e:?}");
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) => {}
            Err(e) => {
                debug!("{label}: datagram receive failed: {e}");
                thread::sleep(RECV_ERROR_PAUSE);
            }
        }
    }
    let (f, m) = (foreign.load(Ordering::Relaxed), malformed.load(Ordering::Relaxed));
    let u = members.undelivered.load(Ordering::Relaxed);
    debug!(
        "{label}: datagram session closed ({f} from foreign sources and {m} unreadable dropped, \
         {u} with no association to take them)"
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
    use super::*;

    use crate::i2p_addr::test_dest as dest;

    #[test]
    fn send_frame_bytes() {
        let (d, _) = dest(3);
        let mut want = b"3.0 sess1 ".to_vec();
        want.extend_from_slice(d.as_bytes());
        want.extend_from_slice(b"\n\x00hello\n\xff");
        assert_eq!(send_frame("sess1", &d, b"\x00hello\n\xff").unwrap(), want);
        let mut empty = b"3.0 s ".to_vec();
        empty.extend_from_slice(d.as_bytes());
        empty.push(b'\n');
        assert_eq!(send_frame("s", &d, b"").unwrap(), empty);
        // Names, b32s and junk are not destinations: i2pd would drop them.
        for bad in
            ["", "foo.i2p", "ukeu3k5oycgaauneqgtnvselmt4yemvoilkln7jpvamvfx7dnkdq.b32.i2p", "AAAA", "a b"]
        {
            assert_eq!(send_frame("s", bad, b"x"), Err(BadValue("DESTINATION".into())), "{bad:?}");
        }
        let with_space = format!("{d} FROM_PORT=1");
        assert!(send_frame("s", &with_space, b"x").is_err());
        assert_eq!(send_frame("a b", &d, b"x"), Err(BadValue("ID".into())));
        assert_eq!(send_frame("a\n", &d, b"x"), Err(BadValue("ID".into())));
    }

    #[test]
    fn forwarded_i2pd_and_java_shapes() {
        let (d, b32) = dest(5);
        // i2pd 2.45: just the sender.
        let mut buf = d.as_bytes().to_vec();
        buf.extend_from_slice(b"\npayload\n\x00");
        let f = parse_forwarded(&buf).unwrap();
        assert_eq!(
            f,
            Forwarded {
                dest: &d,
                b32: b32.clone(),
                from_port: None,
                to_port: None,
                payload: b"payload\n\x00"
            }
        );
        // SAM 3.2+: ports after the sender, in any order, unknown words skipped.
        let mut buf = d.as_bytes().to_vec();
        buf.extend_from_slice(b" TO_PORT=53 X=1 FROM_PORT=1234\r\nP");
        let f = parse_forwarded(&buf).unwrap();
        assert_eq!((f.from_port, f.to_port, f.payload), (Some(1234), Some(53), &b"P"[..]));
        assert_eq!(f.b32, b32);
        // Bad port values are ignored, empty payload is fine.
        let mut buf = d.as_bytes().to_vec();
        buf.extend_from_slice(b" FROM_PORT=65536 TO_PORT=-1\n");
        let f = parse_forwarded(&buf).unwrap();
        assert_eq!((f.from_port, f.to_port, f.payload), (None, None, &b""[..]));
    }

    #[test]
    fn forwarded_malformed() {
        let (d, _) = dest(7);
        assert_eq!(parse_forwarded(b""), Err(ForwardError::NoHeader));
        assert_eq!(parse_forwarded(d.as_bytes()), Err(ForwardError::NoHeader));
        assert_eq!(parse_forwarded(b"\npayload"), Err(ForwardError::BadHeader));
        assert_eq!(parse_forwarded(b"   \npayload"), Err(ForwardError::BadHeader));
        assert_eq!(parse_forwarded(b"\xff\xfe\n"), Err(ForwardError::BadHeader));
        assert_eq!(parse_forwarded(b"AAAA\n"), Err(ForwardError::BadDestination));
        assert_eq!(parse_forwarded(b"foo.i2p\nx"), Err(ForwardError::BadDestination));
        // Truncated destination (certificate says 4 more bytes than there are).
        let blob = i2p_addr::b64_decode(&d).unwrap();
        let cut = i2p_addr::b64_encode(&blob[..blob.len() - 1]);
        assert_eq!(parse_forwarded(format!("{cut}\n").as_bytes()), Err(ForwardError::BadDestination));
        // Header length limit: exactly MAX_FORWARD_HEADER bytes before \n is
        // read (and refused as no destination); one more is too long.
        let mut long = vec![b'*'; MAX_FORWARD_HEADER];
        long.push(b'\n');
        assert_eq!(parse_forwarded(&long), Err(ForwardError::BadDestination));
        let mut longer = vec![b'*'; MAX_FORWARD_HEADER + 1];
        longer.push(b'\n');
        assert_eq!(parse_forwarded(&longer), Err(ForwardError::HeaderTooLong));
        assert_eq!(parse_forwarded(&[b'A'; 70_000]), Err(ForwardError::HeaderTooLong));
    }

    fn res(seed: u8) -> Resolved {
        let (dest, b32) = dest(seed);
        Resolved { dest, b32 }
    }

    #[test]
    fn cache_hits_and_expiry() {
        let t0 = Instant::now();
        let mut c = NameCache::new(8);
        assert_eq!(c.get("a.i2p", t0), Cached::Miss);
        c.insert("a.i2p", Some(res(1)), t0);
        c.insert("bad.i2p", None, t0);
        assert_eq!(c.get("a.i2p", t0 + NAME_TTL - Duration::from_millis(1)), Cached::Hit(res(1)));
        assert_eq!(c.get("bad.i2p", t0 + NAME_NEGATIVE_TTL - Duration::from_millis(1)), Cached::Negative);
        assert_eq!(c.get("bad.i2p", t0 + NAME_NEGATIVE_TTL), Cached::Miss);
        assert_eq!(c.get("a.i2p", t0 + NAME_TTL), Cached::Miss);
        assert!(c.is_empty(), "expired entries are dropped when seen");
        // Re-inserting refreshes.
        c.insert("a.i2p", Some(res(1)), t0);
        c.insert("a.i2p", Some(res(2)), t0 + NAME_TTL);
        assert_eq!(c.get("a.i2p", t0 + NAME_TTL + Duration::from_secs(1)), Cached::Hit(res(2)));
        assert_eq!(c.len(), 1);
    }

    #[test]
    fn cache_is_bounded() {
        let t0 = Instant::now();
        let mut c = NameCache::new(3);
        c.insert("n1.i2p", Some(res(1)), t0);
        c.insert("n2.i2p", Some(res(2)), t0 + Duration::from_secs(1));
        c.insert("n3.i2p", Some(res(3)), t0 + Duration::from_secs(2));
        // Full: the one closest to expiry (n1) makes room.
        c.insert("n4.i2p", Some(res(4)), t0 + Duration::from_secs(3));
        assert_eq!(c.len(), 3);
        let now = t0 + Duration::from_secs(4);
        assert_eq!(c.get("n1.i2p", now), Cached::Miss);
        assert_eq!(c.get("n4.i2p", now), Cached::Hit(res(4)));
        // A negative entry expires sooner than the positives: it goes first.
        c.insert("neg.i2p", None, now);
        assert_eq!(c.len(), 3);
        c.insert("n5.i2p", Some(res(5)), now);
        assert_eq!(c.get("neg.i2p", now), Cached::Miss);
        assert_eq!(c.len(), 3);
        // Expired entries are all swept before anything live is evicted.
        let later = t0 + NAME_TTL + Duration::from_secs(10);
        c.insert("n6.i2p", Some(res(6)), later);
        assert_eq!(c.len(), 1);
        // Updating a present name never evicts.
        let mut c = NameCache::new(1);
        c.insert("x.i2p", None, t0);
        c.insert("x.i2p", Some(res(1)), t0);
        assert_eq!(c.get("x.i2p", t0), Cached::Hit(res(1)));
        // A zero-sized cache keeps nothing.
        let mut c = NameCache::new(0);
        c.insert("x.i2p", Some(res(1)), t0);
        assert_eq!(c.get("x.i2p", t0), Cached::Miss);
    }
}
