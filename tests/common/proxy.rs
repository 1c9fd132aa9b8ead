//! Runs the real `i2psocks` binary for black-box tests and the bench, and a small SOCKS
//! client to talk to it.
//!
//! [`Proxy`] starts the binary on `127.0.0.1:0`, keeps every stderr line
//! (echoed to the test's stderr), parses the `listening on ADDR:PORT` line
//! of the CLI contract, and kills the process when dropped. The SOCKS helpers
//! write exact RFC 1928 / SOCKS4a bytes and read replies with deadlines; they
//! are not a general SOCKS client (no BIND, no UDP). [`socks5_handshake`] is the
//! plain client's CONNECT, for probes and load, where a refusal is a result, not a
//! test failure.

#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use super::process::{children, terminate, Stopped};
use std::io::{self, BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long the binary gets to print its `listening on` line.
pub const START_TIMEOUT: Duration = Duration::from_secs(10);
/// Default deadline of the SOCKS helpers.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Most stderr lines kept (a runaway logger must not eat the test's memory).
const MAX_LINES: usize = 100_000;
/// Logged once a SAM session is up, followed by its `.b32.i2p` (CLI contract).
pub const READY: &str = "I2P destination ready: ";

/// `-s <sam> --hops 0 --tunnels 1 <args>`: the proxy on a bridge, with the zero-hop,
/// one-tunnel sessions every test and the bench use (quick to build on a real router).
pub fn bridge_args<'a>(sam: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec!["-s", sam, "--hops", "0", "--tunnels", "1"];
    all.extend_from_slice(args);
    all
}

/// For tests that count the SAM sessions of the default identity and of
/// identities made on demand: no spare sessions beside them (the spares'
/// own tests are tests/spares.rs).
pub const NO_SPARES: [&str; 2] = ["--spare-sessions", "0"];

/// The binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_i2psocks")
}

#[derive(Default)]
struct Lines {
    lines: Vec<String>,
    eof: bool,
}

