//! SAM v3, the I2P router's application bridge: the pure command/reply codec
//! (`proto`), rate-limited warnings about sessions (`build_warn`), one bridge socket with HELLO and bounded reply lines (`conn`),
//! a session's control socket with its PING answers and NAMING LOOKUPs
//! (`control`), the encryption types a new session asks for (`encryption`), the state of
//! a session being built (`ready`), when a session may be closed
//! (`linger`), whether a session still reaches what it
//! reached before (`reach`), supervised stream sessions and STREAM
//! CONNECT (`stream`), and repliable datagram sessions for SOCKS5 UDP
//! ASSOCIATE (`datagram`). Nothing here knows SOCKS.

pub mod build_warn;
pub mod conn;
pub mod control;
pub mod datagram;
pub mod encryption;
pub mod linger;
pub mod proto;
pub mod reach;
pub mod ready;
pub mod stream;
