//! i2psocks: a SOCKS 4/4a/5 front end that reaches the I2P network, and
//! nothing else, through an I2P router's SAM v3 bridge.
//!
//! The library holds every part of the proxy so that the binary (`main.rs`),
//! the integration tests and the fuzz targets share one implementation.
//! Sans-IO codecs (`socks`, `sam::proto`, `i2p_addr`) carry the protocol
//! logic; `sam` drives the bridge, `identity` keeps the sessions behind the
//! identities (with `spares` built ahead of need), `listen` binds the `-l`
//! endpoints and accepts `client`s, `proxy` serves one client per SOCKS
//! command, and `relay` and `pool` move the bytes and bound the workers (`holds`
//! lists the FINs relays hold back, for the accept loop to cut short).
//! Dependencies point one way: `proxy` → {`socks`, `identity`, `relay`,
//! `client`}; `identity` → `spares` → `sam` → {`sam::proto`, `i2p_addr`,
//! `rand`}; `identity` → `keydir` → `keyfile` → `i2p_addr`; `listen` →
//! {`client`, `rand`}.

pub mod auth;
pub mod buffers;
pub mod cli;
pub mod client;
pub mod counters;
pub mod error;
pub mod holds;
pub mod i2p_addr;
pub mod identity;
pub mod keydir;
pub mod keyfile;
pub mod leak;
pub mod listen;
pub mod log_limit;
pub mod memory;
pub mod pool;
pub mod proxy;
pub mod rand;
pub mod relay;
pub mod sam;
pub mod sandbox;
pub mod socks;
pub mod spares;
pub mod status;
pub mod virtual_net;
