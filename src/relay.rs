//! Byte relay between a SOCKS client and its SAM stream socket, both ways, in
//! the calling thread. The client's socket is TCP or Unix-domain
//! ([`ClientSocket`]); the same state machine serves both. The two sockets
//! are polled together with mio (edge-triggered). A direction holds a buffer
//! only while it has bytes to move: it borrows one from [`BUFFERS`] when its
//! source is readable and gives it back once everything read is written and
//! the source has nothing more, so an idle connection holds none. TCP
//! semantics are kept: an EOF read from one side becomes `shutdown(Write)` on
//! the other once everything read before it has been delivered, while the
//! opposite direction keeps flowing (RFC 9293 half-close). It does not parse
//! or log payload, set socket options (`TCP_NODELAY` is the caller's choice)
//! or speak SOCKS/SAM; the handshakes happen before it and hand over any
//! bytes they read ahead as `to_server_first` / `to_client_first`.
//!
//! One exception to passing an EOF on at once, for the client→server
//! direction only: with [`Options::half_close_wait`] the client's FIN is held
//! back while the server is still answering, and passed on once the server
//! has sent nothing for that long, or at once when the server closes first.
//! i2pd 2.45's SAM bridge ends the whole I2P stream when its socket reads
//! EOF and drops the answer still on its way (measured: 1,000 bytes sent
//! then FIN, nothing back), so a client that half-closes to say "request
//! done" would otherwise get no answer. A held FIN is listed in
//! [`HOLDS`] while it is held: a new client that finds no free place has
//! the oldest one passed on at once (src/holds.rs), which the relay then
//! sees as the end of its hold.
//!
//! Errors: a reset or broken pipe on either socket ends the relay as
//! [`End::Done`] (it is how many peers close; the caller sees it in `Stats`
//! and a debug log line), after every byte that can still be delivered to the
//! surviving side has been. Any other socket error also drains what it can,
//! then is returned as `Err`. Errors setting up the poller are returned at once.
//!
//! The copy itself lives in [`Dir::pump`] so that a zero-copy `splice(2)`
//! path could later replace the buffer without touching the readiness and
//! half-close state machine around it.

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::event::{Event, Source};
use mio::net::{TcpStream as MioStream, UnixStream as MioUnix};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};

use crate::buffers::{Buf, Lender};
use crate::holds::{Holds, Ticket, HOLDS};

/// Size of the buffer a direction borrows first.
pub const BUF_SIZE: usize = 16 * 1024;

/// Size a direction's buffer grows to once it carries bulk data: `make
/// bench` measured +50-66 % bulk throughput and a third less CPU per GiB
/// at 64 KiB than at 16 KiB (128 KiB gave nothing more).
pub const BUF_MAX: usize = 64 * 1024;

/// Reads that fill the whole buffer before it grows to [`BUF_MAX`].
const GROW_AFTER: u32 = 4;

/// Given-back buffers kept for the next relay that needs one, per size:
/// about one per direction of the relays that move bytes at the same moment
/// on a small machine; more are freed (at most 1.5 MiB stays allocated).
const KEEP_SMALL: usize = 32;
const KEEP_LARGE: usize = 16;

/// The buffers every relay of the process borrows from.
pub static BUFFERS: Lender = Lender::new(BUF_SIZE, BUF_MAX, KEEP_SMALL, KEEP_LARGE);

/// Longest single wait in `poll`, so that `stop` is seen at least this often
/// (except by a relay holding a FIN, see [`HOLDS`]).
pub const STOP_CHECK: Duration = Duration::from_millis(250);

/// Buffer-fulls one direction may read per turn before the other direction
/// and `stop` get their turn (fairness under a sender that never pauses).
const TURN_READS: u32 = 16;

/// How long the I2P side may stay silent, with everything it sent delivered
/// and its stream still open, before the relay says so in a debug line: a
/// router that lost the stream's close looks exactly like this, and without
/// the line the client just hangs until the idle timeout. Long enough that a
/// page fetch between two requests of a keep-alive client stays quiet.
const QUIET_NOTICE: Duration = Duration::from_secs(60);

/// Events taken per `poll` call; two sockets give at most two events.
const EVENTS_CAPACITY: usize = 4;

const CLIENT: Token = Token(0);
const SERVER: Token = Token(1);

/// A connected stream socket the relay can take: it becomes a non-blocking
/// socket that mio polls.
pub trait ClientSocket {
    type Polled: Polled;
    fn into_polled(self) -> io::Result<Self::Polled>;
}

/// A non-blocking stream socket registered with mio: what one relay
/// direction reads, writes and shuts down.
pub trait Polled: Source {
    fn read_into(&self, buf: &mut [u8]) -> io::Result<usize>;
    fn write_from(&self, buf: &[u8]) -> io::Result<usize>;
    fn shut(&self, how: Shutdown) -> io::Result<()>;
    fn pending_error(&self) -> io::Result<Option<io::Error>>;
}

/// The two kinds of client socket have the same calls under the same
/// names; one body serves both.
macro_rules! client_socket {
    ($std:ty, $mio:ty) => {
        impl ClientSocket for $std {
            type Polled = $mio;
            fn into_polled(self) -> io::Result<$mio> {
                self.set_nonblocking(true)?;
                Ok(<$mio>::from_std(self))
            }
        }

        impl Polled for $mio {
            fn read_into(&self, buf: &mut [u8]) -> io::Result<usize> {
                (&*self).read(buf)
            }
            fn write_from(&self, buf: &[u8]) -> io::Result<usize> {
                (&*self).write(buf)
            }
            fn shut(&self, how: Shutdown) -> io::Result<()> {
                self.shutdown(how)
            }
            fn pending_error(&self) -> io::Result<Option<io::Error>> {
                self.take_error()
            }
        }
    };
}

client_socket!(TcpStream, MioStream);
client_socket!(UnixStream, MioUnix);

/// The SAM stream socket. Shared, not owned, so that a hold can be released
/// from another thread (see [`HOLDS`]); it closes when both let go.
struct ServerSocket(Arc<TcpStream>);

impl ServerSocket {
    fn new(s: TcpStream) -> io::Result<ServerSocket> {
        s.set_nonblocking(true)?;
        Ok(ServerSocket(Arc::new(s)))
    }
}

impl Source for ServerSocket {
    fn register(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        SourceFd(&self.0.as_raw_fd()).register(registry, token, interests)
    }
    fn reregister(&mut self, registry: &Registry, token: Token, interests: Interest) -> io::Result<()> {
        SourceFd(&self.0.as_raw_fd()).reregister(registry, token, interests)
    }
    fn deregister(&mut self, registry: &Registry) -> io::Result<()> {
        SourceFd(&self.0.as_raw_fd()).deregister(registry)
    }
}

impl Polled for ServerSocket {
    fn read_into(&self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
    }
    fn write_from(&self, buf: &[u8]) -> io::Result<usize> {
        (&*self.0).write(buf)
    }
    fn shut(&self, how: Shutdown) -> io::Result<()> {
        self.0.shutdown(how)
    }
    fn pending_error(&self) -> io::Result<Option<io::Error>> {
        self.0.take_error()
    }
}

/// Bytes moved in each direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub to_server: u64,
    pub to_client: u64,
    /// The server's end (EOF or a failure of its socket) came while the
    /// client's side was still open towards it: the server ended the
    /// stream, not the relay (a SAM session's closing waits longer after a
    /// stream the relay ended, see src/sam/linger.rs).
    pub server_first: bool,
}

/// The waits of one relay.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Options {
    /// End the relay when no byte has moved either way for this long; zero:
    /// never.
    pub idle: Duration,
    /// Once the client's EOF is read and everything before it delivered,
    /// pass its FIN to the server only when the server has sent nothing for
    /// this long (or at once when the server's own EOF or an error comes
    /// first); zero: pass it on at once.
    pub half_close_wait: Duration,
}

/// How a relay ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Both directions reached EOF and were flushed.
    Done,
    /// No byte moved for the idle timeout.
    Idle,
    /// `stop` was set.
    Stopped,
}

