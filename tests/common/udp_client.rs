//! A SOCKS5 UDP client for tests: a TCP control connection carrying UDP
//! ASSOCIATE (RFC 1928 §7), then SOCKS UDP datagrams (`RSV RSV FRAG ATYP
//! DST.ADDR DST.PORT DATA`) through the relay it was given.
//! [`udp_echo_roundtrip`] drives a whole echo exchange, for the fake bridge
//! and for a real router alike. Exact bytes are written by hand here, never
//! by the proxy's own codec, so the tests check the proxy against the RFC.

#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use super::proxy::{connect, read_exact_by, send, socks5_greet, IO_TIMEOUT};
use super::rng::Rng;
use std::io::ErrorKind;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

/// Largest datagram we expect back.
const RECV_BUF: usize = 65536;
/// Sends of one datagram before [`udp_echo_roundtrip`] gives up on it.
pub const ATTEMPTS: usize = 3;

/// A live association: keep `control` open or it ends.
pub struct UdpAssoc {
    pub control: TcpStream,
    pub udp: UdpSocket,
    /// BND.ADDR:BND.PORT from the reply.
    pub relay: SocketAddr,
    /// The reply's exact bytes.
    pub reply: Vec<u8>,
}

/// A datagram the proxy delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// DST.ADDR: the name for ATYP=3, the IP as text otherwise.
    pub host: String,
    pub port: u16,
    pub data: Vec<u8>,
    pub atyp: u8,
    pub frag: u8,
}

/// The UDP ASSOCIATE request bytes with an IPv4 address.
pub fn associate_request(addr: [u8; 4], port: u16) -> Vec<u8> {
    let mut v = vec![5, 3, 0, 1];
    v.extend_from_slice(&addr);
    v.extend_from_slice(&port.to_be_bytes());
    v
}

/// Greeting (+ RFC 1929 auth), then UDP ASSOCIATE with `request` (None:
/// all zeros; Some: the given address, e.g. our UDP socket's). Err holds the
/// reply code if the proxy refused.
pub fn associate_from(
    proxy: SocketAddr,
    creds: Option<(&str, &str)>,
    udp: UdpSocket,
    request: Option<SocketAddr>,
) -> Result<UdpAssoc, u8> {
    let mut s = connect(proxy);
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    socks5_greet(&mut s, creds);
    let req = match request {
        Some(SocketAddr::V4(a)) => associate_request(a.ip().octets(), a.port()),
        Some(SocketAddr::V6(_)) => panic!("IPv4 only"),
        None => associate_request([0; 4], 0),
    };
    send(&mut s, &req);
    // Session creation on a real router takes ~20 s.
    let head = read_exact_by(&mut s, 4, Duration::from_secs(60));
    assert_eq!(head[0], 5, "reply version");
    if head[1] != 0 {
        return Err(head[1]);
    }
    let (ip, rest) = match head[3] {
        1 => {
            let b = read_exact_by(&mut s, 6, IO_TIMEOUT);
            (IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3])), b)
        }
        4 => {
            let b = read_exact_by(&mut s, 18, IO_TIMEOUT);
            let a: [u8; 16] = b[..16].try_into().unwrap();
            (IpAddr::V6(Ipv6Addr::from(a)), b)
        }
        other => panic!("unexpected BND ATYP {other}"),
    };
    let port = u16::from_be_bytes([rest[rest.len() - 2], rest[rest.len() - 1]]);
    let mut reply = head;
    reply.extend_from_slice(&rest);
    Ok(UdpAssoc { control: s, udp, relay: SocketAddr::new(ip, port), reply })
}

/// [`associate_from`] with a fresh UDP socket on 127.0.0.1 and an all-zero request.
pub fn associate(proxy: SocketAddr, creds: Option<(&str, &str)>) -> Result<UdpAssoc, u8> {
    associate_from(proxy, creds, UdpSocket::bind("127.0.0.1:0").unwrap(), None)
}

/// `00 00 FRAG 03 LEN host PORT data`.
pub fn datagram(frag: u8, host: &str, port: u16, data: &[u8]) -> Vec<u8> {
    let mut v = vec![0, 0, frag, 3, host.len() as u8];
    v.extend_from_slice(host.as_bytes());
    v.extend_from_slice(&port.to_be_bytes());
    v.extend_from_slice(data);
    v
}

