//! i2psocks: a SOCKS 4/4a/5 front end that reaches the I2P network, and
//! nothing else, through an I2P router's SAM v3 bridge.
//!
//! The library holds every part of the proxy so that the binary (`main.rs`),
//! the integration tests and the fuzz targets share one implementation.
//! Sans-IO codecs (`socks`, `sam::proto`, `i2p_addr`) carry the protocol
//! logic; `sam::client`, `relay`, `pool` and `server` do the I/O around them;
//! `udp` and `sam::datagram` carry SOCKS5 UDP ASSOCIATE.

pub mod auth;
pub mod cli;
pub mod error;
pub mod i2p_addr;
pub mod identity;
pub mod keyfile;
pub mod pool;
pub mod relay;
pub mod sam;
pub mod server;
pub mod socks;
pub mod udp;