/// Relay until both directions are finished. `to_server_first` is written to
/// `server` before anything read from `client`; `to_client_first` likewise to
/// `client`. A read EOF on one side becomes `shutdown(Write)` on the other
/// once its buffer is flushed, while the other direction keeps flowing; the
/// client's EOF may be held back first, see [`Options::half_close_wait`].
///
/// `opts.idle` bounds the whole relay, a held FIN included. `stop` is
/// checked at least every [`STOP_CHECK`]. `Stats` count bytes written to
/// each side, the `*_first` bytes included. A peer reset (or broken pipe)
/// ends the relay with `Ok(End::Done)` once the other direction has
/// delivered what it could; other socket errors come back as `Err` after the
/// same draining. Both sockets are closed when this returns.
pub fn relay<C: ClientSocket>(
    client: C,
    server: TcpStream,
    to_server_first: &[u8],
    to_client_first: &[u8],
    opts: Options,
    stop: &AtomicBool,
) -> io::Result<(End, Stats)> {
    let shared = Shared { lender: &BUFFERS, holds: &HOLDS };
    relay_with(client, server, to_server_first, to_client_first, opts, stop, shared)
}

/// What every relay of the process uses: the buffers it borrows and the
/// list its held FIN goes on (tests give a relay its own).
#[derive(Clone, Copy)]
struct Shared<'a> {
    lender: &'a Lender,
    holds: &'a Holds,
}

/// [`relay`] with buffers and holds from `shared`. Never inlined: the caller's frame
/// then need not hold the relay's state while it opens the stream, and the
/// deepest point of a connection's stack stays shallower (the stack pages a
/// held connection has touched stay resident).
#[inline(never)]
fn relay_with<C: ClientSocket>(
    client: C,
    server: TcpStream,
    to_server_first: &[u8],
    to_client_first: &[u8],
    opts: Options,
    stop: &AtomicBool,
    shared: Shared<'_>,
) -> io::Result<(End, Stats)> {
    let Shared { lender, holds } = shared;
    let mut client = client.into_polled()?;
    let mut server = ServerSocket::new(server)?;

    let mut poll = Poll::new()?;
    let both = Interest::READABLE | Interest::WRITABLE;
    poll.registry().register(&mut client, CLIENT, both)?;
    poll.registry().register(&mut server, SERVER, both)?;
    let mut events = Events::with_capacity(EVENTS_CAPACITY);

    let hold = !opts.half_close_wait.is_zero();
    let mut up = Dir::new(to_server_first, hold, lender);
    let mut down = Dir::new(to_client_first, false, lender);
    // Optimistic start: the handshake may have left bytes waiting and fresh
    // sockets are writable, so try before the first wait.
    let mut client_ready = Ready::optimistic();
    let mut server_ready = Ready::optimistic();
    let mut error: Option<io::Error> = None;
    let mut last_move = Instant::now();
    // While the client's FIN is held: when the server last made progress
    // towards the client, or the hold began if later.
    let mut held_since: Option<Instant> = None;
    // Listed while the FIN is held; dropping it ends the listing.
    let mut ticket: Option<Ticket<'_>> = None;
    // The quiet I2P side was reported for the current quiet spell.
    let mut quiet_noted = false;
    // Who ended first, once one side has: true for the server.
    let mut server_first: Option<bool> = None;

    loop {
        let mut moved = false;
        let mut answered = false;
        let mut more = false;
        // A fault in one direction changes what the other can do, so run
        // both again until a pass brings no new fault (at most a few passes:
        // every fault moves a direction one way towards finished).
        loop {
            let a = up.pump(&client, &server, &mut client_ready, &mut server_ready);
            let b = down.pump(&server, &client, &mut server_ready, &mut client_ready);
            moved |= a.moved || b.moved;
            answered |= b.moved;
            more |= a.more || b.more;
            let again = a.has_fault() || b.has_fault();
            a.apply(&mut down, &mut server_ready, &mut error);
            b.apply(&mut up, &mut client_ready, &mut error);
            if !again {
                break;
            }
        }
        if server_first.is_none() {
            // A hold released by another thread has passed the FIN on already.
            let released = ticket.as_ref().is_some_and(|t| t.released());
            server_first = ended_first(&up, &down, released);
        }
        let now = Instant::now();
        let mut hold_left = None;
        if up.flow == Flow::Held {
            if ticket.get_or_insert_with(|| holds.hold(&server.0)).released() {
                // Passed on for a new client (src/holds.rs did the shutdown).
                up.flow = Flow::Closed;
                ticket = None;
            } else {
                let since = held_since.get_or_insert(now);
                if answered {
                    *since = now;
                }
                match release_after(*since, now, opts.half_close_wait, &down) {
                    Some(left) if left.is_zero() => {
                        up.pass_fin(&server);
                        ticket = None;
                    }
                    left => hold_left = left,
                }
            }
        }
        if up.finished() && down.finished() {
            break;
        }
        if stop.load(Ordering::Relaxed) {
            return Ok((End::Stopped, stats(&up, &down, server_first)));
        }
        if moved {
            last_move = now;
            quiet_noted = false;
        }
        let quiet = now.saturating_duration_since(last_move);
        if !quiet_noted && gone_quiet(quiet, down.moved, down.flow == Flow::Open && down.is_empty()) {
            quiet_noted = true;
            log::debug!(
                "relay: the I2P side sent nothing for {} s after {} bytes, all delivered, and has not closed; \
                 waiting for its close or the idle timeout ({} s; 0: none)",
                quiet.as_secs(),
                down.moved,
                opts.idle.as_secs()
            );
        }
        // A direction that used up its turn is still ready: only collect
        // new events, don't wait.
        let mut timeout = if more { Duration::ZERO } else { STOP_CHECK };
        // The hold ends by the clock, not by an event: wake for it, and
        // only for it: a thousand held relays waking for `stop` every
        // STOP_CHECK would cost the proxy 4,000 wake-ups a second. The stop
        // reaches them through `Holds::end_all` (main.rs), whose shutdown
        // wakes the poll.
        if let Some(left) = hold_left {
            timeout = if more { Duration::ZERO } else { left };
        }
        if !opts.idle.is_zero() {
            if quiet >= opts.idle {
                return Ok((End::Idle, stats(&up, &down, server_first)));
            }
            timeout = timeout.min(opts.idle.saturating_sub(quiet));
        }
        match poll.poll(&mut events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        // Finished directions simply ignore the readiness of their sockets:
        // with edge triggering a stale `readable` after EOF costs at most one
        // wake per real socket event, never a spin.
        for event in events.iter() {
            match event.token() {
                CLIENT => client_ready.update(event),
                SERVER => server_ready.update(event),
                _ => {}
            }
        }
        // A reset on a socket that we no longer read (its EOF came earlier)
        // and have nothing to write to would otherwise go unnoticed until
        // the other peer acts; the error event lets us ask the socket.
        if client_ready.take_failed() {
            if let Ok(Some(e)) = client.pending_error() {
                socket_failed(&mut down, &mut client_ready, e, &mut error);
            }
        }
        if server_ready.take_failed() {
            if let Ok(Some(e)) = server.pending_error() {
                socket_failed(&mut up, &mut server_ready, e, &mut error);
            }
        }
    }

    let totals = stats(&up, &down, server_first);
    match error {
        None => Ok((End::Done, totals)),
        Some(e) => {
            // Make sure the peer that is still there sees the end even if
            // someone else holds a clone of the socket.
            let _ = client.shut(Shutdown::Both);
            let _ = server.shut(Shutdown::Both);
            if is_disconnect(e.kind()) {
                log::debug!("relay ended by peer: {e}");
                Ok((End::Done, totals))
            } else {
                Err(e)
            }
        }
    }
}

/// Whether a relay whose bytes stopped moving `quiet` ago should say that
/// the I2P side went silent: it delivered `to_client` bytes (some), and
/// `waiting` (its stream is open, nothing of it is buffered). Saying so never
/// ends the stream: the router may still send, so only it or the idle
/// timeout may.
fn gone_quiet(quiet: Duration, to_client: u64, waiting: bool) -> bool {
    waiting && to_client > 0 && quiet >= QUIET_NOTICE
}

/// How much longer the client's FIN stays held (it is, since `since`): zero
/// means pass it on now; None means no deadline yet, because bytes from the
/// server still wait for the client (the hold is then bounded by the idle
/// limit). The server's EOF or a failure of either socket (`down` no longer
/// open) releases it at once: nothing more can come that the FIN could cost.
fn release_after(since: Instant, now: Instant, wait: Duration, down: &Dir<'_>) -> Option<Duration> {
    if down.flow != Flow::Open {
        return Some(Duration::ZERO);
    }
    if !down.is_empty() {
        return None;
    }
    Some(wait.saturating_sub(now.saturating_duration_since(since)))
}

/// `e` came from socket S: the direction writing to S (`writer`) cannot
/// deliver any more; the one reading S (readiness `ready`) may still find
/// bytes queued before the failure.
fn socket_failed(writer: &mut Dir<'_>, ready: &mut Ready, e: io::Error, error: &mut Option<io::Error>) {
    writer.break_off();
    ready.force_read();
    error.get_or_insert(e);
}

fn stats(up: &Dir<'_>, down: &Dir<'_>, server_first: Option<bool>) -> Stats {
    Stats { to_server: up.moved, to_client: down.moved, server_first: server_first == Some(true) }
}

/// Which side ended first, once one has: Some(true) when the server's end
/// reached the relay (its EOF or read error, or writing to it broke) before
/// the relay ended the client's side towards it (passed the client's FIN on,
/// itself or by a `released` hold, or found the client gone); Some(false)
/// when the relay's end went first; None while both are open (a held FIN is
/// not passed on yet).
fn ended_first(up: &Dir<'_>, down: &Dir<'_>, released: bool) -> Option<bool> {
    let server_ended = matches!(down.flow, Flow::Flushing | Flow::Closed) || up.flow == Flow::Broken;
    let relay_ended = up.flow == Flow::Closed || down.flow == Flow::Broken || released;
    if server_ended {
        Some(!relay_ended)
    } else if relay_ended {
        Some(false)
    } else {
        None
    }
}

/// The ways a TCP peer goes away without a FIN; they end a relay normally.
fn is_disconnect(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::BrokenPipe
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::NotConnected
    )
}

