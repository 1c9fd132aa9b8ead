//! Fixed ports for the routers the tests start (tests/common/i2pd.rs,
//! tests/common/emissary.rs): a router is configured with its ports before it runs, and
//! keeps them across a restart, so they cannot be port 0.
//!
//! Picked at random in [`PORT_RANGE`], below the kernel's ephemeral range (32768+), where a
//! leftover TIME_WAIT socket could make a router fail to bind silently; free on 127.0.0.1
//! and 0.0.0.0 at the time of asking, which is racy by nature: a router that does not come
//! up is restarted on fresh ports by its harness.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, clippy::indexing_slicing)]

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, TcpListener, UdpSocket};

/// Where the ports come from.
pub const PORT_RANGE: std::ops::Range<u16> = 20_000..32_000;
/// Random picks tried before giving up.
const TRIES: usize = 10_000;

/// A fresh random number (for ports and session IDs).
pub fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0),
    );
    h.write_u32(std::process::id());
    h.finish()
}

fn port_free(port: u16, udp: bool) -> bool {
    if udp {
        UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
            && UdpSocket::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok()
    } else {
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
            && TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).is_ok()
    }
}

/// Three distinct free TCP ports, no two adjacent. The second is a SAM bridge's: its
/// port - 1 is free for UDP and TCP too, where both routers put the datagram port (i2pd by
/// itself, the emissary harness by its configuration).
pub fn pick_ports() -> [u16; 3] {
    let span = u64::from(PORT_RANGE.end - PORT_RANGE.start);
    let mut got: Vec<u16> = Vec::new();
    for _ in 0..TRIES {
        let p = PORT_RANGE.start + (random_u64() % span) as u16;
        let clash = got.iter().any(|&q| q.abs_diff(p) <= 1);
        let sam_udp_ok = got.len() != 1 || (port_free(p - 1, true) && port_free(p - 1, false));
        if !clash && port_free(p, false) && sam_udp_ok {
            got.push(p);
            if got.len() == 3 {
                return [got[0], got[1], got[2]];
            }
        }
    }
    panic!("no free ports in {PORT_RANGE:?}");
}
