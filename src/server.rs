//! One client, start to finish: the SOCKS handshake under one overall
//! deadline, target validation, the SAM stream, the reply, the relay.
//!
//! Everything a client can do wrong ends here in a reply in its own SOCKS
//! version (or a close, where the protocol has no reply) and a graceful
//! close. The reply code always comes from `Error::rep`.

use crate::auth::AuthFile;
use crate::cli::Config;
use crate::error::Error;
use crate::i2p_addr;
use crate::identity::{Identities, Key, Lease};
use crate::relay;
use crate::sam::client;
use crate::socks::{self, Action, Addr, Command, Handshake, Policy, Rep, Request};
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

/// What every worker shares.
pub struct Shared {
    pub config: Config,
    pub identities: Arc<Identities>,
    /// Access control (`--auth-file`).
    pub auth: Option<AuthFile>,
    /// Set at the end of the shutdown grace: running relays stop.
    pub stop: AtomicBool,
    /// Datagram sessions for UDP ASSOCIATE (`udp`).
    pub udp: Arc<crate::udp::Udp>,
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
    if request.command == Command::UdpAssociate {
        // RFC 1928 §7: the connection stays open as the association's lifeline.
        crate::udp::serve(client, &request, shared);
        return;
    }
    let version = request.version;
    match open(&request, shared) {
        Ok((sam, surplus, _lease)) => {
            if write_by(&mut client, &socks::reply(version, Rep::Succeeded), deadline_far()).is_err() {
                return;
            }
            debug!("{peer}: stream open");
            let _ = client.set_write_timeout(None);
            let _ = client.set_read_timeout(None);
            let opts = relay::Options {
                idle: shared.config.idle_timeout,
                half_close_wait: shared.config.half_close_wait,
            };
            match relay::relay(client, sam, &payload, &surplus, opts, &shared.stop) {
                Ok((end, stats)) => debug!(
                    "{peer}: relay ended ({end:?}): {} bytes out, {} bytes in",
                    stats.to_server, stats.to_client
                ),
                Err(e) => debug!("{peer}: relay failed: {e}"),
            }
        }
        Err(e) => {
            debug!("{peer}: refused: {e}");
            let _ = write_by(&mut client, &socks::reply(version, e.rep()), deadline_far());
            graceful_close(client);
        }
    }
}

/// A generous bound for writing a short reply to a client.
fn deadline_far() -> Instant {
    Instant::now() + Duration::from_secs(10)
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

/// Validate the request and open its I2P stream on the client's identity.
/// The lease keeps that identity alive while the stream lasts.
fn open(req: &Request, shared: &Shared) -> Result<(TcpStream, Vec<u8>, Lease), Error> {
    match req.command {
        Command::Connect => {}
        Command::Bind | Command::UdpAssociate => return Err(Error::CommandNotSupported),
    }
    let target = match &req.addr {
        Addr::Domain(name) => i2p_addr::parse_target(name).map_err(|e| {
            debug!("target refused: {e:?}");
            Error::TargetNotAllowed
        })?,
        Addr::Ipv4(_) | Addr::Ipv6(_) => return Err(Error::TargetNotAllowed),
    };
    if req.port == 0 {
        return Err(Error::TargetNotAllowed);
    }
    let deadline = Instant::now() + shared.config.connect_timeout;
    let key = Key::for_client(shared.config.isolate, &req.credentials, shared.auth.is_some());
    let lease = shared.identities.acquire(key)?;
    let info = lease.session().wait_ready(deadline)?;
    debug!("connecting to {}:{}", target.as_str(), req.port);
    let (sam, surplus) =
        client::stream_connect(shared.config.sam, &info, target.as_str(), req.port, deadline)?;
    Ok((sam, surplus, lease))
}

/// Write all of `data` by `deadline`.
fn write_by(s: &mut TcpStream, data: &[u8], deadline: Instant) -> io::Result<()> {
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