/// What we know about one socket. mio is edge-triggered, so a flag stays set
/// until a call says `WouldBlock` (or a short transfer shows the kernel
/// buffer was exhausted), and is set again only by a new event.
#[derive(Debug, Clone, Copy)]
struct Ready {
    read: bool,
    write: bool,
    /// Sticky: the peer closed or the socket failed; the next read will say
    /// so, therefore a short read must not clear `read`.
    read_closed: bool,
    /// Sticky, as `read_closed`, for writes.
    write_closed: bool,
    /// An error event came and its pending error has not been looked at.
    failed: bool,
}

impl Ready {
    fn optimistic() -> Self {
        Ready { read: true, write: true, read_closed: false, write_closed: false, failed: false }
    }

    fn update(&mut self, event: &Event) {
        if event.is_readable() {
            self.read = true;
        }
        if event.is_read_closed() || event.is_error() {
            self.read = true;
            self.read_closed = true;
        }
        if event.is_writable() {
            self.write = true;
        }
        if event.is_write_closed() || event.is_error() {
            self.write = true;
            self.write_closed = true;
        }
        if event.is_error() {
            self.failed = true;
        }
    }

    fn take_failed(&mut self) -> bool {
        std::mem::take(&mut self.failed)
    }

    /// Another direction learnt that this socket failed: let the next read
    /// find out what is left (queued bytes, then EOF or the error).
    fn force_read(&mut self) {
        self.read = true;
        self.read_closed = true;
    }
}

/// Where one direction stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// Reading from the source and writing to the destination.
    Open,
    /// The source is finished (EOF or error): deliver what is buffered,
    /// then shut the destination's write side.
    Flushing,
    /// Flushed, but the destination's write side is kept open for now
    /// (client→server only, see [`Options::half_close_wait`]).
    Held,
    /// Flushed and shut down: finished normally.
    Closed,
    /// The destination failed; whatever was buffered cannot be delivered.
    Broken,
}

/// One direction: source socket → buffer → destination socket.
struct Dir<'a> {
    /// Bytes the handshake read ahead; written before anything in `buf`.
    first: &'a [u8],
    /// Borrowed while there are bytes to move (see the module doc).
    buf: Option<Buf<'a>>,
    lender: &'a Lender,
    /// `buf[start..end]` is read but not yet written.
    start: usize,
    end: usize,
    flow: Flow,
    /// Bytes written to the destination.
    moved: u64,
    /// Reads that filled the buffer while it was small.
    full_reads: u32,
    /// This direction carries bulk data: it borrows [`BUF_MAX`] buffers.
    large: bool,
    /// On EOF, stop at `Held` instead of shutting the destination down.
    hold: bool,
}

/// What one `pump` call did.
struct Step {
    moved: bool,
    /// Stopped because the turn was used up, not because anything blocks.
    more: bool,
    /// Reading the source failed: the source socket is gone.
    src_err: Option<io::Error>,
    /// Writing the destination failed: the destination socket is gone.
    dst_err: Option<io::Error>,
}

impl Step {
    fn has_fault(&self) -> bool {
        self.src_err.is_some() || self.dst_err.is_some()
    }

    /// Carries this direction's faults over to the opposite direction
    /// (`other`, whose source is our destination, `other_src` its readiness).
    fn apply(self, other: &mut Dir<'_>, other_src: &mut Ready, error: &mut Option<io::Error>) {
        if let Some(e) = self.src_err {
            // Our source is the other direction's destination: it is gone.
            other.break_off();
            error.get_or_insert(e);
        }
        if let Some(e) = self.dst_err {
            // Our destination is the other direction's source: its kernel
            // buffer may still hold bytes sent before the failure, so let it
            // read them out (it will then see EOF or the error).
            other_src.force_read();
            error.get_or_insert(e);
        }
    }
}

impl<'a> Dir<'a> {
    fn new(first: &'a [u8], hold: bool, lender: &'a Lender) -> Self {
        Dir {
            first,
            buf: None,
            lender,
            start: 0,
            end: 0,
            flow: Flow::Open,
            moved: 0,
            full_reads: 0,
            large: false,
            hold,
        }
    }

    /// Give the buffer back if everything in it has been written.
    fn give_back_if_empty(&mut self) {
        if self.start == self.end {
            self.buf = None;
            self.start = 0;
            self.end = 0;
        }
    }

    fn finished(&self) -> bool {
        matches!(self.flow, Flow::Closed | Flow::Broken)
    }

    fn is_empty(&self) -> bool {
        self.first.is_empty() && self.start == self.end
    }

    fn break_off(&mut self) {
        if self.flow != Flow::Closed {
            self.flow = Flow::Broken;
            self.first = &[];
            self.buf = None;
            self.start = 0;
            self.end = 0;
        }
    }

    /// Everything is delivered: pass the source's EOF on.
    fn pass_fin(&mut self, dst: &impl Polled) {
        // The peer may already be gone; the opposite direction or the final
        // close will report that, nothing to do here.
        if let Err(e) = dst.shut(Shutdown::Write) {
            log::debug!("relay: half-close failed: {e}");
        }
        self.flow = Flow::Closed;
    }

