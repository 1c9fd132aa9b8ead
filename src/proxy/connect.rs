//! CONNECT: validate the target, open an I2P stream to it on the client's
//! identity, answer, then relay bytes both ways until either side is done.
//!
//! The target is checked before anything touches the network (only `.i2p`
//! names and `.b32.i2p` addresses pass); success is answered only after the
//! bridge reported the stream open.

use crate::error::Error;
use crate::i2p_addr;
use crate::identity::Lease;
use crate::proxy::context::{self, Shared};
use crate::relay;
use crate::sam::stream;
use crate::socks::{self, Addr, Rep, Request};
use log::debug;
use std::net::TcpStream;
use std::time::Instant;

/// Serve a CONNECT whose request `req` was just read from `client`;
/// `payload` is what the client sent after it.
pub fn serve(mut client: TcpStream, req: &Request, payload: &[u8], peer: &str, shared: &Shared) {
    match open(req, shared) {
        Ok((sam, surplus, _lease)) => {
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
            match relay::relay(client, sam, payload, &surplus, opts, &shared.stop) {
                Ok((end, stats)) => debug!(
                    "{peer}: relay ended ({end:?}): {} bytes out, {} bytes in",
                    stats.to_server, stats.to_client
                ),
                Err(e) => debug!("{peer}: relay failed: {e}"),
            }
        }
        Err(e) => context::refuse(client, req, e, peer),
    }
}

/// Validate the request and open its I2P stream on the client's identity.
/// The lease keeps that identity alive while the stream lasts.
fn open(req: &Request, shared: &Shared) -> Result<(TcpStream, Vec<u8>, Lease), Error> {
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
    let lease = shared.identities.acquire(shared.key_for(req))?;
    let info = lease.stream()?.wait_ready(deadline)?;
    debug!("connecting to {}:{}", target.as_str(), req.port);
    let (sam, surplus) = stream::connect(shared.config.sam, &info, target.as_str(), req.port, deadline)?;
    Ok((sam, surplus, lease))
}
