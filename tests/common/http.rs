//! Local test servers behind the router's server tunnels: a tiny HTTP/1.0 server and a raw
//! TCP echo server, both on 127.0.0.1 with a kernel-chosen port, one thread per connection.
//!
//! The HTTP server answers `GET /` (a small page containing [`MARKER`]), `GET /bytes/<n>`
//! (the first n bytes of tests/common/rng.rs's pattern, see [`expected_sha256`]) and
//! `GET /echo-headers` (the request's header lines as the body), plus the files of
//! directories mounted with [`HttpServer::serve_dir`] (a bare git repository for git's "dumb
//! HTTP"). It records the `X-I2P-DestB32` header that i2pd's `type = http` server tunnel
//! adds with the *client's* destination, so a test can tell which I2P identity made a
//! request. It is not a general HTTP server: no keep-alive, no bodies,
//! no chunking; every response closes the connection. Test-only code: it panics on setup
//! failure, never on what a client sends.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use super::rng::for_each_pattern_chunk;
use sha2::{Digest, Sha256};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// Fixed string in the `GET /` page; tests assert it came through.
pub const MARKER: &str = "i2psocks-testsite-marker-5d1c0e";
/// Largest `/bytes/<n>` served (bigger requests get 400).
pub const MAX_BYTES: u64 = 256 << 20;
/// Connections the HTTP server serves at once; beyond it new ones are closed at once.
const MAX_CONNECTIONS: usize = 64;
/// Connections the echo server serves at once: every stream a proxy with the
/// default `--max-clients` (1024) keeps open, its client's FIN held, keeps
/// an echo connection too, and the bench's cycle rows through two such
/// proxies and i2pd's SOCKS port follow each other within the hold.
const ECHO_MAX_CONNECTIONS: usize = 2048;
/// Largest request head (request line + headers) read.
const MAX_HEAD: usize = 16 << 10;
/// Idle limit on a client socket, so a stuck peer cannot pin a thread forever.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// Requests remembered for inspection (the oldest are dropped beyond it).
const MAX_RECORDED: usize = 10_000;

/// The page served at `/`.
pub fn index_html() -> String {
    format!("<!DOCTYPE html>\n<html><head><title>i2psocks test site</title></head>\n<body><p>{MARKER}</p></body></html>\n")
}

/// SHA-256 of `/bytes/<n>`, as lowercase hex (computed without holding it all).
pub fn expected_sha256(n: usize) -> String {
    let mut h = Sha256::new();
    let _ = for_each_pattern_chunk(n, |chunk| {
        h.update(chunk);
        Ok(())
    });
    hex(&h.finalize())
}

