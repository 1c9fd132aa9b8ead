//! What the per-command handlers share: the workers' common context, the
//! identity a request gets, the virtual address map, and how a reply is
//! written and a refused client is closed (a FIN after the reply, never a
//! reset that would discard it).

use crate::auth::AuthFile;
use crate::cli::Config;
use crate::client::Client;
use crate::counters::{bump, COUNTERS};
use crate::error::{Denied, Error};
use crate::identity::{Identities, Key, Listener};
use crate::leak::{socks_label, warn_leak, Leak};
use crate::socks::{self, Request};
use crate::virtual_net::{Lookup, VirtualMap};
use log::debug;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

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
    /// Names and their `--virtual-net` addresses, one map for every
    /// identity: the addresses mean something only to this process.
    pub virtual_net: Mutex<VirtualMap>,
}

impl Shared {
    /// The identity a client of `listener` with this request's credentials gets.
    pub fn key_for(&self, listener: Listener, req: &Request) -> Key {
        Key::for_client(
            listener,
            self.config.isolate,
            &req.credentials,
            self.auth.is_some(),
            self.config.key_dir.is_some(),
        )
    }

    /// How logs name a listener (`unix:/path` for a Unix socket, whose
    /// clients have no address of their own).
    pub fn listener_label(&self, listener: Listener) -> String {
        self.config.listen.get(listener).map(|e| e.to_string()).unwrap_or_else(|| "?".into())
    }

    /// The virtual address map, held only for one look-up or insertion.
    pub fn virtual_map(&self) -> MutexGuard<'_, VirtualMap> {
        self.virtual_net.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The name a virtual address stands for (a use of it, for the map's
    /// LRU). In the range without a name: 0x04; outside it: not ours, 0x02.
    pub fn virtual_name(&self, ip: Ipv4Addr) -> Result<String, Error> {
        match self.virtual_map().lookup(ip, Instant::now()) {
            Lookup::Name(name) => Ok(name),
            Lookup::Unmapped => Err(Error::NoMapping),
            Lookup::Outside => Err(Error::TargetNotAllowed(Denied::IpAddress)),
        }
    }
}

/// Answer `req` with the reply for `e` and close gracefully. Refusals of
/// the client's own making are counted, and a program that leaks or is
/// pointed at the wrong proxy is warned about.
pub fn refuse(mut client: Client, req: &Request, e: Error, peer: &str) {
    debug!("{peer}: refused: {e}");
    count_refusal(&e, req, peer);
    let _ = write_reply(&mut client, &socks::reply(req.version, e.rep()));
    graceful_close(client);
}

/// Count `e` among the refusals when the client caused it (a failure to
/// reach the destination is counted where streams are), and warn about a leak.
fn count_refusal(e: &Error, req: &Request, peer: &str) {
    let c = &COUNTERS;
    match e {
        Error::TargetNotAllowed(denied) => {
            bump(match denied {
                Denied::IpAddress => &c.refused_ip,
                Denied::NotI2p => &c.refused_not_i2p,
                Denied::Malformed => &c.refused_malformed,
            });
            if let Some(leak) = Leak::of(*denied) {
                warn_leak(leak, socks_label(req), req.port, peer);
            }
        }
        Error::CommandNotSupported | Error::AddrTypeNotSupported => bump(&c.refused_malformed),
        Error::Overloaded => bump(&c.refused_overload),
        Error::NoMapping
        | Error::Sam(_)
        | Error::UnknownDestination
        | Error::NoStatus
        | Error::ConnectTimeout
        | Error::SamUnreachable
        | Error::SessionDown => {}
    }
}

/// Write a reply by [`REPLY_WRITE_TIMEOUT`].
pub fn write_reply(client: &mut Client, reply: &[u8]) -> io::Result<()> {
    write_by(client, reply, Instant::now() + REPLY_WRITE_TIMEOUT)
}

/// Write all of `data` by `deadline`.
pub fn write_by(s: &mut Client, data: &[u8], deadline: Instant) -> io::Result<()> {
    let now = Instant::now();
    if now >= deadline {
        return Err(io::Error::new(ErrorKind::TimedOut, "deadline"));
    }
    s.set_write_timeout(Some(deadline - now))?;
    s.write_all(data)
}

/// Close after a failure reply: FIN first, then read briefly what the
/// client already sent so the kernel does not answer it with a reset.
pub fn graceful_close(mut s: Client) {
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
