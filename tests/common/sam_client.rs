//! A tiny blocking SAM v3 client for tests (destinations and base64: tests/common/i2p.rs).
//!
//! It plays the parts the proxy does not: the accepting side of a stream (`STREAM ACCEPT`),
//! a datagram peer, name lookups and key generation, against the real router. It is not the
//! proxy's client and is deliberately simple: one command per write, reply lines read a byte
//! at a time (so no payload is lost to read-ahead), every read bounded by a timeout. Errors
//! are `io::Error`s carrying the router's reply line.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use super::i2p::param;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

/// Longest reply line accepted (a DEST REPLY with both keys is ~1.5 KiB).
const MAX_LINE: usize = 16 << 10;
/// Wait for an ordinary reply.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
/// Wait for SESSION CREATE: i2pd 2.45 needs 20 s for each.
pub const SESSION_TIMEOUT: Duration = Duration::from_secs(90);
/// Options every test session needs on this router (0-hop tunnels, few of them).
pub const ZERO_HOPS: &str = "inbound.length=0 outbound.length=0 inbound.quantity=1 outbound.quantity=1";
/// What the side that is connected to must publish on i2pd 2.45 (a type-1 ElGamal LeaseSet).
pub const LS1: &str = "i2cp.leaseSetType=1 i2cp.leaseSetEncType=0";
/// Pause between HELLO attempts while a router starts (i2pd answers ~0.05 s after exec).
const HELLO_POLL: Duration = Duration::from_millis(20);

/// One SAM socket after a successful HELLO.
pub struct Sam {
    stream: TcpStream,
    /// The HELLO REPLY line.
    pub hello: String,
}

impl Sam {
    /// Connects and says HELLO (3.1..3.3; i2pd 2.45 answers 3.1).
    pub fn connect(addr: SocketAddr) -> io::Result<Sam> {
        let stream = TcpStream::connect_timeout(&addr, REPLY_TIMEOUT)?;
        stream.set_nodelay(true)?;
        let mut sam = Sam { stream, hello: String::new() };
        sam.hello = sam.command("HELLO VERSION MIN=3.1 MAX=3.3", "RESULT=OK", REPLY_TIMEOUT)?;
        Ok(sam)
    }

    /// Sends one command line (in one write) and returns its reply line; an error if the
    /// reply lacks `expect` (e.g. `RESULT=OK`).
    pub fn command(&mut self, line: &str, expect: &str, wait: Duration) -> io::Result<String> {
        self.stream.write_all(format!("{line}\n").as_bytes())?;
        let reply = self.read_line(wait)?;
        if reply.contains(expect) {
            Ok(reply)
        } else {
            Err(io::Error::other(format!("SAM `{}` → `{reply}`", redact(line))))
        }
    }

    /// Reads one `\n`-terminated line without read-ahead (bytes after it stay in the socket).
    pub fn read_line(&mut self, wait: Duration) -> io::Result<String> {
        self.stream.set_read_timeout(Some(wait))?;
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        loop {
            if self.stream.read(&mut byte)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("SAM closed after `{}`", String::from_utf8_lossy(&line)),
                ));
            }
            if byte[0] == b'\n' {
                break;
            }
            if line.len() >= MAX_LINE {
                return Err(io::Error::other("SAM reply line too long"));
            }
            line.push(byte[0]);
        }
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        Ok(String::from_utf8_lossy(&line).into_owned())
    }

    /// `SESSION CREATE STYLE=<style> ID=<id> DESTINATION=<dest> SIGNATURE_TYPE=7 <options>`;
    /// returns the private destination (base64) from the reply. Keep the `Sam` alive:
    /// closing the control socket ends the session. `dest` is `TRANSIENT` or a private key
    /// in I2P base64. `options` start with the router's tunnel options
    /// (tests/common/router.rs, `peer_options`: [`ZERO_HOPS`] and [`LS1`] on i2pd); a
    /// DATAGRAM session forwarding to UDP adds `PORT=n HOST=127.0.0.1`.
    pub fn session_create(&mut self, style: &str, id: &str, dest: &str, options: &str) -> io::Result<String> {
        self.session_create_within(style, id, dest, options, SESSION_TIMEOUT)
    }

    /// [`Sam::session_create`] answered within `wait`.
    pub fn session_create_within(
        &mut self,
        style: &str,
        id: &str,
        dest: &str,
        options: &str,
        wait: Duration,
    ) -> io::Result<String> {
        let line =
            format!("SESSION CREATE STYLE={style} ID={id} DESTINATION={dest} SIGNATURE_TYPE=7 {options}");
        let reply = self.command(line.trim_end(), "RESULT=OK", wait)?;
        param(&reply, "DESTINATION")
            .map(str::to_owned)
            .ok_or_else(|| io::Error::other("SESSION STATUS without DESTINATION"))
    }

    /// `NAMING LOOKUP NAME=<name>` → the base64 public destination (`ME` on a session's
    /// control socket = our own).
    pub fn naming_lookup(&mut self, name: &str) -> io::Result<String> {
        self.naming_lookup_within(name, REPLY_TIMEOUT)
    }

    /// [`Sam::naming_lookup`] answered within `wait`.
    pub fn naming_lookup_within(&mut self, name: &str, wait: Duration) -> io::Result<String> {
        let reply = self.command(&format!("NAMING LOOKUP NAME={name}"), "RESULT=OK", wait)?;
        param(&reply, "VALUE")
            .map(str::to_owned)
            .ok_or_else(|| io::Error::other(format!("NAMING REPLY without VALUE: {reply}")))
    }

    /// `DEST GENERATE SIGNATURE_TYPE=7` → (public, private) in I2P base64.
    pub fn dest_generate(&mut self) -> io::Result<(String, String)> {
        let reply = self.command("DEST GENERATE SIGNATURE_TYPE=7", "DEST", REPLY_TIMEOUT)?;
        match (param(&reply, "PUB"), param(&reply, "PRIV")) {
            (Some(p), Some(k)) => Ok((p.to_owned(), k.to_owned())),
            _ => Err(io::Error::other("DEST REPLY without PUB/PRIV")),
        }
    }

    /// The socket, e.g. to carry payload after a STREAM reply.
    pub fn into_stream(self) -> TcpStream {
        self.stream
    }

    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }
}

