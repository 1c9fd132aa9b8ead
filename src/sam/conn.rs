//! One socket to the SAM bridge: the TCP connect, HELLO, and reply lines read
//! by a deadline without losing what follows them. Every SAM exchange starts
//! here: a session's control socket, each stream's own socket, `--check`
//! and DEST GENERATE for a new key file.
//!
//! `create_session` is the one SESSION CREATE exchange of both session
//! kinds: the encryption types are chosen there, after HELLO, from the
//! version the bridge negotiated (`encryption`).
//!
//! Not here: what the commands mean (`proto` builds and decodes them) and
//! what a session is (`stream`, `datagram`).

use crate::sam::encryption::{self, Choice, Encryption, CLASSIC_TYPES};
use crate::sam::proto::{self, LineBuf, ReplyError, SamResult, Style};
use log::{info, trace};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Deadline for the TCP connect to the bridge.
pub const SAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline for a HELLO reply.
pub const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline for SESSION CREATE: tunnels are built before the reply comes,
/// which takes ~20 s on i2pd 2.45 and can take minutes on a busy network.
pub const SESSION_CREATE_TIMEOUT: Duration = Duration::from_secs(300);
/// Size of each read while waiting for a reply line. The lines a client
/// waits for are short (HELLO REPLY, STREAM STATUS: under 64 bytes); a
/// SESSION STATUS with its private key takes a few reads. Small, because it
/// is on a worker's stack at the deepest point of a connection, and the
/// stack pages a held connection has touched stay resident (1,024 bytes
/// made it touch a third page: 4 KiB more per held connection).
const READ_CHUNK: usize = 256;

/// Why talking to the bridge failed (for log lines and reply codes).
#[derive(Debug)]
pub enum CreateError {
    Io(io::Error),
    Protocol(String),
    Refused(SamResult),
    /// Post-quantum encryption is required and the bridge negotiated only
    /// SAM 3.`minor` (see `encryption`): nothing was sent.
    NoPostQuantum {
        minor: u32,
    },
}

impl std::fmt::Display for CreateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CreateError::Io(e) => write!(f, "{e}"),
            CreateError::Protocol(s) => f.write_str(s),
            CreateError::Refused(r) => write!(f, "the bridge answered {r:?}"),
            CreateError::NoPostQuantum { minor } => write!(
                f,
                "post-quantum encryption is required but the bridge speaks SAM 3.{minor}; \
                 it needs SAM 3.{} (i2pd 2.58 or later, Java I2P 2.10 or later)",
                encryption::PQ_MIN_MINOR
            ),
        }
    }
}

impl CreateError {
    /// The deadline passed (connect, or a reply that did not come).
    pub fn is_timeout(&self) -> bool {
        matches!(self, CreateError::Io(e) if e.kind() == ErrorKind::TimedOut)
    }
}

impl From<io::Error> for CreateError {
    fn from(e: io::Error) -> Self {
        CreateError::Io(e)
    }
}

impl From<ReplyError> for CreateError {
    fn from(e: ReplyError) -> Self {
        match e {
            ReplyError::Refused(r) => CreateError::Refused(r),
            other => CreateError::Protocol(other.to_string()),
        }
    }
}

/// A connected socket that has said HELLO.
#[derive(Debug)]
pub struct Conn {
    pub socket: TcpStream,
    /// Bytes read past the last reply line.
    lines: LineBuf,
    /// The negotiated SAM minor version (3.x).
    pub minor: u32,
}

