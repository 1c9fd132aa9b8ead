//! A session's control socket once SESSION CREATE has succeeded: one thread
//! reads it into lines, and one owner writes to it and takes the replies
//! from those lines: PONG for every PING, and NAMING LOOKUP, one at a time.
//!
//! Both session kinds hold their control socket so: a stream session's
//! supervisor (`stream`) asks whether the router knows a target that the
//! bridge refused without a clear reason, and a datagram session's sender
//! (`datagram`) resolves names into the base64 destinations i2pd wants on a
//! send. Asking on the session's own socket makes the lookup use that
//! identity's tunnels; on a session-less socket i2pd would use its shared
//! destination, and emissary answers KEY_NOT_FOUND for every name there.
//! A single owner means no second reader can take a reply meant for the
//! first.
//!
//! Not here: what is looked up, caching, and what an answer means to a
//! client. Spec: SAM v3 "NAMING LOOKUP" and "PING/PONG".

use crate::sam::conn::{self, Conn};
use crate::sam::proto::{self, Resolved, SamResult};
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError};
use log::{debug, trace};
use std::io::{self, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Longest wait for one NAMING REPLY: a `.b32.i2p` lookup asks the network
/// for the LeaseSet (emissary answers an unknown one after 1.6 s).
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Control lines read ahead of their owner (a burst of PINGs, late replies).
const CONTROL_LINES: usize = 16;

/// What a NAMING LOOKUP said about a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Found(Resolved),
    /// The router does not know the name: `KEY_NOT_FOUND` (Java, emissary)
    /// or `INVALID_KEY` (i2pd's "not found"; our names are well-formed).
    Unknown,
    /// Any other answer: no verdict.
    Refused(SamResult),
    /// No answer by the deadline.
    TimedOut,
}

/// The control socket is gone ([`Control::why`] says why).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dead;

/// The owner's side of a live control socket. Dropping it shuts the socket,
/// which ends the session on the router.
pub struct Control {
    socket: TcpStream,
    lines: Receiver<Vec<u8>>,
    /// Why the reading thread stopped, once it has.
    why: Arc<Mutex<String>>,
    label: String,
}

impl Control {
    /// Start reading `conn` (bytes already read past SESSION STATUS
    /// included) in a thread of its own.
    pub fn start(conn: Conn, label: &str) -> io::Result<Control> {
        let (socket, pending) = conn.into_parts()?;
        let reader = socket.try_clone()?;
        let (tx, lines) = bounded::<Vec<u8>>(CONTROL_LINES);
        let why = Arc::new(Mutex::new(String::new()));
        let slot = Arc::clone(&why);
        thread::Builder::new().name("sam-control".into()).spawn(move || {
            let end = conn::read_control(&reader, pending, |line| {
                tx.send(line).map_err(|_| "the session was closed".to_string())
            });
            // Said before the channel closes: the owner reads it on the close.
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = end;
            drop(tx);
            let _ = reader.shutdown(Shutdown::Both);
        })?;
        Ok(Control { socket, lines, why, label: label.to_string() })
    }

    /// Lines as they arrive (for a `select!` beside other work); closed
    /// once the socket is gone. Hand each to [`Control::on_line`].
    pub fn lines(&self) -> Receiver<Vec<u8>> {
        self.lines.clone()
    }

    /// A line outside a lookup: answer PING, ignore the rest (a late reply
    /// to a lookup that timed out, say).
    pub fn on_line(&mut self, line: &[u8]) -> Result<(), Dead> {
        match proto::pong_for(line) {
            Some(pong) => {
                trace!("{}: < PING; > PONG", self.label);
                self.socket.write_all(&pong).map_err(|_| Dead)
            }
            None => {
                trace!("{}: < control line of {} bytes ignored", self.label, line.len());
                Ok(())
            }
        }
    }

    /// NAMING LOOKUP of `name` (a validated target), answered by `deadline`
    /// or [`LOOKUP_TIMEOUT`], whichever comes first.
    pub fn lookup(&mut self, name: &str, deadline: Instant) -> Result<Lookup, Dead> {
        let Ok(cmd) = proto::naming_lookup(name) else {
            return Ok(Lookup::Refused(SamResult::Other("not a name".into())));
        };
        trace!("{}: > NAMING LOOKUP NAME={name}", self.label);
        self.socket.write_all(&cmd).map_err(|_| Dead)?;
        let deadline = deadline.min(Instant::now() + LOOKUP_TIMEOUT);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(l) => l,
                Err(RecvTimeoutError::Timeout) => {
                    debug!("{}: NAMING LOOKUP timed out", self.label);
                    return Ok(Lookup::TimedOut);
                }
                Err(RecvTimeoutError::Disconnected) => return Err(Dead),
            };
            match proto::naming_reply(&line, name) {
                Some(Ok(r)) => return Ok(Lookup::Found(r)),
                Some(Err(SamResult::KeyNotFound | SamResult::InvalidKey)) => {
                    debug!("{}: NAMING LOOKUP: not found", self.label);
                    return Ok(Lookup::Unknown);
                }
                Some(Err(result)) => {
                    debug!("{}: NAMING LOOKUP refused: {result:?}", self.label);
                    return Ok(Lookup::Refused(result));
                }
                None => self.on_line(&line)?,
            }
        }
    }

    /// Why the socket is gone (empty while it is not).
    pub fn why(&self) -> String {
        self.why.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}
