//! One client, start to finish: the SOCKS handshake under one overall
//! deadline, the identity its listener and credentials select, then the
//! command: CONNECT (`connect`), UDP ASSOCIATE (`associate`), or Tor's
//! RESOLVE and RESOLVE_PTR (`resolve`); BIND is refused. Clients of TCP and
//! Unix-domain listeners get the same handshake, CONNECT and RESOLVE; UDP
//! ASSOCIATE needs a TCP client (the reply names a UDP relay address the
//! client can reach, and a Unix client has no IP address to check datagrams
//! against), so a Unix client gets "command not supported".
//!
//! Everything a client can do wrong ends here in a reply in its own SOCKS
//! version (or a close, where the protocol has no reply) and a graceful
//! close. The reply code always comes from `Error::rep`.

pub mod associate;
pub mod connect;
pub mod context;
pub mod resolve;

pub use context::Shared;

use crate::client::Client;
use crate::counters::{bump, COUNTERS};
use crate::error::Error;
use crate::identity::{Key, Listener};
use crate::proxy::context::{graceful_close, refuse, write_by};
use crate::socks::{Action, Command, Handshake, Policy, Request};
use log::debug;
use std::io::{ErrorKind, Read};
use std::net::Shutdown;
use std::time::Instant;

/// Size of each handshake read (the codec bounds the whole handshake).
const HANDSHAKE_CHUNK: usize = 512;

/// How a handshake ended without a request.
enum Abort {
    /// Not SOCKS, or SOCKS we refuse; the reply (possibly empty) is sent:
    /// close gracefully.
    Malformed,
    /// Credentials refused (`01 01` sent): close gracefully.
    AuthFailed,
    /// The handshake deadline passed.
    TimedOut,
    /// The client went away.
    Gone,
}

/// Serve one client of `listener`. Never panics on input; always closes
/// the socket.
pub fn serve(mut client: Client, listener: Listener, shared: &Shared) {
    let peer = client.label(&shared.listener_label(listener));
    client.set_nodelay();
    let deadline = Instant::now() + shared.config.handshake_timeout;
    let (request, payload) = match handshake(&mut client, deadline, shared) {
        Ok(r) => r,
        Err(why @ (Abort::Malformed | Abort::AuthFailed)) => {
            debug!("{peer}: handshake refused");
            let c = &COUNTERS;
            bump(if matches!(why, Abort::AuthFailed) { &c.refused_auth } else { &c.refused_malformed });
            graceful_close(client);
            return;
        }
        Err(why @ (Abort::TimedOut | Abort::Gone)) => {
            if matches!(why, Abort::TimedOut) {
                debug!("{peer}: handshake timed out");
                bump(&COUNTERS.refused_handshake_timeout);
            } else {
                debug!("{peer}: handshake abandoned");
            }
            let _ = client.shutdown(Shutdown::Both);
            return;
        }
    };
    let key = shared.key_for(listener, &request);
    match request.command {
        Command::Connect => connect::serve(client, &request, &payload, &peer, key, shared),
        _ => serve_other(client, &request, &peer, key, shared),
    }
}

/// The commands other than CONNECT. Never inlined, like [`handshake`]: their
/// locals would otherwise sit in `serve`'s frame under every relay.
#[inline(never)]
fn serve_other(client: Client, request: &Request, peer: &str, key: Key, shared: &Shared) {
    match (request.command, client) {
        // RFC 1928 §7: the connection stays open as the association's lifeline.
        (Command::UdpAssociate, Client::Tcp(tcp)) => associate::serve(tcp, request, key, shared),
        (Command::Resolve | Command::ResolvePtr, client) => resolve::serve(client, request, peer, shared),
        (Command::Connect | Command::UdpAssociate | Command::Bind, client) => {
            refuse(client, request, Error::CommandNotSupported, peer)
        }
    }
}

/// Run the codec over the client's bytes until a request or a refusal.
/// Returns the request and the payload bytes that followed it. Never
/// inlined: its read chunk and codec state would otherwise stay in the
/// caller's frame for the whole connection, and the stack pages a held
/// connection touches stay resident (see `pool::WORKER_STACK`).
#[inline(never)]
fn handshake(client: &mut Client, deadline: Instant, shared: &Shared) -> Result<(Request, Vec<u8>), Abort> {
    let mut hs = Handshake::new(policy(shared));
    // Grown to what the client sends (tens of bytes), not to a whole
    // chunk: what follows the request stays in it for the whole relay.
    let mut pending: Vec<u8> = Vec::new();
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
                        return Err(Abort::AuthFailed);
                    }
                }
                Action::Done(req) => return Ok((req, pending)),
                Action::Fail { reply, reason } => {
                    debug!("handshake failed: {reason}");
                    if !reply.is_empty() {
                        let _ = write_by(client, &reply, deadline);
                    }
                    return Err(Abort::Malformed);
                }
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Abort::TimedOut);
        }
        client.set_read_timeout(Some(deadline - now)).map_err(|_| Abort::Gone)?;
        match client.read(&mut chunk) {
            Ok(0) => return Err(Abort::Gone),
            Ok(n) => pending.extend_from_slice(chunk.get(..n).unwrap_or_default()),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(Abort::TimedOut)
            }
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