/// Waits up to `timeout` until the bridge at `addr` answers HELLO, while `alive()` says its
/// router still runs.
pub fn wait_hello(
    addr: SocketAddr,
    timeout: Duration,
    alive: &mut dyn FnMut() -> bool,
) -> Result<(), String> {
    let deadline = std::time::Instant::now() + timeout;
    let mut last = String::from("no attempt");
    while std::time::Instant::now() < deadline {
        if !alive() {
            return Err("the router exited".into());
        }
        match Sam::connect(addr) {
            Ok(_) => return Ok(()),
            Err(e) => last = e.to_string(),
        }
        std::thread::sleep(HELLO_POLL);
    }
    Err(format!("SAM on {addr} did not answer HELLO within {timeout:?}: {last}"))
}

/// A stream accepted through `STREAM ACCEPT`.
pub struct Accepted {
    /// The connecting peer's base64 destination (first line i2pd sends).
    pub peer: String,
    /// Raw payload from here on.
    pub stream: TcpStream,
}

/// Arms one `STREAM ACCEPT` on session `id` (a fresh socket). Returns once the router said
/// OK; call [`PendingAccept::wait`] to block for the incoming connection.
pub fn stream_accept(addr: SocketAddr, id: &str) -> io::Result<PendingAccept> {
    let mut sam = Sam::connect(addr)?;
    sam.command(&format!("STREAM ACCEPT ID={id} SILENT=false"), "RESULT=OK", REPLY_TIMEOUT)?;
    Ok(PendingAccept { sam })
}

pub struct PendingAccept {
    sam: Sam,
}

impl PendingAccept {
    /// Waits up to `wait` for a peer; i2pd then sends `<peer b64 dest>\n` before payload.
    pub fn wait(mut self, wait: Duration) -> io::Result<Accepted> {
        let line = self.sam.read_line(wait)?;
        let peer = line.split_whitespace().next().unwrap_or("").to_owned();
        let stream = self.sam.into_stream();
        stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
        Ok(Accepted { peer, stream })
    }
}

/// `STREAM CONNECT ID=<id> DESTINATION=<dest> SILENT=false` on a fresh socket; returns it
/// ready for raw payload.
pub fn stream_connect(addr: SocketAddr, id: &str, dest: &str) -> io::Result<TcpStream> {
    let mut sam = Sam::connect(addr)?;
    sam.command(
        &format!("STREAM CONNECT ID={id} DESTINATION={dest} SILENT=false"),
        "RESULT=OK",
        Duration::from_secs(90),
    )?;
    let stream = sam.into_stream();
    stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
    Ok(stream)
}

/// Sends one repliable datagram through the bridge's UDP port (TCP SAM port - 1 on i2pd).
/// i2pd wants a base64 destination here (no b32 or names).
pub fn datagram_send(
    sock: &UdpSocket,
    sam_udp: SocketAddr,
    id: &str,
    dest_b64: &str,
    payload: &[u8],
) -> io::Result<()> {
    let mut pkt = format!("3.0 {id} {dest_b64}\n").into_bytes();
    pkt.extend_from_slice(payload);
    sock.send_to(&pkt, sam_udp).map(|_| ())
}

/// Splits a datagram forwarded by the router to our UDP port: `<sender b64>[ opts]\n` +
/// payload → (sender, payload).
pub fn datagram_parse(pkt: &[u8]) -> Option<(String, Vec<u8>)> {
    let nl = pkt.iter().position(|&b| b == b'\n')?;
    let head = String::from_utf8_lossy(&pkt[..nl]);
    let sender = head.split_whitespace().next()?.to_owned();
    Some((sender, pkt[nl + 1..].to_vec()))
}

/// Hides private keys in error messages (the DESTINATION of a SESSION CREATE).
fn redact(line: &str) -> String {
    line.split_whitespace()
        .map(|w| match w.split_once('=') {
            Some((k, v)) if k == "DESTINATION" && v.len() > 600 => "DESTINATION=<private>",
            _ => w,
        })
        .collect::<Vec<_>>()
        .join(" ")
}
