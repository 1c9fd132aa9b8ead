//! CONNECT: validate the target, open an I2P stream to it on the client's
//! identity, answer, then relay bytes both ways until either side is done.
//!
//! The target is checked before anything touches the network (only `.i2p`
//! names and `.b32.i2p` addresses pass); success is answered only after the
//! bridge reported the stream open. A virtual address from `--virtual-net`
//! (handed out by RESOLVE) is first turned back into its name, which then
//! goes the same way as a name sent by the client.

use crate::client::Client;
use crate::counters::{add, bump, COUNTERS};
use crate::error::{Denied, Error};
use crate::i2p_addr;
use crate::identity::{Key, Lease};
use crate::proxy::context::{self, Shared};
use crate::relay;
use crate::sam::stream::Session;
use crate::socks::{self, Addr, Rep, Request};
use crate::virtual_net::dotted_ipv4;
use log::debug;
use std::borrow::Cow;
use std::net::{Ipv4Addr, TcpStream};
use std::sync::Arc;
use std::time::Instant;

/// Serve a CONNECT whose request `req` was just read from `client`, on the
/// identity `key`; `payload` is what the client sent after it.
pub fn serve(mut client: Client, req: &Request, payload: &[u8], peer: &str, key: Key, shared: &Shared) {
    match open(req, key, shared) {
        Ok((sam, surplus, session, _lease)) => {
            if context::write_reply(&mut client, &socks::reply(req.version, Rep::Succeeded)).is_err() {
                return;
            }
            debug!("{peer}: stream open");
            let _ = client.set_write_timeout(None);
            let _ = client.set_read_timeout(None);
            let opts = relay::Options {
                idle: shared.config.idle_timeout,
                half_close_wait: shared.config.half_close_wait,
            };
            bump(&COUNTERS.streams_opened);
            let ended = match client {
                Client::Tcp(c) => relay::relay(c, sam, payload, &surplus, opts, &shared.stop),
                Client::Unix(c) => relay::relay(c, sam, payload, &surplus, opts, &shared.stop),
            };
            bump(&COUNTERS.streams_ended);
            // Whether the router ended the stream decides how long its
            // session must stay open (src/sam/linger.rs).
            session.stream_ended(ended.as_ref().is_ok_and(|(_, stats)| stats.server_first));
            match ended {
                Ok((end, stats)) => {
                    add(&COUNTERS.bytes_out, stats.to_server);
                    add(&COUNTERS.bytes_in, stats.to_client);
                    debug!(
                        "{peer}: relay ended ({end:?}): {} bytes out, {} bytes in",
                        stats.to_server, stats.to_client
                    )
                }
                Err(e) => debug!("{peer}: relay failed: {e}"),
            }
        }
        Err(e) => {
            if e.reached_the_router() {
                bump(&COUNTERS.streams_failed);
            }
            context::refuse(client, req, e, peer)
        }
    }
}

/// Validate the request and open its I2P stream on the client's identity.
/// The lease keeps that identity alive while the stream lasts; the session
/// is told how the stream ended.
type Opened = (TcpStream, Vec<u8>, Arc<Session>, Lease);

fn open(req: &Request, key: Key, shared: &Shared) -> Result<Opened, Error> {
    let host = host_of(&req.addr, shared)?;
    let target = i2p_addr::parse_target(&host).map_err(|e| {
        debug!("target refused: {e:?}");
        Error::TargetNotAllowed(e.into())
    })?;
    if req.port == 0 {
        return Err(Error::TargetNotAllowed(Denied::Malformed));
    }
    let deadline = Instant::now() + shared.config.connect_timeout;
    let lease = shared.identities.acquire(key)?;
    let session = lease.stream()?;
    let info = session.wait_ready(deadline)?;
    debug!("connecting to {}:{}", target.as_str(), req.port);
    let (sam, surplus) = session.connect(&info, target.as_str(), req.port, deadline)?;
    Ok((sam, surplus, session, lease))
}

/// The name a CONNECT is for: the client's own, or the one a virtual address
/// stands for, sent as four bytes (SOCKS4 DSTIP, SOCKS5 ATYP 1) or as a
/// dotted quad in the name field (torsocks writes connect()'s address so).
/// Every other IP address is refused: it cannot be I2P.
fn host_of<'a>(addr: &'a Addr, shared: &Shared) -> Result<Cow<'a, [u8]>, Error> {
    let ip = match addr {
        Addr::Domain(name) => match dotted_ipv4(name) {
            Some(ip) => ip,
            None => return Ok(Cow::Borrowed(name)),
        },
        Addr::Ipv4(octets) => Ipv4Addr::from(*octets),
        Addr::Ipv6(_) => return Err(Error::TargetNotAllowed(Denied::IpAddress)),
    };
    let name = shared.virtual_name(ip)?;
    debug!("virtual address {ip} is {name}");
    Ok(Cow::Owned(name.into_bytes()))
}
