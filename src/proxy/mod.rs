//! One client, start to finish: the SOCKS handshake under one overall
//! deadline, then the command: CONNECT (`connect`) or UDP ASSOCIATE
//! (`associate`); BIND is refused.
//!
//! Everything a client can do wrong ends here in a reply in its own SOCKS
//! version (or a close, where the protocol has no reply) and a graceful
//! close. The reply code always comes from `Error::rep`.

pub mod associate;
pub mod connect;

use crate::auth::AuthFile;
use crate::cli::Config;
use crate::error::Error;
use crate::identity::{Identities, Key};
use crate::socks::{self, Action, Command, Handshake, Policy, Request};
use log::debug;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Size of each handshake read (the codec bounds the whole handshake).
const HANDSHAKE_CHUNK: usize = 512;
/// After a failure reply, how long we read what the client already sent so
/// that our close is a FIN, not a reset that would discard the reply.
pub const DRAIN_TIME: Duration = Duration::from_millis(200);
/// At most this much is drained before closing.
pub const DRAIN_MAX: usize = 64 * 1024;
/// Deadline for writing a reply to a client once its request is decided:
/// generous, for a reply of at most 22 bytes.
pub const REPLY_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What every worker shares.
pub struct Shared {
    pub config: Config,
    pub identities: Arc<Identities>,
    /// Access control (`--auth-file`).
    pub auth: Option<AuthFile>,
    /// Set at the end of the shutdown grace: running relays stop.
    pub stop: AtomicBool,
}

impl Shared {
    /// The identity a client with this request's credentials gets.
    pub fn key_for(&self, req: &Request) -> Key {
        Key::for_client(self.config.isolate, &req.credentials, self.auth.is_some())
    }
}

/// How a handshake ended without a request.
enum Abort {
    /// Reply (possibly empty) sent; close gracefully.
    Refused,
    /// The client went away or the deadline passed.
    Gone,
}

/// Serve one client. Never panics on input; always closes the socket.
pub fn serve(mut client: TcpStream, shared: &Shared) {
    let peer = client.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into());
    let _ = client.set_nodelay(true);
    let deadline = Instant::now() + shared.config.handshake_timeout;
    let (request, payload) = match handshake(&mut client, deadline, shared) {
        Ok(r) => r,
        Err(Abort::Refused) => {
            debug!("{peer}: handshake refused");
            graceful_close(client);
            return;
        }
        Err(Abort::Gone) => {
            debug!("{peer}: handshake abandoned or timed out");
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
    };
    match request.command {
        Command::Connect => connect::serve(client, &request, &payload, &peer, shared),
        // RFC 1928 §7: the connection stays open as the association's lifeline.
        Command::UdpAssociate => associate::serve(client, &request, shared),
        Command::Bind => refuse(client, &request, Error::CommandNotSupported, &peer),
    }
}

/// Answer `req` with the reply for `e` and close gracefully.
pub fn refuse(mut client: TcpStream, req: &Request, e: Error, peer: &str) {
    debug!("{peer}: refused: {e}");
    let _ = write_reply(&mut client, &socks::reply(req.version, e.rep()));
    graceful_close(client);
}

/// Write a reply by [`REPLY_WRITE_TIMEOUT`].
pub fn write_reply(client: &mut TcpStream, reply: &[u8]) -> io::Result<()> {
    write_by(client, reply, Instant::now() + REPLY_WRITE_TIMEOUT)
}

/// Run the codec over the client's bytes until a request or a refusal.
/// Returns the request and the payload bytes that followed it.
fn handshake(
    client: &mut TcpStream,
    deadline: Instant,
    shared: &Shared,
) -> Result<(Request, Vec<u8>), Abort> {
    let mut hs = Handshake::new(policy(shared));
    let mut pending: Vec<u8> = Vec::with_capacity(HANDSHAKE_CHUNK);
    let mut chunk = [0u8; HANDSHAKE_CHUNK];
    loop {
        loop {
            let step = hs.handshake(&pending);
            let consumed = step.consumed.min(pending.len());
            pending.drain(..consumed);
            match step.action {
                Action::NeedMore => break,
                Action::Reply(bytes) => write_by(client, &bytes, deadline).map_err(|_| Abort::Gone)?,
                Action::CheckAuth { user, pass } => {
                    let ok = check_credentials(shared, &user, &pass);
                    write_by(client, &hs.auth_verdict(ok), deadline).map_err(|_| Abort::Gone)?;
                    if !ok {
                        return Err(Abort::Refused);
                    }
                }
                Action::Done(req) => return Ok((req, pending)),
                Action::Fail { reply, reason } => {
                    debug!("handshake failed: {reason}");
                    if !reply.is_empty() {
                        let _ = write_by(client, &reply, deadline);
                    }
                    return Err(Abort::Refused);
                }
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Abort::Gone);
        }
        client.set_read_timeout(Some(deadline - now)).map_err(|_| Abort::Gone)?;
        match client.read(&mut chunk) {
            Ok(0) => return Err(Abort::Gone),
            Ok(n) => pending.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return Err(Abort::Gone),
        }
    }
}

fn policy(shared: &Shared) -> Policy {
    Policy { require_auth: shared.auth.is_some(), prefer_no_auth: shared.config.prefer_no_auth }
}

/// With access control the pair must be listed; without it every
/// credential is accepted: it only selects an identity.
fn check_credentials(shared: &Shared, user: &[u8], pass: &[u8]) -> bool {
    match &shared.auth {
        Some(a) => a.check(user, pass),
        None => true,
    }
}

/// Write all of `data` by `deadline`.
pub fn write_by(s: &mut TcpStream, data: &[u8], deadline: Instant) -> io::Result<()> {
    let now = Instant::now();
    if now >= deadline {
        return Err(io::Error::new(ErrorKind::TimedOut, "deadline"));
    }
    s.set_write_timeout(Some(deadline - now))?;
    s.write_all(data)
}

/// Close after a failure reply: FIN first, then read briefly what the
/// client already sent so the kernel does not answer it with a reset.
pub fn graceful_close(mut s: TcpStream) {
    let _ = s.shutdown(Shutdown::Write);
    let end = Instant::now() + DRAIN_TIME;
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < DRAIN_MAX {
        let now = Instant::now();
        if now >= end || s.set_read_timeout(Some(end - now)).is_err() {
            break;
        }
        match s.read(&mut sink) {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}
