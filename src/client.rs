//! A SOCKS client's connection, from a TCP or a Unix-domain listener: the
//! one type the handshake, the replies and the closing use, so that both
//! kinds get the same protocol code. What differs is said here: a Unix
//! client has no address (it is logged by its listener's path) and no
//! Nagle algorithm to turn off. The relay takes the socket inside (see
//! `relay::ClientSocket`); UDP ASSOCIATE needs a TCP one.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// An accepted client.
#[derive(Debug)]
pub enum Client {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Client {
    /// Turn off Nagle's algorithm where there is one: replies go out at once.
    pub fn set_nodelay(&self) {
        if let Client::Tcp(s) = self {
            let _ = s.set_nodelay(true);
        }
    }

    pub fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        match self {
            Client::Tcp(s) => s.set_read_timeout(d),
            Client::Unix(s) => s.set_read_timeout(d),
        }
    }

    pub fn set_write_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        match self {
            Client::Tcp(s) => s.set_write_timeout(d),
            Client::Unix(s) => s.set_write_timeout(d),
        }
    }

    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Client::Tcp(s) => s.shutdown(how),
            Client::Unix(s) => s.shutdown(how),
        }
    }

    /// How logs name the client: its address, or for a Unix client (which
    /// has none) `listener`, the `unix:/path` it came in on.
    pub fn label(&self, listener: &str) -> String {
        match self {
            Client::Tcp(s) => s.peer_addr().map(|a| a.to_string()).unwrap_or_else(|_| "?".into()),
            Client::Unix(_) => listener.to_string(),
        }
    }
}

impl Read for Client {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Client::Tcp(s) => s.read(buf),
            Client::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Client {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Client::Tcp(s) => s.write(buf),
            Client::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Client::Tcp(s) => s.flush(),
            Client::Unix(s) => s.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn unix_client_reads_writes_and_is_named_by_its_listener() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut c = Client::Unix(a);
        c.set_nodelay();
        c.write_all(b"ping").unwrap();
        let mut got = [0u8; 4];
        b.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"ping");
        b.write_all(b"pong").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        c.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"pong");
        assert_eq!(c.label("unix:/run/x"), "unix:/run/x");
        c.shutdown(Shutdown::Write).unwrap();
        assert_eq!(b.read(&mut got).unwrap(), 0);
    }
}
