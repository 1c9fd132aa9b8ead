//! A TCP listener whose waiting accept can be ended from another thread
//! without a connection to it: the accept waits in poll(2) on the socket and
//! on an eventfd waker. A connection to ourselves would need the sandbox to
//! allow TCP connects to the listening port (src/sandbox.rs), and a port
//! names no address. Nothing here speaks SOCKS.

use mio::net::TcpListener as MioListener;
use mio::{Events, Interest, Poll, Token, Waker};
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;

const SOCKET: Token = Token(0);
const WAKE: Token = Token(1);
/// Readiness events taken per poll: the socket and the waker.
const EVENTS: usize = 2;

/// A bound TCP listener and what wakes its accept.
#[derive(Debug)]
pub struct TcpAccept {
    listener: MioListener,
    poll: Poll,
    events: Events,
    waker: Arc<Waker>,
}

impl TcpAccept {
    /// Bind and listen on `addr`.
    pub fn bind(addr: SocketAddr) -> io::Result<TcpAccept> {
        // std binds and listens with the usual backlog; mio takes it over,
        // non-blocking (from_std leaves that to us).
        let std_listener = TcpListener::bind(addr)?;
        std_listener.set_nonblocking(true)?;
        let mut listener = MioListener::from_std(std_listener);
        let poll = Poll::new()?;
        poll.registry().register(&mut listener, SOCKET, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKE)?);
        Ok(TcpAccept { listener, poll, events: Events::with_capacity(EVENTS), waker })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// What ends a waiting [`TcpAccept::accept`] from another thread.
    pub fn waker(&self) -> Arc<Waker> {
        Arc::clone(&self.waker)
    }

    /// Wait for a client (a blocking socket, as accept(2) on a blocking
    /// listener gives). `Interrupted` when woken, or when a signal ended the
    /// wait: the caller checks why and calls again.
    pub fn accept(&mut self) -> io::Result<TcpStream> {
        loop {
            // Readiness is reported on change only: take every client
            // pending before waiting again.
            match self.listener.accept() {
                Ok((s, _)) => {
                    let s = TcpStream::from(s);
                    s.set_nonblocking(false)?;
                    return Ok(s);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            self.poll.poll(&mut self.events, None)?;
            if self.events.iter().any(|e| e.token() == WAKE) {
                return Err(io::Error::new(ErrorKind::Interrupted, "woken"));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn accepts_blocking_clients_and_wakes_without_a_connection() {
        let mut l = TcpAccept::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = l.local_addr().unwrap();
        let mut c = TcpStream::connect(addr).unwrap();
        let mut s = l.accept().unwrap();
        // Blocking: a read waits for the byte rather than failing.
        let t = std::thread::spawn(move || {
            let mut b = [0u8; 1];
            s.read_exact(&mut b).map(|()| b[0])
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        c.write_all(b"x").unwrap();
        assert_eq!(t.join().unwrap().unwrap(), b'x');

        let w = l.waker();
        let t = std::thread::spawn(move || l.accept().map(drop));
        std::thread::sleep(std::time::Duration::from_millis(50));
        w.wake().unwrap();
        assert_eq!(t.join().unwrap().unwrap_err().kind(), ErrorKind::Interrupted);
    }
}