impl Conn {
    /// Connect (within [`SAM_CONNECT_TIMEOUT`]) and say HELLO (within
    /// [`HELLO_TIMEOUT`]), both also by `deadline`. `register` sees the
    /// socket as soon as it is connected, so that a close during a long
    /// exchange can cut it.
    pub fn open(
        sam: SocketAddr,
        deadline: Instant,
        register: &dyn Fn(&TcpStream),
    ) -> Result<Conn, CreateError> {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(timed_out().into());
        }
        let socket = TcpStream::connect_timeout(&sam, SAM_CONNECT_TIMEOUT.min(left))?;
        register(&socket);
        let _ = socket.set_nodelay(true);
        let mut conn = Conn { socket, lines: LineBuf::new(), minor: 0 };
        let cmd = proto::hello(None).map_err(|e| CreateError::Protocol(e.to_string()))?;
        // i2pd reads HELLO from the first read only: one write.
        let line = conn.command(&cmd, deadline.min(Instant::now() + HELLO_TIMEOUT))?;
        trace!("< {}", proto::redact_line(&line));
        conn.minor = proto::hello_reply(&line)?;
        Ok(conn)
    }

    /// Send one command line in one write and read the reply line.
    pub fn command(&mut self, cmd: &[u8], deadline: Instant) -> io::Result<Vec<u8>> {
        self.socket.write_all(cmd)?;
        self.read_line(deadline)
    }

    /// Read one reply line by `deadline`, keeping whatever follows it. A
    /// last line cut off by EOF (no newline) is still that line; EOF with
    /// nothing pending is `UnexpectedEof`.
    pub fn read_line(&mut self, deadline: Instant) -> io::Result<Vec<u8>> {
        let mut chunk = [0u8; READ_CHUNK];
        loop {
            match self.lines.take_line() {
                Ok(Some(line)) => return Ok(line),
                Ok(None) => {}
                Err(proto::LineTooLong) => {
                    return Err(io::Error::new(ErrorKind::InvalidData, "SAM reply line too long"));
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(timed_out());
            }
            self.socket.set_read_timeout(Some(deadline - now))?;
            match self.socket.read(&mut chunk) {
                Ok(0) => {
                    return self.lines.take_tail().ok_or_else(|| {
                        io::Error::new(ErrorKind::UnexpectedEof, "SAM bridge closed the connection")
                    })
                }
                Ok(n) => self.lines.push(chunk.get(..n).unwrap_or_default()),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    return Err(timed_out());
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The socket, blocking again with no read timeout, and the bytes read
    /// past the last line.
    pub fn into_parts(self) -> io::Result<(TcpStream, LineBuf)> {
        self.socket.set_read_timeout(None)?;
        Ok((self.socket, self.lines))
    }
}

/// One SESSION CREATE, all but the ID and the encryption types.
#[derive(Debug, Clone, Copy)]
pub struct CreateSpec<'a> {
    pub style: Style,
    /// `TRANSIENT` or a private key in I2P base64 (never logged).
    pub destination: &'a str,
    /// Options after SIGNATURE_TYPE (and PORT/HOST), in order.
    pub options: &'a [(String, String)],
    pub encryption: &'a Encryption,
    /// For log lines (never a credential).
    pub label: &'a str,
}

/// A session the bridge made.
#[derive(Debug)]
pub struct Created {
    /// Its control connection: closing it ends the session.
    pub conn: Conn,
    pub id: String,
    /// The private key the bridge returned (never logged).
    pub private_key: String,
    pub b32: String,
}

/// SESSION CREATE on `conn` (which has said HELLO) by `deadline`, with the
/// encryption types [`Encryption::choose`] picks for its SAM version. A
/// post-quantum create that the bridge refuses is tried once more, on a new
/// connection to `sam` (`register` sees it), with [`CLASSIC_TYPES`].
pub fn create_session(
    mut conn: Conn,
    spec: &CreateSpec<'_>,
    sam: SocketAddr,
    deadline: Instant,
    register: &dyn Fn(&TcpStream),
) -> Result<Created, CreateError> {
    let mut classic = false;
    loop {
        let choice = if classic { Choice::Send(CLASSIC_TYPES) } else { spec.encryption.choose(conn.minor) };
        if choice == Choice::Unsupported {
            return Err(CreateError::NoPostQuantum { minor: conn.minor });
        }
        let id = crate::rand::random_id();
        let options = encryption::with_choice(spec.options, choice);
        let cmd = proto::session_create(spec.style, &id, spec.destination, &options)
            .map_err(|e| CreateError::Protocol(e.to_string()))?;
        trace!("{}: > {}", spec.label, proto::redact_line(&cmd));
        let line = conn.command(&cmd, deadline)?;
        // The reply carries our private key: the trace shows it redacted.
        trace!("{}: < {}", spec.label, proto::redact_line(&line));
        match proto::session_status(&line) {
            Ok((private_key, b32)) => {
                if classic {
                    spec.encryption.note_fallback();
                }
                return Ok(Created { conn, id, private_key, b32 });
            }
            Err(ReplyError::Refused(r)) if !classic && spec.encryption.retry_classic(choice, &r) => {
                info!(
                    "{}: the SAM bridge refused a post-quantum session ({r:?}); \
                     trying {} = {CLASSIC_TYPES} once",
                    spec.label,
                    encryption::OPTION
                );
                let _ = conn.socket.shutdown(Shutdown::Both);
                conn = Conn::open(sam, deadline, register)?;
                classic = true;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Read a session's control socket line by line into `on_line` until the
/// socket ends or `on_line` gives a reason to stop; returns why, for the
/// log. Lines are bounded by [`proto::MAX_LINE`].
pub fn read_control(
    mut s: &TcpStream,
    mut lines: LineBuf,
    mut on_line: impl FnMut(Vec<u8>) -> Result<(), String>,
) -> String {
    let mut chunk = [0u8; READ_CHUNK];
    loop {
        loop {
            match lines.take_line() {
                Ok(Some(line)) => {
                    if let Err(why) = on_line(line) {
                        return why;
                    }
                }
                Ok(None) => break,
                Err(proto::LineTooLong) => return "control line too long".into(),
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

fn timed_out() -> io::Error {
    io::Error::new(ErrorKind::TimedOut, "no SAM reply in time")
}

/// HELLO on a fresh socket and nothing else (`--check`): the minor version.
pub fn probe(sam: SocketAddr) -> Result<u32, CreateError> {
    Ok(Conn::open(sam, Instant::now() + HELLO_TIMEOUT, &|_| {})?.minor)
}

/// A new key pair from the bridge (`DEST GENERATE`): the private key in
/// I2P base64. Used to create a key file without a session.
pub fn generate_key(sam: SocketAddr) -> Result<String, CreateError> {
    let deadline = Instant::now() + HELLO_TIMEOUT;
    let mut conn = Conn::open(sam, deadline, &|_| {})?;
    let line = conn.command(&proto::dest_generate(), deadline)?;
    Ok(proto::dest_reply(&line)?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
    use super::*;
    use std::net::{Shutdown, TcpListener};
    use std::thread;
    use std::time::Duration;

    /// A one-connection bridge on loopback: HELLO answered with 3.2, then
    /// `answer` written after the next command, then the socket closed.
    fn bridge(answer: &'static [u8]) -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf).unwrap();
            s.write_all(b"HELLO REPLY RESULT=OK VERSION=3.2\n").unwrap();
            let _ = s.read(&mut buf).unwrap();
            s.write_all(answer).unwrap();
            s.shutdown(Shutdown::Both).unwrap();
        });
        addr
    }

    #[test]
    fn last_line_cut_off_by_eof_is_the_reply() {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut c = Conn::open(bridge(b"STREAM STATUS RESULT=CANT_REACH_PEER"), deadline, &|_| {}).unwrap();
        assert_eq!(c.minor, 2);
        let line = c.command(b"STREAM CONNECT ID=x DESTINATION=y.i2p\n", deadline).unwrap();
        assert_eq!(line, b"STREAM STATUS RESULT=CANT_REACH_PEER");
        // Nothing more: now it is an end without a reply.
        assert_eq!(c.read_line(deadline).unwrap_err().kind(), ErrorKind::UnexpectedEof);
    }

    #[test]
    fn eof_without_a_byte_is_no_reply() {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut c = Conn::open(bridge(b""), deadline, &|_| {}).unwrap();
        let e = c.command(b"STREAM CONNECT ID=x DESTINATION=y.i2p\n", deadline).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::UnexpectedEof);
    }
}