/// Lowercase hex of a digest (helper for comparing with [`expected_sha256`]).
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Request {
    pub path: String,
    /// Header lines as received, in order, name and value trimmed.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// First header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Accept loop shared by both servers: bounded threads, stoppable by [`Listener::drop`].
struct Listener {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Listener {
    fn spawn<F>(name: &str, max_connections: usize, handler: F) -> Listener
    where
        F: Fn(TcpStream) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind test server on 127.0.0.1:0");
        let addr = listener.local_addr().expect("test server address");
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let handler = Arc::new(handler);
        let active = Arc::new(AtomicUsize::new(0));
        let thread = thread::Builder::new()
            .name(format!("{name}-accept"))
            .spawn(move || {
                for conn in listener.incoming() {
                    if stop2.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    if active.fetch_add(1, Ordering::SeqCst) >= max_connections {
                        active.fetch_sub(1, Ordering::SeqCst);
                        drop(conn);
                        continue;
                    }
                    let _ = conn.set_read_timeout(Some(IO_TIMEOUT));
                    let _ = conn.set_write_timeout(Some(IO_TIMEOUT));
                    let handler = Arc::clone(&handler);
                    let active2 = Arc::clone(&active);
                    let spawned = thread::Builder::new().spawn(move || {
                        handler(conn);
                        active2.fetch_sub(1, Ordering::SeqCst);
                    });
                    if spawned.is_err() {
                        active.fetch_sub(1, Ordering::SeqCst);
                    }
                }
            })
            .expect("spawn test server thread");
        Listener { addr, stop, thread: Some(thread) }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept() so the loop sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The HTTP test server; stops when dropped.
pub struct HttpServer {
    listener: Listener,
    requests: Arc<Mutex<Vec<Request>>>,
    dirs: Arc<Mutex<Vec<(String, PathBuf)>>>,
}

impl HttpServer {
    pub fn start() -> HttpServer {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let rec = Arc::clone(&requests);
        let dirs: Arc<Mutex<Vec<(String, PathBuf)>>> = Arc::default();
        let d = Arc::clone(&dirs);
        let listener = Listener::spawn("http", MAX_CONNECTIONS, move |conn| {
            let _ = serve_http(conn, &rec, &d);
        });
        HttpServer { listener, requests, dirs }
    }

    /// Serves the regular files under `dir` at `/<name>/<relative path>` from now on (no
    /// listings; paths with `..`, `.` or empty components get 404). `name` is one path
    /// segment, e.g. `repo.git`.
    pub fn serve_dir(&self, name: &str, dir: &Path) {
        assert!(!name.is_empty() && !name.contains('/'), "one path segment: {name:?}");
        self.dirs.lock().unwrap().push((format!("/{name}/"), dir.to_path_buf()));
    }

    pub fn addr(&self) -> SocketAddr {
        self.listener.addr
    }

    /// Every request served so far, oldest first.
    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// The `X-I2P-DestB32` values (client destinations, `<52 chars>.b32.i2p`) of the
    /// requests so far, oldest first; requests without the header are skipped.
    pub fn dest_b32s(&self) -> Vec<String> {
        self.requests().iter().filter_map(|r| r.header("X-I2P-DestB32").map(str::to_owned)).collect()
    }

    /// Forget recorded requests (e.g. between test cases sharing one router).
    pub fn clear(&self) {
        if let Ok(mut r) = self.requests.lock() {
            r.clear();
        }
    }
}

fn serve_http(
    conn: TcpStream,
    rec: &Mutex<Vec<Request>>,
    dirs: &Mutex<Vec<(String, PathBuf)>>,
) -> io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?).take(MAX_HEAD as u64);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut words = line.split_whitespace();
    let method = words.next().unwrap_or("").to_owned();
    let path = words.next().unwrap_or("").to_owned();
    let mut headers = Vec::new();
    let mut raw_headers = String::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 {
            break; // EOF or head too long: answer with what we have
        }
        if h.trim_end().is_empty() {
            break;
        }
        raw_headers.push_str(&h);
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    if let Ok(mut r) = rec.lock() {
        if r.len() >= MAX_RECORDED {
            r.remove(0);
        }
        r.push(Request { path: path.clone(), headers });
    }
    let mut out = conn;
    if method != "GET" {
        return respond(&mut out, "405 Method Not Allowed", "text/plain", b"GET only\n");
    }
    if path == "/" || path == "/index.html" {
        return respond(&mut out, "200 OK", "text/html", index_html().as_bytes());
    }
    if path == "/echo-headers" {
        return respond(&mut out, "200 OK", "text/plain", raw_headers.as_bytes());
    }
    if let Some(n) = path.strip_prefix("/bytes/") {
        return match n.parse::<u64>() {
            Ok(n) if n <= MAX_BYTES => send_bytes(&mut out, n as usize),
            _ => respond(&mut out, "400 Bad Request", "text/plain", b"bad size\n"),
        };
    }
    if let Some(file) = mounted_file(&path, dirs) {
        if let Ok(body) = std::fs::read(file) {
            return respond(&mut out, "200 OK", "application/octet-stream", &body);
        }
    }
    respond(&mut out, "404 Not Found", "text/plain", b"not found\n")
}

/// The file a request path names under a [`HttpServer::serve_dir`] mount, if it is one.
fn mounted_file(path: &str, dirs: &Mutex<Vec<(String, PathBuf)>>) -> Option<PathBuf> {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let dirs = dirs.lock().ok()?;
    let (prefix, dir) = dirs.iter().find(|(p, _)| path.starts_with(p.as_str()))?;
    let rest = &path[prefix.len()..];
    if rest.split('/').any(|c| c.is_empty() || c == "." || c == ".." || c.contains('\\')) {
        return None;
    }
    let file = dir.join(rest);
    file.is_file().then_some(file)
}

fn respond(out: &mut TcpStream, status: &str, ctype: &str, body: &[u8]) -> io::Result<()> {
    let head = format!(
        "HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    out.write_all(head.as_bytes())?;
    out.write_all(body)?;
    out.flush()?;
    let _ = out.shutdown(Shutdown::Write);
    Ok(())
}

fn send_bytes(out: &mut TcpStream, n: usize) -> io::Result<()> {
    let head = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"
    );
    out.write_all(head.as_bytes())?;
    for_each_pattern_chunk(n, |chunk| out.write_all(chunk))?;
    out.flush()?;
    let _ = out.shutdown(Shutdown::Write);
    Ok(())
}

/// The raw TCP echo server: copies every byte back until the client's EOF, then closes.
/// Stops when dropped.
pub struct EchoServer {
    listener: Listener,
    connections: Arc<AtomicUsize>,
}

impl EchoServer {
    pub fn start() -> EchoServer {
        let connections = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&connections);
        let listener = Listener::spawn("echo", ECHO_MAX_CONNECTIONS, move |conn| {
            count.fetch_add(1, Ordering::SeqCst);
            let _ = echo(conn);
        });
        EchoServer { listener, connections }
    }

    pub fn addr(&self) -> SocketAddr {
        self.listener.addr
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn echo(conn: TcpStream) -> io::Result<()> {
    let mut rd = conn.try_clone()?;
    let mut wr = conn;
    io::copy(&mut rd, &mut wr)?;
    wr.shutdown(Shutdown::Both)
}
