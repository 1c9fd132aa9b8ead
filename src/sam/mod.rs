//! SAM v3: the pure command/reply codec (`proto`), the blocking client and
//! session supervisor built on it (`client`), and repliable datagram
//! sessions for SOCKS5 UDP ASSOCIATE (`datagram`).

pub mod client;
pub mod datagram;
pub mod proto;