    /// Moves bytes until the sockets would block, the buffer is full and the
    /// destination is not writable, or this direction finishes. Reads are
    /// retried here after every write that made space, because a source
    /// left unread while the buffer was full produces no new event.
    fn pump(&mut self, src: &impl Polled, dst: &impl Polled, sr: &mut Ready, dr: &mut Ready) -> Step {
        let mut step = Step { moved: false, more: false, src_err: None, dst_err: None };
        let mut reads = 0;
        loop {
            if matches!(self.flow, Flow::Open | Flow::Flushing) {
                if let Err(e) = self.flush(dst, dr, &mut step.moved) {
                    self.break_off();
                    step.dst_err = Some(e);
                    return step;
                }
            }
            if self.flow == Flow::Flushing && self.is_empty() {
                self.buf = None;
                if self.hold {
                    self.flow = Flow::Held;
                } else {
                    self.pass_fin(dst);
                }
                return step;
            }
            if self.flow != Flow::Open || !sr.read {
                // Nothing to read for now: an emptied buffer goes back.
                self.give_back_if_empty();
                return step;
            }
            if reads == TURN_READS {
                step.more = true;
                return step;
            }
            let (lender, large) = (self.lender, self.large);
            let buf = self.buf.get_or_insert_with(|| lender.take(large));
            if self.end == buf.len() {
                if self.start == 0 {
                    // Full; the destination's next writable event resumes us.
                    return step;
                }
                // Blocked on a partial write: move the tail to the front so
                // the next read can be large.
                buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            let cap = buf.len();
            let room = buf.get_mut(self.end..).unwrap_or_default();
            let room_len = room.len();
            match src.read_into(room) {
                Ok(0) => self.flow = Flow::Flushing,
                Ok(n) => {
                    reads += 1;
                    self.end = self.end.saturating_add(n).min(cap);
                    step.moved = true;
                    // A short read drained the socket: skip the read that
                    // would only say WouldBlock and wait for the next edge.
                    if n < room_len && !sr.read_closed {
                        sr.read = false;
                    }
                    if n == room_len && !self.large {
                        self.full_reads += 1;
                        if self.full_reads >= GROW_AFTER {
                            self.grow();
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    sr.read = false;
                    self.give_back_if_empty();
                    return step;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    // Keep what was read before the failure: still deliverable.
                    self.flow = Flow::Flushing;
                    step.src_err = Some(e);
                }
            }
        }
    }

    /// From now on borrow [`BUF_MAX`] buffers; the bytes waiting in the
    /// small one move over.
    fn grow(&mut self) {
        self.large = true;
        let mut big = self.lender.take(true);
        if let Some(small) = self.buf.take() {
            let waiting = small.get(self.start..self.end).unwrap_or_default();
            if let Some(to) = big.get_mut(..waiting.len()) {
                to.copy_from_slice(waiting);
            }
            self.end -= self.start;
            self.start = 0;
        }
        self.buf = Some(big);
    }

    /// Writes `first`, then the buffer, until empty or the destination blocks.
    fn flush(&mut self, dst: &impl Polled, dr: &mut Ready, moved: &mut bool) -> io::Result<()> {
        while dr.write {
            let from_first = !self.first.is_empty();
            let waiting = self.buf.as_ref().and_then(|b| b.get(self.start..self.end));
            let data = if from_first { self.first } else { waiting.unwrap_or_default() };
            if data.is_empty() {
                break;
            }
            let len = data.len();
            match dst.write_from(data) {
                Ok(0) => return Err(ErrorKind::WriteZero.into()),
                Ok(n) => {
                    let n = n.min(len);
                    if from_first {
                        self.first = self.first.get(n..).unwrap_or_default();
                    } else {
                        self.start += n;
                    }
                    self.moved = self.moved.saturating_add(n as u64);
                    *moved = true;
                    // A short write filled the send buffer; wait for the edge.
                    if n < len && !dr.write_closed {
                        dr.write = false;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => dr.write = false,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

    use super::*;
    use std::net::TcpListener;
    use std::sync::{mpsc, Arc};
    use std::thread;

    /// Bound on any blocking endpoint call, so a broken relay fails a test
    /// instead of hanging it.
    const IO_LIMIT: Duration = Duration::from_secs(10);
    /// Bound on a whole relay run in a test.
    const RUN_LIMIT: Duration = Duration::from_secs(30);
    /// Idle limit for relays that should end by EOF: ends a stuck one.
    const TEST_IDLE: Duration = Duration::from_secs(5);

    /// (relay side, endpoint side) of a loopback connection.
    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (relay_side, _) = listener.accept().unwrap();
        endpoint.set_read_timeout(Some(IO_LIMIT)).unwrap();
        endpoint.set_write_timeout(Some(IO_LIMIT)).unwrap();
        (relay_side, endpoint)
    }

    struct Running {
        done: mpsc::Receiver<io::Result<(End, Stats)>>,
        stop: Arc<AtomicBool>,
    }

    impl Running {
        fn wait(self) -> io::Result<(End, Stats)> {
            match self.done.recv_timeout(RUN_LIMIT) {
                Ok(r) => r,
                Err(_) => {
                    self.stop.store(true, Ordering::Relaxed);
                    panic!("relay did not end within {RUN_LIMIT:?}");
                }
            }
        }
    }

    /// Starts a relay in its own thread; returns it with the client-side and
    /// server-side endpoints.
    fn spawn_relay(
        client: TcpStream,
        server: TcpStream,
        to_server_first: Vec<u8>,
        to_client_first: Vec<u8>,
        opts: Options,
    ) -> Running {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let (tx, done) = mpsc::channel();
        thread::spawn(move || {
            let r = relay(client, server, &to_server_first, &to_client_first, opts, &flag);
            let _ = tx.send(r);
        });
        Running { done, stop }
    }

    /// [`spawn_relay`] passing a half-close on at once.
    fn start_with(
        client: TcpStream,
        server: TcpStream,
        to_server_first: Vec<u8>,
        to_client_first: Vec<u8>,
        idle: Duration,
    ) -> Running {
        let opts = Options { idle, half_close_wait: Duration::ZERO };
        spawn_relay(client, server, to_server_first, to_client_first, opts)
    }

    /// A relay that passes a half-close on at once.
    fn start(idle: Duration) -> (Running, TcpStream, TcpStream) {
        start_holding(idle, Duration::ZERO)
    }

    /// A relay that holds the client's FIN for `wait` of server silence.
    fn start_holding(idle: Duration, wait: Duration) -> (Running, TcpStream, TcpStream) {
        let (client, client_ep) = pair();
        let (server, server_ep) = pair();
        let opts = Options { idle, half_close_wait: wait };
        let run = spawn_relay(client, server, Vec::new(), Vec::new(), opts);
        (run, client_ep, server_ep)
    }

    /// xorshift64*: reproducible test data and chunk sizes without a crate.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn bytes(&mut self, n: usize) -> Vec<u8> {
            (0..n).map(|_| self.next() as u8).collect()
        }
    }

    fn write_chunked(mut s: &TcpStream, data: &[u8], seed: u64, max_chunk: usize) {
        let mut rng = Rng(seed);
        let mut rest = data;
        while !rest.is_empty() {
            let k = (1 + rng.below(max_chunk)).min(rest.len());
            s.write_all(&rest[..k]).unwrap();
            rest = &rest[k..];
        }
    }

    fn read_chunked(mut s: &TcpStream, seed: u64, max_chunk: usize) -> Vec<u8> {
        let mut rng = Rng(seed);
        let mut out = Vec::new();
        let mut buf = vec![0; max_chunk];
        loop {
            let k = 1 + rng.below(max_chunk);
            match s.read(&mut buf[..k]) {
                Ok(0) => return out,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => panic!("endpoint read failed: {e}"),
            }
        }
    }

    /// Sends `data` then half-closes, while reading everything the other side
    /// sends until EOF; returns what was read.
    fn converse(s: TcpStream, data: Vec<u8>, seed: u64, max_chunk: usize) -> Vec<u8> {
        let writer = s.try_clone().unwrap();
        let w = thread::spawn(move || {
            write_chunked(&writer, &data, seed, max_chunk);
            writer.shutdown(Shutdown::Write).unwrap();
        });
        let got = read_chunked(&s, seed ^ 0xffff, max_chunk);
        w.join().unwrap();
        got
    }

    #[test]
    fn relay_bulk_both_directions_byte_exact() {
        const SIZE: usize = 6 * 1024 * 1024 + 12_345;
        let up = Rng(1).bytes(SIZE);
        let down = Rng(2).bytes(SIZE - 777);
        let (run, client_ep, server_ep) = start(TEST_IDLE);
        let (u, d) = (up.clone(), down.clone());
        let c = thread::spawn(move || converse(client_ep, u, 3, 70_000));
        let s = thread::spawn(move || converse(server_ep, d, 4, 70_000));
        let at_client = c.join().unwrap();
        let at_server = s.join().unwrap();
        assert!(at_server == up, "client→server bytes differ");
        assert!(at_client == down, "server→client bytes differ");
        let (end, stats) = run.wait().unwrap();
        assert_eq!(end, End::Done);
        assert_eq!(stats.to_server, up.len() as u64);
        assert_eq!(stats.to_client, down.len() as u64);
    }

    /// A Unix-domain client: the same relay, bytes exact both ways, and its
    /// half-close passed on while the answer still comes back.
    #[test]
    fn relay_unix_client_byte_exact_with_half_close() {
        const SIZE: usize = 2 * 1024 * 1024 + 321;
        let up = Rng(21).bytes(SIZE);
        let down = Rng(22).bytes(SIZE + 999);
        let (client, mut client_ep) = UnixStream::pair().unwrap();
        client_ep.set_read_timeout(Some(IO_LIMIT)).unwrap();
        let (server, server_ep) = pair();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let (tx, done) = mpsc::channel();
        thread::spawn(move || {
            let _ = tx.send(relay(client, server, b"first", &[], Options::default(), &flag));
        });
        let u = up.clone();
        let mut writer = client_ep.try_clone().unwrap();
        let w = thread::spawn(move || {
            writer.write_all(&u).unwrap();
            writer.shutdown(Shutdown::Write).unwrap();
        });
        let d = down.clone();
        let s = thread::spawn(move || {
            // The server reads the client's whole stream to EOF, then answers.
            let got = read_chunked(&server_ep, 23, 60_000);
            write_chunked(&server_ep, &d, 24, 60_000);
            server_ep.shutdown(Shutdown::Write).unwrap();
            got
        });
        let mut at_client = Vec::new();
        client_ep.read_to_end(&mut at_client).unwrap();
        w.join().unwrap();
        let at_server = s.join().unwrap();
        assert!(at_server.starts_with(b"first") && at_server[5..] == up[..], "client→server bytes differ");
        assert!(at_client == down, "server→client bytes differ");
        let (end, stats) = done.recv_timeout(RUN_LIMIT).unwrap().unwrap();
        assert_eq!(end, End::Done);
        assert_eq!(stats.to_server, up.len() as u64 + 5);
        assert_eq!(stats.to_client, down.len() as u64);
    }

    #[test]
    fn relay_initial_buffers_first_and_in_order() {
        let first_up = Rng(5).bytes(BUF_SIZE * 2 + 1234);
        let first_down = b"\x05\x00early".to_vec();
        let (client, client_ep) = pair();
        let (server, server_ep) = pair();
        // Bytes already waiting on both sockets when the relay starts must
        // still come after the read-ahead.
        (&client_ep).write_all(b"after").unwrap();
        (&server_ep).write_all(b"reply").unwrap();
        client_ep.shutdown(Shutdown::Write).unwrap();
        server_ep.shutdown(Shutdown::Write).unwrap();
        let run = start_with(client, server, first_up.clone(), first_down.clone(), TEST_IDLE);
        let at_server = read_chunked(&server_ep, 6, 5000);
        let at_client = read_chunked(&client_ep, 7, 5000);
        let mut want_server = first_up.clone();
        want_server.extend_from_slice(b"after");
        let mut want_client = first_down.clone();
        want_client.extend_from_slice(b"reply");
        assert!(at_server == want_server, "server got wrong bytes");
        assert_eq!(at_client, want_client);
        let (end, stats) = run.wait().unwrap();
        assert_eq!(end, End::Done);
        assert_eq!(stats.to_server, want_server.len() as u64);
        assert_eq!(stats.to_client, want_client.len() as u64);
    }

    /// `closer` sends a little and half-closes; `answerer` reads to EOF, then
    /// sends a lot; `closer` must receive all of it.
    fn half_close(closer: TcpStream, answerer: TcpStream) {
        const REQUEST: usize = 100_000;
        const ANSWER: usize = 3 * 1024 * 1024;
        let request = Rng(8).bytes(REQUEST);
        let answer = Rng(9).bytes(ANSWER);
        let (r, a) = (request.clone(), answer.clone());
        let c = thread::spawn(move || {
            write_chunked(&closer, &r, 10, 9000);
            closer.shutdown(Shutdown::Write).unwrap();
            read_chunked(&closer, 11, 9000)
        });
        let s = thread::spawn(move || {
            let got = read_chunked(&answerer, 12, 9000);
            // The half-close came through; the reverse path must still work.
            write_chunked(&answerer, &a, 13, 9000);
            answerer.shutdown(Shutdown::Write).unwrap();
            got
        });
        let at_closer = c.join().unwrap();
        let at_answerer = s.join().unwrap();
        assert!(at_answerer == request, "request bytes differ");
        assert!(at_closer == answer, "answer bytes differ after half-close");
    }

    #[test]
    fn relay_half_close_client_to_server() {
        let (run, client_ep, server_ep) = start(TEST_IDLE);
        half_close(client_ep, server_ep);
        let (end, stats) = run.wait().unwrap();
        assert_eq!(end, End::Done);
        assert_eq!(stats.to_server, 100_000);
        assert_eq!(stats.to_client, 3 * 1024 * 1024);
        assert!(!stats.server_first, "the client's FIN went first");
    }

    #[test]
    fn relay_half_close_server_to_client() {
        let (run, client_ep, server_ep) = start(TEST_IDLE);
        half_close(server_ep, client_ep);
        let (end, stats) = run.wait().unwrap();
        assert_eq!(end, End::Done);
        assert_eq!(stats.to_client, 100_000);
        assert_eq!(stats.to_server, 3 * 1024 * 1024);
        assert!(stats.server_first, "the server's FIN went first");
    }

    /// The hold of the half-close tests: long enough to measure on a busy
    /// machine, short enough to keep them quick, and not a multiple of
    /// [`STOP_CHECK`], so that a release that waited for the next periodic
    /// wake instead of its own deadline would come late by 150 ms.
    const HOLD: Duration = Duration::from_millis(600);
    /// How much later than due a released FIN may reach the server endpoint
    /// (thread wake-ups on a loaded two-core machine; a few ms measured).
    const HOLD_SLACK: Duration = Duration::from_millis(120);

    /// Reads `s` to EOF in a thread; the bytes and when the EOF came.
    fn eof_watch(s: &TcpStream) -> thread::JoinHandle<(Vec<u8>, Instant)> {
        let r = s.try_clone().unwrap();
        thread::spawn(move || {
            let got = read_chunked(&r, 40, 4096);
            (got, Instant::now())
        })
    }

    #[test]
    fn relay_hold_keeps_fin_while_server_sends() {
        let (run, client_ep, server_ep) = start_holding(TEST_IDLE, HOLD);
        (&client_ep).write_all(b"request").unwrap();
        client_ep.shutdown(Shutdown::Write).unwrap();
        let mut req = [0u8; 7];
        (&server_ep).read_exact(&mut req).unwrap();
        assert_eq!(&req, b"request");
        let watch = eof_watch(&server_ep);
        // Eight chunks, half a hold apart: four holds in all, and the FIN
        // must wait for the silence after the last one.
        let mut before_last = Instant::now();
        for i in 0..8u8 {
            thread::sleep(HOLD / 2);
            before_last = Instant::now();
            (&server_ep).write_all(&[i; 1000]).unwrap();
        }
        let (rest, eof_at) = watch.join().unwrap();
        assert!(rest.is_empty());
        let after = eof_at.duration_since(before_last);
        eprintln!("hold {HOLD:?}: FIN passed {after:?} after the last of 8 answers");
        assert!(after >= HOLD, "FIN passed {after:?} after the last answer");
        assert!(after < HOLD + HOLD_SLACK, "FIN passed only {after:?} after the last answer");
        server_ep.shutdown(Shutdown::Write).unwrap();
        let got = read_chunked(&client_ep, 41, 4096);
        let want: Vec<u8> = (0..8u8).flat_map(|i| [i; 1000]).collect();
        assert_eq!(got, want);
        let (end, stats) = run.wait().unwrap();
        assert_eq!(end, End::Done);
        assert_eq!(stats, Stats { to_server: 7, to_client: 8000, server_first: false });
    }

    #[test]
    fn relay_hold_released_after_server_silence() {
        let (run, client_ep, server_ep) = start_holding(TEST_IDLE, HOLD);
        (&client_ep).write_all(b"ask").unwrap();
        let t = Instant::now();
        client_ep.shutdown(Shutdown::Write).unwrap();
        let got = read_chunked(&server_ep, 42, 100);
        let took = t.elapsed();
        eprintln!("hold {HOLD:?}: FIN passed {took:?} after the half-close");
        assert_eq!(got, b"ask", "bytes before the FIN come first");
        assert!(took >= HOLD, "FIN passed after {took:?}");
        assert!(took < HOLD + HOLD_SLACK, "FIN passed only after {took:?}");
        // As after any half-close, the server may still answer.
        (&server_ep).write_all(b"late answer").unwrap();
        server_ep.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_chunked(&client_ep, 43, 100), b"late answer");
        let (end, stats) = run.wait().unwrap();
        assert_eq!(end, End::Done);
        assert_eq!(stats, Stats { to_server: 3, to_client: 11, server_first: false });
    }

    #[test]
    fn relay_hold_released_when_server_closes() {
        const LONG: Duration = Duration::from_secs(20);
        // The server closes after the client's FIN came...
        let (run, client_ep, server_ep) = start_holding(TEST_IDLE, LONG);
        (&client_ep).write_all(b"ask").unwrap();
        client_ep.shutdown(Shutdown::Write).unwrap();
        let mut req = [0u8; 3];
        (&server_ep).read_exact(&mut req).unwrap();
        let t = Instant::now();
        (&server_ep).write_all(b"answer").unwrap();
        server_ep.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_chunked(&server_ep, 44, 100), b"");
        let took = t.elapsed();
        assert!(took < Duration::from_secs(1), "FIN held {took:?} after the server closed");
        assert_eq!(read_chunked(&client_ep, 45, 100), b"answer");
        // A held FIN is not passed on yet: the server's close came first.
        let (end, stats) = run.wait().unwrap();
        assert_eq!(end, End::Done);
        assert!(stats.server_first);

        // ...and before it.
        let (run, client_ep, server_ep) = start_holding(TEST_IDLE, LONG);
        server_ep.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_chunked(&client_ep, 46, 100), b"");
        let t = Instant::now();
        client_ep.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_chunked(&server_ep, 47, 100), b"");
        let took = t.elapsed();
        assert!(took < Duration::from_secs(1), "FIN held {took:?} though the server had closed");
        let (end, stats) = run.wait().unwrap();
        assert_eq!(end, End::Done);
        assert!(stats.server_first);
    }

    #[test]
    fn relay_hold_waits_for_a_slow_client() {
        // More than every socket buffer on the way holds: the relay's own
        // buffer stays full while the client does not read.
        const SIZE: usize = 32 * 1024 * 1024;
        let (run, client_ep, server_ep) = start_holding(TEST_IDLE, HOLD);
        client_ep.shutdown(Shutdown::Write).unwrap();
        let watch = eof_watch(&server_ep);
        let w = server_ep.try_clone().unwrap();
        let writer = thread::spawn(move || (&w).write_all(&vec![0x5a; SIZE]).unwrap());
        let t = Instant::now();
        thread::sleep(HOLD * 3);
        assert!(!watch.is_finished(), "FIN passed while the answer still waited for the client");
        let mut buf = vec![0u8; 1 << 16];
        let mut n = 0;
        while n < SIZE {
            n += (&client_ep).read(&mut buf).unwrap();
        }
        let drained = Instant::now();
        writer.join().unwrap();
        let (_, eof_at) = watch.join().unwrap();
        assert!(eof_at.duration_since(t) >= HOLD * 3);
        let after = eof_at.saturating_duration_since(drained);
        assert!(after < HOLD + HOLD_SLACK, "FIN passed {after:?} after the client caught up");
        server_ep.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_chunked(&client_ep, 48, 100), b"");
        let (end, stats) = run.wait().unwrap();
        assert_eq!(end, End::Done);
        assert_eq!(stats.to_client, SIZE as u64);
    }

