//! Tor's RESOLVE and RESOLVE_PTR: an `.i2p` name gets a virtual IPv4 address
//! from `--virtual-net`, and a virtual address gives its name back.
//!
//! Answered at once from the map in `virtual_net`, with no network traffic:
//! nothing is looked up in I2P (the router resolves the name when a CONNECT
//! to the address comes) and nothing ever goes to DNS. Names are validated
//! exactly as CONNECT validates them; anything else is refused with 0x02.
//! torsocks sends RESOLVE for every name a program looks up, then connects
//! to the address it got (`connect` maps it back).

use crate::client::Client;
use crate::error::{Denied, Error};
use crate::i2p_addr;
use crate::proxy::context::{self, Shared};
use crate::socks::{self, Addr, Bound, Command, Rep, Request};
use crate::virtual_net::dotted_ipv4;
use log::{debug, warn};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

/// Serve a RESOLVE or RESOLVE_PTR, then close.
pub fn serve(mut client: Client, req: &Request, peer: &str, shared: &Shared) {
    let answer = if req.command == Command::ResolvePtr {
        name_of(&req.addr, shared)
            .map(|name| socks::reply_bound(req.version, Rep::Succeeded, Bound::Domain(name.as_bytes(), 0)))
    } else {
        address_of(&req.addr, shared)
            .map(|ip| socks::reply_bound(req.version, Rep::Succeeded, SocketAddr::from((ip, 0))))
    };
    match answer {
        Ok(reply) => {
            debug!("{peer}: resolved");
            let _ = context::write_reply(&mut client, &reply);
            context::graceful_close(client);
        }
        Err(e) => context::refuse(client, req, e, peer),
    }
}

/// RESOLVE: the virtual address of a valid I2P name.
fn address_of(addr: &Addr, shared: &Shared) -> Result<Ipv4Addr, Error> {
    let Addr::Domain(host) = addr else {
        return Err(Error::TargetNotAllowed(Denied::IpAddress));
    };
    let target = i2p_addr::parse_target(host).map_err(|e| {
        debug!("RESOLVE refused: {e:?}");
        Error::TargetNotAllowed(e.into())
    })?;
    // The lock is held for the map's work only, not for logging.
    let answer = {
        let mut map = shared.virtual_map();
        map.resolve(target.as_str(), Instant::now()).ok_or((map.net(), map.len(), map.held()))
    };
    match answer {
        Ok(ip) => {
            debug!("RESOLVE {} -> {ip}", target.as_str());
            Ok(ip)
        }
        Err((net, names, held)) => {
            warn!("no free virtual address in --virtual-net {net}: {names} names mapped and {held} held back; refusing RESOLVE");
            Err(Error::Overloaded)
        }
    }
}

/// RESOLVE_PTR: the name at a virtual address, given as four bytes or as a
/// dotted quad. A name where an address belongs is Tor's 0x08.
fn name_of(addr: &Addr, shared: &Shared) -> Result<String, Error> {
    let ip = match addr {
        Addr::Ipv4(octets) => Ipv4Addr::from(*octets),
        Addr::Domain(text) => dotted_ipv4(text).ok_or(Error::AddrTypeNotSupported)?,
        // No IPv6 range is mapped: no name can be behind it.
        Addr::Ipv6(_) => return Err(Error::TargetNotAllowed(Denied::Malformed)),
    };
    shared.virtual_name(ip)
}