/// A running i2psocks.
pub struct Proxy {
    child: Child,
    addr: SocketAddr,
    lines: Arc<(Mutex<Lines>, Condvar)>,
    reader: Option<JoinHandle<()>>,
    /// Started through a wrapper program (see [`Proxy::start_wrapped`]).
    wrapped: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Proxy {
    /// Start `i2psocks -l 127.0.0.1:0 <args>` (no `-l` added if `args` has
    /// one) and wait for `listening on ADDR:PORT`. Panics if it does not come.
    pub fn start(args: &[&str]) -> Proxy {
        Proxy::start_wrapped(&[], args)
    }

    /// Like [`Proxy::start`], but run as `wrapper... <binary> <args>`: e.g.
    /// `["strace", "-f", "-o", FILE]`, or `["bash", "-c", "ulimit -n 64; exec \"$0\" \"$@\""]`
    /// (bash's `exec` keeps the pid, so [`Proxy::pid`] is the proxy's). With a
    /// wrapper that stays (strace), [`Proxy::inner_pid`] finds the proxy, and
    /// Drop kills the wrapper's children first.
    pub fn start_wrapped(wrapper: &[&str], args: &[&str]) -> Proxy {
        Proxy::start_binary(bin(), wrapper, args, START_TIMEOUT)
    }

    /// Like [`Proxy::start_wrapped`], for another build of i2psocks at `binary` (the bench
    /// measures the release binary, or two of them), with `start_timeout` for the
    /// `listening on` line (a profiler as the wrapper slows the start).
    pub fn start_binary(binary: &str, wrapper: &[&str], args: &[&str], start_timeout: Duration) -> Proxy {
        let has_listen = args.iter().any(|a| *a == "-l" || *a == "--listen" || a.starts_with("--listen="));
        let mut full: Vec<&str> = Vec::new();
        if !has_listen {
            full.extend(["-l", "127.0.0.1:0"]);
        }
        full.extend_from_slice(args);
        let mut cmd = match wrapper.split_first() {
            None => Command::new(binary),
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(binary);
                c
            }
        };
        let mut child = cmd
            .args(&full)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn i2psocks");
        let stderr = child.stderr.take().unwrap();
        let lines: Arc<(Mutex<Lines>, Condvar)> = Arc::default();
        let l2 = Arc::clone(&lines);
        let pid = child.id();
        let reader = thread::spawn(move || {
            let mut r = BufReader::new(stderr);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let line = String::from_utf8_lossy(&buf).trim_end_matches(['\n', '\r']).to_string();
                        eprintln!("[i2psocks {pid}] {line}");
                        let mut g = lock(&l2.0);
                        if g.lines.len() < MAX_LINES {
                            g.lines.push(line);
                        }
                        l2.1.notify_all();
                    }
                }
            }
            lock(&l2.0).eof = true;
            l2.1.notify_all();
        });
        let mut p = Proxy {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            lines,
            reader: Some(reader),
            wrapped: !wrapper.is_empty(),
        };
        let line = p
            .wait_for_line("listening on ", start_timeout)
            .unwrap_or_else(|| panic!("i2psocks {full:?} did not report `listening on` in time"));
        let rest = &line[line.find("listening on ").unwrap() + "listening on ".len()..];
        let word = rest.split_whitespace().next().unwrap_or_default();
        // A Unix listener first: no address; its path is in [`Proxy::listening`].
        if !word.starts_with("unix:") {
            p.addr =
                word.parse().unwrap_or_else(|_| panic!("cannot parse the listening address in {line:?}"));
        }
        p
    }

    /// The first listener's address (the first `listening on` line; 127.0.0.1:0
    /// when that is a Unix socket); see [`Proxy::listening`] for all of them.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What the first `n` `listening on` lines name, in order (`ADDR:PORT` or
    /// `unix:/path`); panics if fewer come within [`START_TIMEOUT`].
    pub fn listening(&self, n: usize) -> Vec<String> {
        assert!(
            self.wait_for_nth_line("listening on ", n, START_TIMEOUT).is_some(),
            "fewer than {n} listeners"
        );
        self.lines()
            .iter()
            .filter_map(|l| l.split("listening on ").nth(1))
            .map(|rest| rest.split_whitespace().next().unwrap_or_default().to_string())
            .take(n)
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The pid of the process doing the work: the first child of a wrapper
    /// that stays (strace), else [`Proxy::pid`].
    pub fn inner_pid(&self) -> u32 {
        children(self.pid()).first().copied().unwrap_or_else(|| self.pid())
    }

    /// All stderr lines so far.
    pub fn lines(&self) -> Vec<String> {
        lock(&self.lines.0).lines.clone()
    }

    /// Number of stderr lines containing `substr`.
    pub fn count_lines(&self, substr: &str) -> usize {
        lock(&self.lines.0).lines.iter().filter(|l| l.contains(substr)).count()
    }

    /// Wait for the `n`-th stderr line containing `substr`; returns it.
    pub fn wait_for_nth_line(&self, substr: &str, n: usize, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let mut g = lock(&self.lines.0);
        loop {
            if let Some(l) = g.lines.iter().filter(|l| l.contains(substr)).nth(n.saturating_sub(1)) {
                return Some(l.clone());
            }
            let now = Instant::now();
            if now >= deadline || g.eof {
                return None;
            }
            g = match self.lines.1.wait_timeout(g, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
    }

    /// Wait for a stderr line containing `substr` (any so far counts).
    pub fn wait_for_line(&self, substr: &str, timeout: Duration) -> Option<String> {
        self.wait_for_nth_line(substr, 1, timeout)
    }

    /// The address in the first [`READY`] line of the session `label` logs it under
    /// (`default identity`, `spare #1`, `identity #2`), waiting for it up to `timeout`.
    /// By label, not by order: spares become ready beside the default identity.
    pub fn ready_b32(&self, label: &str, timeout: Duration) -> Option<String> {
        let prefix = format!("{label}: {READY}");
        let line = self.wait_for_line(&prefix, timeout)?;
        let rest = &line[line.find(&prefix)? + prefix.len()..];
        rest.split_whitespace().next().map(str::to_owned)
    }

    /// Send a signal by name (`TERM`, `INT`, `HUP`, `KILL`) with kill(1).
    pub fn signal(&self, name: &str) {
        let st =
            Command::new("kill").args(["-s", name, &self.pid().to_string()]).status().expect("run kill(1)");
        assert!(st.success(), "kill -s {name} failed");
    }

    /// SIGTERM, and SIGKILL if it has not exited within `grace`: how the bench ends a
    /// proxy, so that a profiler wrapped around it can write its output.
    pub fn stop(&mut self, grace: Duration) -> Stopped {
        terminate(&mut self.child, grace, "i2psocks")
    }

    /// Wait for the process to end; None if it is still running at `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // Only while the wrapper runs: once reaped, its pid may be another process's.
        if self.wrapped && matches!(self.child.try_wait(), Ok(None)) {
            // strace detaches from its tracee when killed: kill the tracee too.
            for pid in children(self.pid()) {
                let _ = Command::new("kill").args(["-s", "KILL", &pid.to_string()]).status();
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(h) = self.reader.take() {
            let _ = h.join();
        }
    }
}

/// What a run to completion produced.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Run `i2psocks <args>` exactly as given and wait (at most `timeout`) for
/// it to exit. Panics (after killing it) if it does not.
pub fn run_to_exit(args: &[&str], timeout: Duration) -> Finished {
    let mut child = Command::new(bin())
        .args(args)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn i2psocks");
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let to = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = out.read_to_end(&mut s);
        s
    });
    let te = thread::spawn(move || {
        let mut s = Vec::new();
        let _ = err.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("i2psocks {args:?} still running after {timeout:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    let stdout = String::from_utf8_lossy(&to.join().unwrap()).into_owned();
    let stderr = String::from_utf8_lossy(&te.join().unwrap()).into_owned();
    Finished { status, stdout, stderr }
}

// ---------------------------------------------------------------- SOCKS

/// The SOCKS5 success reply of the CLI contract.
pub const S5_OK: [u8; 10] = [5, 0, 0, 1, 0, 0, 0, 0, 0, 0];
/// The SOCKS4 replies of the CLI contract.
pub const S4_OK: [u8; 8] = [0, 0x5a, 0, 0, 0, 0, 0, 0];
pub const S4_FAIL: [u8; 8] = [0, 0x5b, 0, 0, 0, 0, 0, 0];

/// `05 REP 00 01 00 00 00 00 00 00`.
pub fn s5_reply(rep: u8) -> [u8; 10] {
    [5, rep, 0, 1, 0, 0, 0, 0, 0, 0]
}

/// Connect to the proxy with read and write deadlines of [`IO_TIMEOUT`].
pub fn connect(proxy: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&proxy, IO_TIMEOUT).expect("connect to the proxy");
    s.set_nodelay(true).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

pub fn send(s: &mut TcpStream, data: &[u8]) {
    s.write_all(data).expect("write to the proxy");
}

/// Send one byte per write, pausing `gap` between them.
pub fn send_bytewise(s: &mut TcpStream, data: &[u8], gap: Duration) {
    for b in data {
        s.write_all(std::slice::from_ref(b)).expect("write to the proxy");
        thread::sleep(gap);
    }
}

/// How a bounded read ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadEnd {
    /// Got all that was asked for.
    Full,
    /// The peer closed (FIN) first.
    Eof,
    /// The peer reset the connection.
    Reset,
    /// The deadline passed.
    Timeout,
}

/// Read up to `n` bytes within `timeout`: what arrived and why it stopped.
pub fn read_n(s: &mut TcpStream, n: usize, timeout: Duration) -> (Vec<u8>, ReadEnd) {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::with_capacity(n.min(1 << 20));
    let mut chunk = vec![0u8; 64 * 1024];
    while out.len() < n {
        let now = Instant::now();
        if now >= deadline {
            return (out, ReadEnd::Timeout);
        }
        s.set_read_timeout(Some(deadline - now)).unwrap();
        let want = (n - out.len()).min(chunk.len());
        match s.read(&mut chunk[..want]) {
            Ok(0) => return (out, ReadEnd::Eof),
            Ok(k) => out.extend_from_slice(&chunk[..k]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return (out, ReadEnd::Timeout)
            }
            Err(_) => return (out, ReadEnd::Reset),
        }
    }
    (out, ReadEnd::Full)
}

/// Read exactly `expected.len()` bytes within `timeout` and compare.
pub fn expect_bytes(s: &mut TcpStream, expected: &[u8], timeout: Duration) {
    let (got, end) = read_n(s, expected.len(), timeout);
    assert_eq!(got, expected, "bytes from the proxy differ (read ended: {end:?})");
}

/// Read `n` bytes within `timeout`, panicking if fewer come.
pub fn read_exact_by(s: &mut TcpStream, n: usize, timeout: Duration) -> Vec<u8> {
    let (got, end) = read_n(s, n, timeout);
    assert_eq!(end, ReadEnd::Full, "wanted {n} bytes, got {} ({end:?}): {got:02x?}", got.len());
    got
}

/// Read until EOF (or reset) within `timeout`; panics on timeout.
pub fn read_to_eof(s: &mut TcpStream, timeout: Duration) -> Vec<u8> {
    let (got, end) = read_n(s, usize::MAX, timeout);
    assert!(matches!(end, ReadEnd::Eof | ReadEnd::Reset), "no EOF within {timeout:?} ({end:?})");
    got
}

/// True if the proxy closes the connection (EOF or reset) within `timeout`
/// without sending anything more than `allowed` bytes.
pub fn closed_within(s: &mut TcpStream, timeout: Duration, allowed: usize) -> bool {
    let (got, end) = read_n(s, allowed + 1, timeout);
    got.len() <= allowed && matches!(end, ReadEnd::Eof | ReadEnd::Reset)
}

/// Nothing arrives for `wait` (and the connection is still open).
pub fn silent_for(s: &mut TcpStream, wait: Duration) -> bool {
    let (got, end) = read_n(s, 1, wait);
    got.is_empty() && end == ReadEnd::Timeout
}

/// SOCKS5 greeting (+ RFC 1929 auth) and CONNECT to `host:port` (ATYP 3).
/// Returns the socket and the 10-byte reply. Panics if the proxy closes
/// before a full reply or answers the greeting unexpectedly.
pub fn socks5_connect(
    proxy: SocketAddr,
    host: &str,
    port: u16,
    creds: Option<(&str, &str)>,
) -> (TcpStream, [u8; 10]) {
    let mut s = connect(proxy);
    socks5_greet(&mut s, creds);
    send(&mut s, &socks5_request(1, host, port));
    let r = read_exact_by(&mut s, 10, IO_TIMEOUT);
    (s, r.try_into().unwrap())
}

/// SOCKS5 greeting offering one method (no-auth, or RFC 1929 with `creds`)
/// and, with credentials, their successful sub-negotiation.
pub fn socks5_greet(s: &mut TcpStream, creds: Option<(&str, &str)>) {
    match creds {
        None => {
            send(s, &[5, 1, 0]);
            expect_bytes(s, &[5, 0], IO_TIMEOUT);
        }
        Some((u, p)) => {
            send(s, &[5, 1, 2]);
            expect_bytes(s, &[5, 2], IO_TIMEOUT);
            send(s, &socks5_auth(u, p));
            expect_bytes(s, &[1, 0], IO_TIMEOUT);
        }
    }
}

/// RFC 1929 sub-negotiation bytes.
pub fn socks5_auth(user: &str, pass: &str) -> Vec<u8> {
    let mut v = vec![1, user.len() as u8];
    v.extend_from_slice(user.as_bytes());
    v.push(pass.len() as u8);
    v.extend_from_slice(pass.as_bytes());
    v
}

/// A SOCKS5 request with a domain name (ATYP 3).
pub fn socks5_request(cmd: u8, host: &str, port: u16) -> Vec<u8> {
    let mut v = vec![5, cmd, 0, 3, host.len() as u8];
    v.extend_from_slice(host.as_bytes());
    v.extend_from_slice(&port.to_be_bytes());
    v
}

/// A SOCKS5 request with ATYP `atyp` and the address bytes exactly as given.
pub fn socks5_request_raw(cmd: u8, atyp: u8, address: &[u8], port: u16) -> Vec<u8> {
    let mut v = vec![5, cmd, 0, atyp];
    v.extend_from_slice(address);
    v.extend_from_slice(&port.to_be_bytes());
    v
}

/// Tor's SOCKS5 commands: RESOLVE (a name to an address) and RESOLVE_PTR (back).
pub const CMD_RESOLVE: u8 = 0xf0;
pub const CMD_RESOLVE_PTR: u8 = 0xf1;
/// The dummy port torsocks puts in RESOLVE and RESOLVE_PTR.
pub const TORSOCKS_RESOLVE_PORT: u16 = 42;

/// SOCKS5 greeting (+ RFC 1929 auth), then `request`; everything the proxy sends after
/// the greeting until it closes.
pub fn socks5_exchange(proxy: SocketAddr, creds: Option<(&str, &str)>, request: &[u8]) -> Vec<u8> {
    let mut s = connect(proxy);
    socks5_greet(&mut s, creds);
    send(&mut s, request);
    read_to_eof(&mut s, IO_TIMEOUT)
}

/// RESOLVE of `host` as torsocks sends it: the whole reply.
pub fn socks5_resolve(proxy: SocketAddr, host: &str, creds: Option<(&str, &str)>) -> Vec<u8> {
    socks5_exchange(proxy, creds, &socks5_request(CMD_RESOLVE, host, TORSOCKS_RESOLVE_PORT))
}

/// The address of a RESOLVE success reply, which must be exactly `05 00 00 01 a b c d 00 00`.
pub fn resolved(reply: &[u8]) -> Ipv4Addr {
    match reply {
        [5, 0, 0, 1, a, b, c, d, 0, 0] => Ipv4Addr::new(*a, *b, *c, *d),
        other => panic!("not a RESOLVE success reply: {other:02x?}"),
    }
}

/// The RESOLVE_PTR success reply for `name`: `05 00 00 03 LEN name 00 00`.
pub fn s5_name_reply(name: &str) -> Vec<u8> {
    let mut v = vec![5, 0, 0, 3, name.len() as u8];
    v.extend_from_slice(name.as_bytes());
    v.extend_from_slice(&[0, 0]);
    v
}

/// SOCKS5 CONNECT with raw ATYP + address bytes; the 10-byte reply.
pub fn socks5_raw(addr: SocketAddr, atyp: u8, address: &[u8], port: u16) -> [u8; 10] {
    let mut s = connect(addr);
    socks5_greet(&mut s, None);
    send(&mut s, &socks5_request_raw(1, atyp, address, port));
    read_exact_by(&mut s, 10, IO_TIMEOUT).try_into().unwrap()
}

/// `04 01 PORT IP USERID 00`: SOCKS4 (not 4a) CONNECT to an IPv4 address.
pub fn socks4_request(ip: Ipv4Addr, port: u16, userid: &str) -> Vec<u8> {
    let mut v = vec![4, 1];
    v.extend_from_slice(&port.to_be_bytes());
    v.extend_from_slice(&ip.octets());
    v.extend_from_slice(userid.as_bytes());
    v.push(0);
    v
}

/// Where a plain client's CONNECT goes: an IP address (ATYP 1 or 4) or a name (ATYP 3).
#[derive(Clone, Debug)]
pub enum Dest {
    Ip(SocketAddr),
    Name(String, u16),
}

/// A plain client's SOCKS5 greeting (no auth) and CONNECT to `dest` on a connected stream
/// (TCP or Unix-domain), reading the whole reply (any BND address type). Err on an I/O
/// error, an unexpected method reply or a failure reply (its REP named in the message).
pub fn socks5_handshake(s: &mut (impl Read + Write), dest: &Dest) -> io::Result<()> {
    s.write_all(&[5, 1, 0])?;
    let mut m = [0u8; 2];
    s.read_exact(&mut m)?;
    if m != [5, 0] {
        return Err(io::Error::other(format!("SOCKS5 method reply {m:02x?}")));
    }
    let req = match dest {
        Dest::Ip(SocketAddr::V4(a)) => socks5_request_raw(1, 1, &a.ip().octets(), a.port()),
        Dest::Ip(SocketAddr::V6(a)) => socks5_request_raw(1, 4, &a.ip().octets(), a.port()),
        Dest::Name(host, port) => socks5_request(1, host, *port),
    };
    s.write_all(&req)?;
    let mut head = [0u8; 4];
    s.read_exact(&mut head)?;
    let rest = match head[3] {
        1 => 4 + 2,
        4 => 16 + 2,
        3 => {
            let mut l = [0u8; 1];
            s.read_exact(&mut l)?;
            usize::from(l[0]) + 2
        }
        t => return Err(io::Error::other(format!("SOCKS5 reply ATYP {t}"))),
    };
    let mut tail = [0u8; 255 + 2];
    s.read_exact(&mut tail[..rest])?;
    if head[1] != 0 {
        return Err(io::Error::other(format!("SOCKS5 reply REP={:#04x}", head[1])));
    }
    Ok(())
}

/// Connect to `proxy` and [`socks5_handshake`] to `dest`; `timeout` bounds the connect and
/// every later read and write.
pub fn socks5_open(proxy: SocketAddr, dest: &Dest, timeout: Duration) -> io::Result<TcpStream> {
    let mut s = TcpStream::connect_timeout(&proxy, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    socks5_handshake(&mut s, dest)?;
    Ok(s)
}

/// SOCKS4a CONNECT to `host:port` with `userid`; the 8-byte reply.
pub fn socks4a_connect(proxy: SocketAddr, host: &str, port: u16, userid: &str) -> (TcpStream, [u8; 8]) {
    let mut s = connect(proxy);
    send(&mut s, &socks4a_request(host, port, userid));
    let r = read_exact_by(&mut s, 8, IO_TIMEOUT);
    (s, r.try_into().unwrap())
}

/// `04 01 PORT 0.0.0.1 USERID 00 HOST 00`.
pub fn socks4a_request(host: &str, port: u16, userid: &str) -> Vec<u8> {
    let mut v = vec![4, 1];
    v.extend_from_slice(&port.to_be_bytes());
    v.extend_from_slice(&[0, 0, 0, 1]);
    v.extend_from_slice(userid.as_bytes());
    v.push(0);
    v.extend_from_slice(host.as_bytes());
    v.push(0);
    v
}

/// Send all of `data` from a thread while reading the same amount back
/// here (so neither side's buffers fill and deadlock); then shut down our
/// write side and expect EOF. Returns what came back.
pub fn echo_roundtrip(s: &mut TcpStream, data: &[u8], timeout: Duration) -> Vec<u8> {
    let mut w = s.try_clone().unwrap();
    let owned = data.to_vec();
    let writer = thread::spawn(move || {
        for c in owned.chunks(16 * 1024) {
            w.write_all(c).unwrap();
        }
        w.shutdown(Shutdown::Write).unwrap();
    });
    let (got, end) = read_n(s, data.len(), timeout);
    writer.join().unwrap();
    assert_eq!(end, ReadEnd::Full, "echo: got {} of {} bytes ({end:?})", got.len(), data.len());
    got
}