/// Parse a SOCKS UDP datagram (panics on a malformed one: the proxy sent it).
pub fn parse(d: &[u8]) -> Received {
    assert!(d.len() >= 4 && d[0] == 0 && d[1] == 0, "bad RSV in {d:02x?}");
    let (host, rest) = match d[3] {
        1 => (Ipv4Addr::new(d[4], d[5], d[6], d[7]).to_string(), &d[8..]),
        3 => {
            let n = usize::from(d[4]);
            (String::from_utf8(d[5..5 + n].to_vec()).unwrap(), &d[5 + n..])
        }
        4 => {
            let a: [u8; 16] = d[4..20].try_into().unwrap();
            (Ipv6Addr::from(a).to_string(), &d[20..])
        }
        other => panic!("bad ATYP {other}"),
    };
    Received {
        host,
        port: u16::from_be_bytes([rest[0], rest[1]]),
        data: rest[2..].to_vec(),
        atyp: d[3],
        frag: d[2],
    }
}

impl UdpAssoc {
    /// Send a SOCKS UDP datagram to `host:port` (ATYP=3).
    pub fn send(&self, host: &str, port: u16, data: &[u8]) {
        self.send_raw(&datagram(0, host, port, data));
    }

    pub fn send_raw(&self, bytes: &[u8]) {
        self.udp.send_to(bytes, self.relay).unwrap();
    }

    /// The next datagram from the relay within `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<Received> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; RECV_BUF];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.udp.set_read_timeout(Some(left)).unwrap();
            match self.udp.recv_from(&mut buf) {
                Ok((n, from)) => {
                    assert_eq!(from, self.relay, "a datagram from somewhere else than the relay");
                    return Some(parse(&buf[..n]));
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return None,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::ConnectionRefused => return None,
                Err(e) => panic!("UDP receive: {e}"),
            }
        }
    }

    /// Nothing arrives for `wait`.
    pub fn silent_for(&self, wait: Duration) -> bool {
        self.recv(wait).is_none()
    }
}

/// What an echo run saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EchoReport {
    pub sent: usize,
    /// Datagrams that had to be sent more than once.
    pub resent: usize,
    /// The sender every echo came from (a `.b32.i2p`).
    pub sender: String,
}

/// An echo exchange: `count` datagrams of `size` bytes (at least 16) to
/// `target:port`, one at a time, each expected back intact from `sender`
/// (any single sender if None) within `timeout` per attempt, [`ATTEMPTS`]
/// attempts each.
#[derive(Debug, Clone, Copy)]
pub struct Echo<'a> {
    pub target: &'a str,
    pub port: u16,
    pub sender: Option<&'a str>,
    pub count: usize,
    pub size: usize,
    pub timeout: Duration,
}

/// Through the proxy at `proxy`: UDP ASSOCIATE (with `creds`), then the
/// exchange `echo`. The association is closed at the end.
pub fn udp_echo_roundtrip(
    proxy: SocketAddr,
    creds: Option<(&str, &str)>,
    echo: &Echo<'_>,
) -> Result<EchoReport, String> {
    let a = associate(proxy, creds).map_err(|rep| format!("UDP ASSOCIATE refused with {rep:#04x}"))?;
    echo_on(&a, echo)
}

/// The exchange `e` on an existing association.
pub fn echo_on(a: &UdpAssoc, e: &Echo<'_>) -> Result<EchoReport, String> {
    assert!(e.size >= 16, "room for the sequence number and run id");
    let run = u64::from(std::process::id()) << 32 ^ u64::from(a.relay.port());
    let mut report = EchoReport { sent: 0, resent: 0, sender: e.sender.unwrap_or_default().to_string() };
    for seq in 0..e.count as u64 {
        let mut payload = vec![0u8; e.size];
        payload[..8].copy_from_slice(&seq.to_be_bytes());
        payload[8..16].copy_from_slice(&run.to_be_bytes());
        Rng::new(seq).fill(&mut payload[16..]);
        let mut got = false;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                report.resent += 1;
                eprintln!("udp echo: datagram {seq}: no echo within {:?}, sent again", e.timeout);
            }
            a.send(e.target, e.port, &payload);
            let deadline = Instant::now() + e.timeout;
            while let Some(r) = a.recv(deadline.saturating_duration_since(Instant::now())) {
                if r.data.get(..16) != payload.get(..16) {
                    continue; // a late echo of an earlier datagram
                }
                if r.atyp != 3 || r.frag != 0 {
                    return Err(format!("datagram {seq}: ATYP {} FRAG {}", r.atyp, r.frag));
                }
                if report.sender.is_empty() {
                    report.sender = r.host.clone();
                }
                if r.host != report.sender {
                    return Err(format!("datagram {seq}: sender {} instead of {}", r.host, report.sender));
                }
                if r.data != payload {
                    return Err(format!("datagram {seq}: payload altered ({} bytes back)", r.data.len()));
                }
                got = true;
                break;
            }
            if got {
                break;
            }
        }
        if !got {
            return Err(format!("datagram {seq} of {}: no echo after {ATTEMPTS} attempts", e.count));
        }
        report.sent += 1;
    }
    Ok(report)
}