    #[test]
    fn relay_hold_delays_eof_for_a_server_that_waits_for_it() {
        // Such a server gets its EOF one hold late, then answers as usual.
        let (run, client_ep, server_ep) = start_holding(TEST_IDLE, HOLD);
        let t = Instant::now();
        half_close(client_ep, server_ep);
        assert!(t.elapsed() >= HOLD);
        let (end, stats) = run.wait().unwrap();
        assert_eq!(end, End::Done);
        assert_eq!(stats.to_client, 3 * 1024 * 1024);
    }

    #[test]
    fn relay_idle_limit_bounds_the_hold() {
        let (run, client_ep, _server_ep) = start_holding(Duration::from_millis(300), Duration::from_secs(20));
        let t = Instant::now();
        client_ep.shutdown(Shutdown::Write).unwrap();
        let (end, _) = run.wait().unwrap();
        assert_eq!(end, End::Idle);
        assert!(t.elapsed() < Duration::from_secs(2), "idle limit came after {:?}", t.elapsed());
    }

    #[test]
    fn relay_server_reset_ends_a_held_half_close() {
        let (run, client_ep, server_ep) = start_holding(Duration::ZERO, Duration::from_secs(20));
        (&client_ep).write_all(b"never read").unwrap();
        client_ep.shutdown(Shutdown::Write).unwrap();
        thread::sleep(Duration::from_millis(100));
        let t = Instant::now();
        drop(server_ep); // unread data → RST
        let (end, _) = run.wait().unwrap();
        assert_eq!(end, End::Done);
        assert!(t.elapsed() < Duration::from_secs(2), "took {:?}", t.elapsed());
        assert_eq!(read_until_gone(&client_ep), b"");
    }

