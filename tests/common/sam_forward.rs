//! A local service published on a SAM bridge the way an i2pd server tunnel publishes one,
//! for routers that have no server tunnels of their own (tests/common/emissary.rs): a STREAM
//! session with a fixed key, held by the test, and `STREAM FORWARD` to a local listener here.
//!
//! For every stream the router connects to that listener and sends the peer's destination
//! line (`<base64 dest>[ FROM_PORT=n TO_PORT=n]\n`, SAM v3 "STREAM FORWARD", `SILENT=false`)
//! before the payload. The listener takes that line off, reads the peer's `.b32.i2p` from it,
//! connects to the backend (tests/common/http.rs) and relays both ways. For an HTTP backend
//! it puts `X-I2P-DestB32: <peer b32>` after the request line, as i2pd's `type = http` tunnel
//! does, so the site's `/echo-headers` names the client's identity on either router.
//!
//! Test-only: one thread per stream, every read bounded; dropping the [`Published`] ends the
//! session (its control socket closes) and the listener.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use super::i2p::{b32_of_blob, b64_decode};
use super::ports::random_u64;
use super::sam_client::{Sam, REPLY_TIMEOUT};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// Longest peer or request line read (a destination is ~520 base64 characters).
const MAX_HEAD_LINE: usize = 8 << 10;
/// A stream idle this long in either direction ends (a stuck peer must not pin threads).
const IDLE: Duration = Duration::from_secs(60);
/// Relay buffer.
const CHUNK: usize = 16 << 10;

/// What the listener puts in front of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// An HTTP/1.x server: the request gets an `X-I2P-DestB32` header.
    Http(SocketAddr),
    /// Any TCP service: bytes pass unchanged.
    Raw(SocketAddr),
}

/// A published service; dropping it closes its session and listener.
pub struct Published {
    // Dropped first: the session's control socket, then the forward socket.
    control: Sam,
    forward: Sam,
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
    accept: Option<thread::JoinHandle<()>>,
}

impl Drop for Published {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.control.stream().shutdown(Shutdown::Both);
        let _ = self.forward.stream().shutdown(Shutdown::Both);
        // Wake the blocking accept() so the loop sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

/// Publishes `backend` on the bridge at `sam` under the private key `key` (I2P base64) with
/// SESSION CREATE `options` (the router's tunnel options).
pub fn publish(sam: SocketAddr, key: &str, options: &str, backend: Backend) -> io::Result<Published> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let id = format!("fwd{:016x}", random_u64());
    let mut control = Sam::connect(sam)?;
    control.session_create("STREAM", &id, key, options)?;
    let mut forward = Sam::connect(sam)?;
    forward.command(
        &format!("STREAM FORWARD ID={id} PORT={} HOST=127.0.0.1 SILENT=false", addr.port()),
        "RESULT=OK",
        REPLY_TIMEOUT,
    )?;
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = Arc::clone(&stop);
    let accept = thread::Builder::new().name("sam-forward".into()).spawn(move || {
        for conn in listener.incoming() {
            if stop2.load(Ordering::SeqCst) {
                break;
            }
            let Ok(conn) = conn else { continue };
            let _ = thread::Builder::new().spawn(move || {
                let _ = serve(conn, backend);
            });
        }
    })?;
    Ok(Published { control, forward, stop, addr, accept: Some(accept) })
}

/// One line up to `\n` (kept), a byte at a time so nothing after it is read.
fn read_line(s: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.len() < MAX_HEAD_LINE {
        if s.read(&mut b)? == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "stream ended inside a line"));
        }
        line.push(b[0]);
        if b[0] == b'\n' {
            return Ok(line);
        }
    }
    Err(io::Error::other("line too long"))
}

fn serve(mut conn: TcpStream, backend: Backend) -> io::Result<()> {
    conn.set_read_timeout(Some(IDLE))?;
    conn.set_write_timeout(Some(IDLE))?;
    let head = read_line(&mut conn)?;
    let head = String::from_utf8_lossy(&head);
    let b32 = head
        .split_whitespace()
        .next()
        .and_then(b64_decode)
        .and_then(|blob| b32_of_blob(&blob))
        .ok_or_else(|| io::Error::other(format!("not a destination line: {head:?}")))?;
    let (Backend::Http(to) | Backend::Raw(to)) = backend;
    let mut server = TcpStream::connect_timeout(&to, IDLE)?;
    server.set_read_timeout(Some(IDLE))?;
    server.set_write_timeout(Some(IDLE))?;
    if let Backend::Http(_) = backend {
        let request = read_line(&mut conn)?;
        server.write_all(&request)?;
        server.write_all(format!("X-I2P-DestB32: {b32}\r\n").as_bytes())?;
    }
    let (mut up_from, mut up_to) = (conn.try_clone()?, server.try_clone()?);
    let up = thread::spawn(move || {
        let _ = copy(&mut up_from, &mut up_to);
        let _ = up_to.shutdown(Shutdown::Write);
    });
    let _ = copy(&mut server, &mut conn);
    let _ = conn.shutdown(Shutdown::Write);
    let _ = up.join();
    Ok(())
}

/// Copies until EOF (or an error, or [`IDLE`] without a byte).
fn copy(from: &mut TcpStream, to: &mut TcpStream) -> io::Result<()> {
    let mut buf = vec![0u8; CHUNK];
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            return Ok(());
        }
        to.write_all(&buf[..n])?;
    }
}
