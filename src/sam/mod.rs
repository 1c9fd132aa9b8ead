//! SAM v3: the pure command/reply codec (`proto`) and the blocking client and
//! session supervisor built on it (`client`).

pub mod client;
pub mod proto;