    /// A relay listing its hold in `holds` (each test its own: the other
    /// tests' holds are not its business) whose client has sent one byte
    /// and half-closed, once the FIN is held; with its endpoints.
    fn held_in(holds: &'static Holds) -> (Running, TcpStream, TcpStream) {
        let (client, client_ep) = pair();
        let (server, server_ep) = pair();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, done) = mpsc::channel();
        let flag = Arc::clone(&stop);
        thread::spawn(move || {
            let opts = Options { idle: TEST_IDLE * 4, half_close_wait: Duration::from_secs(60) };
            let shared = Shared { lender: &BUFFERS, holds };
            let _ = tx.send(relay_with(client, server, b"", b"", opts, &flag, shared));
        });
        (&client_ep).write_all(b"q").unwrap();
        client_ep.shutdown(Shutdown::Write).unwrap();
        let mut byte = [0u8; 1];
        (&server_ep).read_exact(&mut byte).unwrap();
        assert_eq!(&byte, b"q");
        let t = Instant::now();
        while holds.is_empty() {
            assert!(t.elapsed() < IO_LIMIT, "the FIN was never held");
            thread::sleep(Duration::from_millis(2));
        }
        (Running { done, stop }, client_ep, server_ep)
    }

    #[test]
    fn relay_held_wakes_for_the_stop_through_end_all() {
        static MINE: Holds = Holds::new();
        let (run, _client_ep, _server_ep) = held_in(&MINE);
        // Asleep until the 60 s deadline, so well past STOP_CHECK.
        thread::sleep(STOP_CHECK * 2);
        assert!(run.done.try_recv().is_err(), "the relay ended");
        let t = Instant::now();
        run.stop.store(true, Ordering::SeqCst);
        MINE.end_all();
        let (end, _) = run.wait().unwrap();
        // Its SAM socket shut both ways, it may also end by its own EOF.
        assert!(matches!(end, End::Stopped | End::Done), "{end:?}");
        assert!(t.elapsed() < Duration::from_millis(500), "stopped after {:?}", t.elapsed());
    }

    #[test]
    fn relay_released_hold_passes_the_fin_and_ends_when_the_server_does() {
        static MINE: Holds = Holds::new();
        let (run, client_ep, server_ep) = held_in(&MINE);
        let t = Instant::now();
        assert!(MINE.release_oldest());
        // The FIN arrives now, not after the 60 s wait; the answer to it
        // still reaches the client.
        assert_eq!(read_until_gone(&server_ep), b"");
        assert!(t.elapsed() < Duration::from_secs(1), "FIN after {:?}", t.elapsed());
        (&server_ep).write_all(b"a").unwrap();
        server_ep.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_until_gone(&client_ep), b"a");
        let (end, stats) = run.wait().unwrap();
        assert_eq!(end, End::Done);
        assert_eq!(stats, Stats { to_server: 1, to_client: 1, server_first: false });
        assert!(t.elapsed() < Duration::from_secs(2), "relay ended after {:?}", t.elapsed());
        assert!(MINE.is_empty());
        assert!(!MINE.release_oldest(), "an ended relay still listed its hold");
    }

    #[test]
    fn relay_backpressure_resumes_after_full_buffers() {
        const SIZE: usize = 8 * 1024 * 1024;
        let data = Rng(14).bytes(SIZE);
        let (run, client_ep, server_ep) = start(TEST_IDLE);
        let d = data.clone();
        let c = thread::spawn(move || {
            write_chunked(&client_ep, &d, 15, 1 << 16);
            client_ep.shutdown(Shutdown::Write).unwrap();
            client_ep
        });
        // Let every buffer on the way fill up and the relay stop reading.
        thread::sleep(Duration::from_millis(400));
        let got = read_chunked(&server_ep, 16, 3000);
        assert!(got == data, "bytes differ after back-pressure");
        drop(server_ep);
        drop(c.join().unwrap());
        let (end, stats) = run.wait().unwrap();
        assert_eq!(end, End::Done);
        assert_eq!(stats.to_server, SIZE as u64);
    }

    #[test]
    fn quiet_i2p_side_is_reported_only_after_it_delivered_and_went_silent() {
        let waiting = true;
        assert!(gone_quiet(QUIET_NOTICE, 1, waiting));
        assert!(gone_quiet(QUIET_NOTICE * 2, 10 << 20, waiting));
        // Not yet quiet long enough.
        assert!(!gone_quiet(QUIET_NOTICE - Duration::from_millis(1), 10 << 20, waiting));
        // Nothing came from the I2P side: a client that has not asked yet.
        assert!(!gone_quiet(QUIET_NOTICE * 2, 0, waiting));
        // Closed, or bytes still on their way to the client: not the router's silence.
        assert!(!gone_quiet(QUIET_NOTICE * 2, 10 << 20, !waiting));
    }

    #[test]
    fn relay_idle_timeout() {
        let (run, _client_ep, _server_ep) = start(Duration::from_millis(300));
        let t = Instant::now();
        let (end, _) = run.wait().unwrap();
        let took = t.elapsed();
        assert_eq!(end, End::Idle);
        assert!(took >= Duration::from_millis(290), "idle too early: {took:?}");
        assert!(took < Duration::from_secs(2), "idle too late: {took:?}");
    }

    #[test]
    fn relay_idle_timer_restarts_on_traffic() {
        let (run, client_ep, mut server_ep) = start(Duration::from_millis(300));
        let t = Instant::now();
        let mut byte = [0u8; 1];
        for _ in 0..6 {
            thread::sleep(Duration::from_millis(150));
            (&client_ep).write_all(b"x").unwrap();
            server_ep.read_exact(&mut byte).unwrap();
        }
        let (end, stats) = run.wait().unwrap();
        assert_eq!(end, End::Idle);
        assert!(t.elapsed() >= Duration::from_millis(1150));
        assert_eq!(stats.to_server, 6);
    }

    #[test]
    fn relay_stop_flag_while_data_flows() {
        let (run, client_ep, server_ep) = start(Duration::ZERO);
        let spin = |s: TcpStream| {
            thread::spawn(move || {
                let w = s.try_clone().unwrap();
                let wt = thread::spawn(move || {
                    let chunk = vec![7u8; 1 << 16];
                    while (&w).write_all(&chunk).is_ok() {}
                });
                let mut buf = vec![0u8; 1 << 16];
                while matches!((&s).read(&mut buf), Ok(n) if n > 0) {}
                drop(s);
                wt.join().unwrap();
            })
        };
        let c = spin(client_ep);
        let s = spin(server_ep);
        thread::sleep(Duration::from_millis(300));
        let t = Instant::now();
        run.stop.store(true, Ordering::Relaxed);
        let (end, stats) = run.wait().unwrap();
        assert_eq!(end, End::Stopped);
        assert!(t.elapsed() < Duration::from_secs(1), "took {:?}", t.elapsed());
        assert!(stats.to_server > 0 && stats.to_client > 0);
        c.join().unwrap();
        s.join().unwrap();
    }

    #[test]
    fn relay_stop_flag() {
        let (run, _client_ep, _server_ep) = start(Duration::ZERO);
        thread::sleep(Duration::from_millis(100));
        let t = Instant::now();
        run.stop.store(true, Ordering::Relaxed);
        let (end, _) = run.wait().unwrap();
        assert_eq!(end, End::Stopped);
        assert!(t.elapsed() < STOP_CHECK + Duration::from_millis(500));
    }

    /// Closing a socket with unread received bytes makes the kernel send RST.
    fn reset(s: TcpStream, mut unread_from: &TcpStream) {
        (&mut unread_from).write_all(b"unread").unwrap();
        thread::sleep(Duration::from_millis(100));
        drop(s);
    }

    /// Reads until EOF or reset; a timeout would mean the relay hung.
    fn read_until_gone(s: &TcpStream) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match (&*s).read(&mut buf) {
                Ok(0) => return out,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return out,
                Err(e) => panic!("endpoint read: {e}"),
            }
        }
    }

    #[test]
    fn relay_server_reset_ends_relay_and_delivers_what_came_before() {
        let (run, client_ep, server_ep) = start(Duration::ZERO);
        (&server_ep).write_all(b"last words").unwrap();
        thread::sleep(Duration::from_millis(50));
        reset(server_ep, &client_ep);
        let got = read_until_gone(&client_ep);
        assert_eq!(got, b"last words");
        let (end, stats) = run.wait().unwrap();
        assert_eq!(end, End::Done);
        assert_eq!(stats.to_client, 10);
        assert!(stats.server_first, "a reset from the server is its end");
    }

    #[test]
    fn relay_client_reset_ends_relay() {
        let (run, client_ep, server_ep) = start(Duration::ZERO);
        (&client_ep).write_all(b"hello").unwrap();
        reset(client_ep, &server_ep);
        let got = read_until_gone(&server_ep);
        assert_eq!(got, b"hello");
        let (end, stats) = run.wait().unwrap();
        assert_eq!(end, End::Done);
        assert!(!stats.server_first, "the client's reset ended the stream");
    }

    #[test]
    fn relay_client_reset_after_half_close_is_noticed() {
        // Nothing left to read from or write to the client when it resets:
        // only the error event tells, and the relay must not wait for the
        // server (or the idle limit, here none) to end.
        let (run, client_ep, server_ep) = start(Duration::ZERO);
        (&client_ep).write_all(b"x").unwrap();
        client_ep.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_chunked(&server_ep, 21, 10), b"x");
        let t = Instant::now();
        reset(client_ep, &server_ep);
        let (end, _) = run.wait().unwrap();
        assert_eq!(end, End::Done);
        assert!(t.elapsed() < Duration::from_secs(2), "took {:?}", t.elapsed());
        assert_eq!(read_until_gone(&server_ep), b"");
    }

    #[test]
    fn relay_reset_while_writing_ends_relay() {
        // The server goes away while the client is still pushing data: the
        // relay's write fails and it must end without waiting for the client.
        let (run, client_ep, server_ep) = start(Duration::ZERO);
        let c = thread::spawn(move || {
            let chunk = [0x55u8; 8192];
            // Ends with an error once the relay has closed the client side.
            while (&client_ep).write_all(&chunk).is_ok() {}
        });
        let mut buf = [0u8; 1000];
        (&server_ep).read_exact(&mut buf).unwrap();
        drop(server_ep); // unread data → RST
        let (end, _) = run.wait().unwrap();
        assert_eq!(end, End::Done);
        c.join().unwrap();
    }

    #[test]
    fn relay_one_byte_writes() {
        const N: usize = 3000;
        let up = Rng(17).bytes(N);
        let down = Rng(18).bytes(N);
        let (run, client_ep, server_ep) = start(TEST_IDLE);
        client_ep.set_nodelay(true).unwrap();
        server_ep.set_nodelay(true).unwrap();
        let (u, d) = (up.clone(), down.clone());
        let c = thread::spawn(move || converse(client_ep, u, 19, 1));
        let s = thread::spawn(move || converse(server_ep, d, 20, 1));
        assert_eq!(s.join().unwrap(), up);
        assert_eq!(c.join().unwrap(), down);
        let (end, stats) = run.wait().unwrap();
        assert_eq!(end, End::Done);
        assert_eq!(stats.to_server, N as u64);
        assert_eq!(stats.to_client, N as u64);
    }

    /// Waits up to [`IO_LIMIT`] for `lender` to have `n` buffers out.
    fn wait_lent(lender: &Lender, n: usize) -> bool {
        let t = Instant::now();
        while t.elapsed() < IO_LIMIT {
            if lender.lent() == n {
                return true;
            }
            thread::sleep(Duration::from_millis(2));
        }
        false
    }

    /// A relay borrowing from its own lender (keeping `keep` of each size),
    /// with the client-side and server-side endpoints.
    fn start_lending(keep: usize, idle: Duration) -> (Running, Arc<Lender>, TcpStream, TcpStream) {
        let lender = Arc::new(Lender::new(BUF_SIZE, BUF_MAX, keep, keep));
        let (client, client_ep) = pair();
        let (server, server_ep) = pair();
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, done) = mpsc::channel();
        let (l, flag) = (Arc::clone(&lender), Arc::clone(&stop));
        thread::spawn(move || {
            let opts = Options { idle, half_close_wait: Duration::ZERO };
            let shared = Shared { lender: &l, holds: &HOLDS };
            let _ = tx.send(relay_with(client, server, b"", b"", opts, &flag, shared));
        });
        (Running { done, stop }, lender, client_ep, server_ep)
    }

    #[test]
    fn relay_borrows_buffers_only_while_bytes_move() {
        let (run, lender, client_ep, server_ep) = start_lending(1, TEST_IDLE * 4);
        // A one-byte exchange each way, then quiet: the held connection
        // keeps no buffer.
        let mut byte = [0u8; 1];
        (&client_ep).write_all(b"q").unwrap();
        (&server_ep).read_exact(&mut byte).unwrap();
        (&server_ep).write_all(b"a").unwrap();
        (&client_ep).read_exact(&mut byte).unwrap();
        assert!(wait_lent(&lender, 0), "an idle relay still holds {} buffer(s)", lender.lent());
        assert!(run.done.try_recv().is_err(), "the relay ended");

        // A client that does not read: the answer waits in the relay's
        // buffer, which stays borrowed until it is written.
        let answer = Rng(30).bytes(32 * 1024 * 1024);
        let a = answer.clone();
        let w = server_ep.try_clone().unwrap();
        let writer = thread::spawn(move || (&w).write_all(&a).unwrap());
        thread::sleep(Duration::from_millis(300));
        assert_eq!(lender.lent(), 1, "the waiting answer's buffer");
        let mut got = vec![0u8; answer.len()];
        (&client_ep).read_exact(&mut got).unwrap();
        writer.join().unwrap();
        assert!(got == answer, "answer bytes differ");
        assert!(wait_lent(&lender, 0), "a drained relay still holds {} buffer(s)", lender.lent());
        // The bulk answer grew its direction's buffer; the small one and the
        // large one were each given back and kept (one of each at most).
        assert_eq!(lender.kept(), (1, 1));

        drop(client_ep);
        drop(server_ep);
        let (end, stats) = run.wait().unwrap();
        assert_eq!(end, End::Done);
        assert_eq!((stats.to_server, stats.to_client), (1, 1 + answer.len() as u64));
        assert_eq!(lender.lent(), 0);
    }

    #[test]
    fn relay_that_ends_gives_its_buffers_back() {
        // Ended with bytes still buffered towards a client that never read.
        let (run, lender, client_ep, server_ep) = start_lending(4, Duration::from_millis(500));
        let w = server_ep.try_clone().unwrap();
        let writer = thread::spawn(move || {
            let chunk = [0x33u8; 1 << 16];
            // Ends with an error once the relay has given up.
            while (&w).write_all(&chunk).is_ok() {}
        });
        let (end, _) = run.wait().unwrap();
        assert_eq!(end, End::Idle);
        assert_eq!(lender.lent(), 0);
        drop(client_ep);
        drop(server_ep);
        writer.join().unwrap();
    }

    /// Throughput one way and both ways, against plain loopback.
    /// `cargo test --release relay_throughput -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn relay_throughput() {
        const SIZE: usize = 1024 * 1024 * 1024;
        const CHUNK: usize = 1 << 16;
        fn pump_out(s: TcpStream, size: usize) {
            let chunk = vec![0xa5u8; CHUNK];
            let mut left = size;
            while left > 0 {
                let k = left.min(CHUNK);
                (&s).write_all(&chunk[..k]).unwrap();
                left -= k;
            }
            s.shutdown(Shutdown::Write).unwrap();
        }
        fn drain(s: &TcpStream) -> usize {
            let mut buf = vec![0u8; CHUNK];
            let mut n = 0;
            loop {
                match (&*s).read(&mut buf) {
                    Ok(0) => return n,
                    Ok(k) => n += k,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        let mib = |bytes: usize, t: Duration| bytes as f64 / t.as_secs_f64() / (1024.0 * 1024.0);

        let (a, b) = pair();
        let t = Instant::now();
        let w = thread::spawn(move || pump_out(b, SIZE));
        let n = drain(&a);
        w.join().unwrap();
        println!("direct loopback: {:.0} MiB/s", mib(n, t.elapsed()));

        let (run, client_ep, server_ep) = start(Duration::ZERO);
        let t = Instant::now();
        let w = thread::spawn(move || {
            pump_out(client_ep.try_clone().unwrap(), SIZE);
            drain(&client_ep)
        });
        let n = drain(&server_ep);
        server_ep.shutdown(Shutdown::Write).unwrap();
        w.join().unwrap();
        println!("relay one way: {:.0} MiB/s", mib(n, t.elapsed()));
        run.wait().unwrap();

        let (run, client_ep, server_ep) = start(Duration::ZERO);
        let t = Instant::now();
        let c = thread::spawn(move || {
            let w = client_ep.try_clone().unwrap();
            let wt = thread::spawn(move || pump_out(w, SIZE / 2));
            let n = drain(&client_ep);
            wt.join().unwrap();
            n
        });
        let w = server_ep.try_clone().unwrap();
        let wt = thread::spawn(move || pump_out(w, SIZE / 2));
        let n = drain(&server_ep) + c.join().unwrap();
        wt.join().unwrap();
        println!("relay both ways: {:.0} MiB/s total", mib(n, t.elapsed()));
        run.wait().unwrap();
    }
}
