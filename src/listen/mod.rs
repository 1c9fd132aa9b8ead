//! Where clients connect: the `-l` endpoints (a TCP address and port, or
//! `unix:/path`), binding them, accepting on them, and waking a blocked
//! accept so that shutdown can end it. One accept loop runs per listener
//! (in `main.rs`); this file knows nothing of SOCKS or identities.
//!
//! The Unix socket file (checks, mode, stale sockets, removal) is
//! `listen::unix`; the TCP accept that a waker ends is `listen::tcp`.

pub mod tcp;
pub mod unix;

use crate::client::Client;
use std::fmt;
use std::io::{self, ErrorKind};
use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use tcp::TcpAccept;
use unix::{UnixError, UnixSocketFile};

/// Written before a Unix socket's path in `-l` and in logs.
pub const UNIX_PREFIX: &str = "unix:";
/// i2pd's SOCKS proxy listens here by default, as i2psocks does.
const I2PD_SOCKS_PORT: u16 = 4447;

/// One `-l` value.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Endpoint {
    /// `ADDR:PORT` (numeric) or `unix:/absolute/path`.
    pub fn parse(s: &str) -> Result<Endpoint, String> {
        if let Some(p) = s.strip_prefix(UNIX_PREFIX) {
            let path = PathBuf::from(p);
            unix::check_path(&path)?;
            return Ok(Endpoint::Unix(path));
        }
        s.parse().map(Endpoint::Tcp).map_err(|_| {
            format!("'{s}': expected a numeric ADDR:PORT such as 127.0.0.1:4447 or [::1]:4447, or unix:/path")
        })
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Tcp(a) => write!(f, "{a}"),
            Endpoint::Unix(p) => write!(f, "{UNIX_PREFIX}{}", p.display()),
        }
    }
}

/// Why a listener cannot be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindError {
    /// The place is unsafe or taken by something we must not touch: a
    /// configuration to fix (exit 78).
    Config(String),
    /// The system refused (exit 1).
    Other(String),
}

/// A bound, listening endpoint.
#[derive(Debug)]
pub enum Listener {
    Tcp(TcpAccept),
    Unix(UnixSocketFile),
}

impl Listener {
    /// Bind `ep`; a Unix socket gets `unix_mode`.
    pub fn bind(ep: &Endpoint, unix_mode: u32) -> Result<Listener, BindError> {
        match ep {
            Endpoint::Tcp(a) => TcpAccept::bind(*a).map(Listener::Tcp).map_err(|e| tcp_error(*a, &e)),
            Endpoint::Unix(p) => {
                UnixSocketFile::bind(p, unix_mode).map(Listener::Unix).map_err(|e| match e {
                    UnixError::Refused(m) => BindError::Config(m),
                    UnixError::Io(m) => BindError::Other(m),
                })
            }
        }
    }

    /// What `listening on` says: the real address (port 0 resolved), or
    /// `unix:/path`.
    pub fn local(&self) -> io::Result<Endpoint> {
        match self {
            Listener::Tcp(l) => l.local_addr().map(Endpoint::Tcp),
            Listener::Unix(u) => Ok(Endpoint::Unix(u.path().to_path_buf())),
        }
    }

    /// Block until a client connects, or (`Interrupted`) until woken.
    pub fn accept(&mut self) -> io::Result<Client> {
        match self {
            Listener::Tcp(l) => l.accept().map(Client::Tcp),
            Listener::Unix(u) => u.listener().accept().map(|(s, _)| Client::Unix(s)),
        }
    }

    /// How to wake this listener's blocked accept.
    pub fn waker(&self) -> Wake {
        match self {
            Listener::Tcp(l) => Wake::Tcp(l.waker()),
            Listener::Unix(u) => Wake::Unix(u.path().to_path_buf()),
        }
    }
}

/// One bind failure line; the port i2pd's SOCKS proxy takes by default
/// gets the likely owner and the two ways out.
fn tcp_error(a: SocketAddr, e: &io::Error) -> BindError {
    let mut m = format!("cannot listen on {a}: {e}");
    if e.kind() == ErrorKind::AddrInUse && a.port() == I2PD_SOCKS_PORT {
        m.push_str(&format!(
            "; i2pd's own SOCKS proxy uses port {I2PD_SOCKS_PORT} by default: give i2psocks another port \
             (-l 127.0.0.1:4448) or turn i2pd's off ([socksproxy] enabled = false in i2pd.conf)"
        ));
    }
    BindError::Other(m)
}

/// What makes a blocked accept return: a TCP listener's waker, or a
/// connection to our own Unix socket.
#[derive(Debug, Clone)]
pub enum Wake {
    Tcp(Arc<mio::Waker>),
    Unix(PathBuf),
}

impl Wake {
    /// Wake once. For a Unix socket, refused or gone means nobody listens
    /// any more: that accept loop is over already.
    pub fn poke(&self) -> io::Result<()> {
        let r = match self {
            Wake::Tcp(w) => w.wake(),
            Wake::Unix(p) => UnixStream::connect(p).map(drop),
        };
        match r {
            Err(e) if matches!(e.kind(), ErrorKind::ConnectionRefused | ErrorKind::NotFound) => Ok(()),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parse_endpoints() {
        assert_eq!(
            Endpoint::parse("127.0.0.1:4447").unwrap(),
            Endpoint::Tcp("127.0.0.1:4447".parse().unwrap())
        );
        assert_eq!(Endpoint::parse("[::1]:0").unwrap(), Endpoint::Tcp("[::1]:0".parse().unwrap()));
        assert_eq!(
            Endpoint::parse("unix:/run/i2psocks/s").unwrap(),
            Endpoint::Unix("/run/i2psocks/s".into())
        );
        for bad in ["localhost:4447", "127.0.0.1", "unix:rel/s", "unix:", "/run/s", "unix:/"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(Endpoint::parse("unix:/run/s").unwrap().to_string(), "unix:/run/s");
        assert_eq!(Endpoint::parse("[::1]:7").unwrap().to_string(), "[::1]:7");
    }

    #[test]
    fn port_in_use_names_i2pd_only_for_its_port() {
        let busy = io::Error::from(ErrorKind::AddrInUse);
        let BindError::Other(m) = tcp_error("127.0.0.1:4447".parse().unwrap(), &busy) else { unreachable!() };
        assert!(m.contains("i2pd") && m.contains("[socksproxy] enabled = false") && m.contains("-l"), "{m}");
        let BindError::Other(m) = tcp_error("127.0.0.1:4448".parse().unwrap(), &busy) else { unreachable!() };
        assert!(!m.contains("i2pd"), "{m}");
    }

    #[test]
    fn wake_a_tcp_accept() {
        let mut l = Listener::bind(&Endpoint::Tcp("0.0.0.0:0".parse().unwrap()), 0o600).unwrap();
        let w = l.waker();
        let t = std::thread::spawn(move || l.accept().map(drop).map_err(|e| e.kind()));
        w.poke().unwrap();
        assert_eq!(t.join().unwrap(), Err(ErrorKind::Interrupted));
        // Nobody listens any more: not an error.
        w.poke().unwrap();
    }
}
