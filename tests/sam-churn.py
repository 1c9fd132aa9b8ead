#!/usr/bin/env python3
"""Session churn against an i2pd SAM bridge, to reproduce its SAM-thread crash.

A bare SAM v3 client (Python 3 standard library only; no i2psocks). Several worker threads
each repeat: create a transient STREAM session, open streams on it to a target that writes
an HTTP response and closes, then close the session's control socket. A monitor thread
says HELLO to the bridge every second; when the bridge stops answering, the router is
reported dead and the script exits 1.

The target is, by default, served by the script itself: a second STREAM session whose
STREAM FORWARD hands each incoming stream to a local listener that writes the response and
closes at once, so the far end always closes first (what the race needs). `--target` points
at an existing site instead (base64 destination, b32 or host name).

A stream that delivered its whole response but no end (EOF) within `--stall` seconds is
counted as a "lost end": on i2pd that stream's receive timer stays armed after the router
dropped the stream, and closing its session later frees what the timer still uses.

Exit status: 0 the router stayed up, 1 it died, 2 the setup failed (no bridge, no target).

  python3 tests/sam-churn.py --sam 127.0.0.1:7656 --workers 8 --duration 900
  python3 tests/sam-churn.py --streams 0 --workers 8 --duration 120   # session rate only
  python3 tests/sam-churn.py --hold-lost --duration 300   # no crash until the held sessions close
"""

import argparse
import base64
import hashlib
import secrets
import socket
import statistics
import sys
import threading
import time

HELLO = "HELLO VERSION MIN=3.1 MAX=3.3"
# The offline one-router network builds zero-hop tunnels only.
ZERO_HOPS = "inbound.length=0 outbound.length=0 inbound.quantity=1 outbound.quantity=1"
# i2pd 2.45 can only be connected to through a type-1 ElGamal LeaseSet.
SERVER_LS = "i2cp.leaseSetType=1 i2cp.leaseSetEncType=0"
# The connecting side: X25519 preferred, ElGamal so it can reach the server above.
CLIENT_LS = "i2cp.leaseSetEncType=4,0"
REPLY_TIMEOUT = 60.0
SESSION_TIMEOUT = 180.0
MAX_LINE = 16 << 10


class SamError(Exception):
    pass


def read_line(sock, timeout):
    """One reply line, a byte at a time: payload after it must stay in the socket."""
    sock.settimeout(timeout)
    line = bytearray()
    while True:
        b = sock.recv(1)
        if not b:
            raise SamError("bridge closed the socket after %r" % bytes(line[:80]))
        if b == b"\n":
            return line.decode("latin-1").rstrip("\r")
        if len(line) >= MAX_LINE:
            raise SamError("reply line too long")
        line += b


def command(sock, line, expect, timeout=REPLY_TIMEOUT):
    # One write per command: i2pd drops bytes after a command's newline.
    sock.sendall((line + "\n").encode())
    reply = read_line(sock, timeout)
    if expect not in reply:
        raise SamError("%s -> %s" % (line.split(" DESTINATION=")[0], reply))
    return reply


def param(reply, key):
    for word in reply.split():
        if word.startswith(key + "="):
            return word[len(key) + 1:]
    return None


def sam_connect(addr, timeout=REPLY_TIMEOUT):
    sock = socket.create_connection(addr, timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        command(sock, HELLO, "RESULT=OK", timeout)
    except BaseException:
        sock.close()
        raise
    return sock


def close_quietly(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def i2p_b64decode(s):
    return base64.b64decode(s.replace("-", "+").replace("~", "/"))


def i2p_b64encode(b):
    return base64.b64encode(b).decode().replace("+", "-").replace("/", "~")


def public_part(private_b64):
    """The public destination a private key blob starts with: 387 bytes + certificate."""
    blob = i2p_b64decode(private_b64)
    certlen = int.from_bytes(blob[385:387], "big")
    return blob[:387 + certlen]


def b32_of(public):
    digest = hashlib.sha256(public).digest()
    return base64.b32encode(digest).decode().lower().rstrip("=") + ".b32.i2p"


def new_id(prefix):
    return prefix + secrets.token_hex(8)


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.sessions_created = 0
        self.sessions_closed = 0
        self.session_failures = 0
        self.create_times = []
        self.streams = 0
        self.streams_ended = 0
        self.connect_failures = 0
        self.lost_ends = 0          # every byte, then no EOF
        self.lost_tails = 0         # part of the response, then neither data nor EOF
        self.lost_sessions = []     # per lost end: (its session's close, its last byte)
        self.held = []              # (control socket, lost ends) kept open by --hold-lost

    def add(self, **kw):
        with self.lock:
            for k, v in kw.items():
                setattr(self, k, getattr(self, k) + v)


class Server:
    """The target: a STREAM session forwarding to a local listener that answers and closes."""

    def __init__(self, sam, body_size):
        self.body = b"x" * body_size
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.id = new_id("srv")
        self.control = sam_connect(sam)
        reply = command(self.control,
                        "SESSION CREATE STYLE=STREAM ID=%s DESTINATION=TRANSIENT SIGNATURE_TYPE=7 %s %s"
                        % (self.id, ZERO_HOPS, SERVER_LS), "RESULT=OK", SESSION_TIMEOUT)
        self.public = public_part(param(reply, "DESTINATION"))
        self.forward = sam_connect(sam)
        command(self.forward, "STREAM FORWARD ID=%s PORT=%d HOST=127.0.0.1 SILENT=false"
                % (self.id, self.listener.getsockname()[1]), "RESULT=OK")
        threading.Thread(target=self.accept_loop, daemon=True).start()

    def accept_loop(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()

    def serve(self, conn):
        try:
            conn.settimeout(30)
            head = b""
            # The peer's destination line, then the request up to its blank line.
            while head.count(b"\n") < 1 or b"\r\n\r\n" not in head.split(b"\n", 1)[1]:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/octet-stream\r\n"
                         b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(self.body) + self.body)
        except OSError:
            pass
        finally:
            # Close right after the response: the far end ends the stream first.
            close_quietly(conn)


def response_complete(data):
    head, sep, body = data.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return False


def one_stream(args, sid, target, host, stats, lost):
    try:
        sock = sam_connect(args.sam)
    except (OSError, SamError):
        stats.add(connect_failures=1)
        return
    try:
        command(sock, "STREAM CONNECT ID=%s DESTINATION=%s SILENT=false" % (sid, target), "RESULT=OK")
        stats.add(streams=1)
        sock.sendall(b"GET / HTTP/1.0\r\nHost: %s\r\n\r\n" % host.encode())
        sock.settimeout(args.stall)
        data = b""
        last_data = time.monotonic()
        while True:
            try:
                chunk = sock.recv(65536)
            except socket.timeout:
                if response_complete(data):
                    stats.add(lost_ends=1)
                    lost.append(last_data)
                else:
                    stats.add(lost_tails=1)
                return
            if not chunk:
                stats.add(streams_ended=1)
                return
            data += chunk
            last_data = time.monotonic()
    except (OSError, SamError):
        stats.add(connect_failures=1)
    finally:
        close_quietly(sock)


def worker(args, target, host, stats, stop, t0):
    while not stop.is_set() and time.monotonic() - t0 < args.duration:
        sid = new_id("churn")
        lost = []
        try:
            control = sam_connect(args.sam)
        except (OSError, SamError):
            stats.add(session_failures=1)
            time.sleep(1)
            continue
        created = False
        try:
            started = time.monotonic()
            command(control, "SESSION CREATE STYLE=STREAM ID=%s DESTINATION=TRANSIENT SIGNATURE_TYPE=7 %s %s"
                    % (sid, ZERO_HOPS, CLIENT_LS), "RESULT=OK", SESSION_TIMEOUT)
            with stats.lock:
                stats.sessions_created += 1
                stats.create_times.append(time.monotonic() - started)
            created = True
            for first in range(0, args.streams, args.parallel):
                if stop.is_set():
                    break
                batch = [threading.Thread(target=one_stream, args=(args, sid, target, host, stats, lost))
                         for _ in range(min(args.parallel, args.streams - first))]
                for t in batch:
                    t.start()
                for t in batch:
                    t.join()
        except (OSError, SamError) as e:
            stats.add(session_failures=1)
            if args.verbose:
                print("session %s: %s" % (sid, e), flush=True)
        finally:
            if lost and args.hold_lost:
                # A lost stream's timer is harmless while its session's destination exists.
                with stats.lock:
                    stats.held.append((control, lost))
            else:
                # Closing the control socket is what makes i2pd destroy the session.
                close_quietly(control)
        if lost and args.hold_lost:
            print("[%7.1f s] session %s held open: %d stream(s) got every byte but no end"
                  % (time.monotonic() - t0, sid, len(lost)), flush=True)
            continue
        if created:
            stats.add(sessions_closed=1)
        if lost:
            now = time.monotonic()
            with stats.lock:
                stats.lost_sessions.extend((now, t) for t in lost)
            print("[%7.1f s] session %s closed with %d stream(s) that got every byte but no end"
                  % (now - t0, sid, len(lost)), flush=True)


def alive(sam):
    try:
        close_quietly(sam_connect(sam, timeout=5))
        return True
    except (OSError, SamError):
        return False


def monitor(args, stats, stop, t0, death):
    misses = 0
    first_miss = None
    last_report = t0
    while not stop.is_set():
        time.sleep(1)
        if alive(args.sam):
            misses = 0
        else:
            misses += 1
            first_miss = first_miss if misses > 1 else time.monotonic()
            # Two misses in a row: one can be a busy bridge.
            if misses == 2:
                death.append(first_miss)
                print("[%7.1f s] the SAM bridge stopped answering HELLO: router dead?"
                      % (death[0] - t0), flush=True)
                stop.set()
                return
        now = time.monotonic()
        if args.progress and now - last_report >= args.progress:
            last_report = now
            with stats.lock:
                print("[%7.1f s] sessions %d created/%d closed, streams %d (%d ended, %d lost ends, "
                      "%d lost tails, %d failed)" % (now - t0, stats.sessions_created, stats.sessions_closed,
                                                     stats.streams, stats.streams_ended, stats.lost_ends,
                                                     stats.lost_tails, stats.connect_failures), flush=True)


def hostport(text):
    host, _, port = text.rpartition(":")
    return (host or "127.0.0.1", int(port))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sam", type=hostport, default=("127.0.0.1", 7656), help="SAM bridge host:port")
    p.add_argument("--target", help="destination that answers HTTP with a Content-Length and closes "
                   "(base64, b32 or name); default: a site this script publishes itself")
    p.add_argument("--workers", type=int, default=8, help="threads churning sessions (default 8)")
    p.add_argument("--streams", type=int, default=30, help="streams per session (default 30; 0: sessions only)")
    p.add_argument("--parallel", type=int, default=6, help="streams open at once per session (default 6)")
    p.add_argument("--body", type=int, default=4096, help="response body size of the own site (default 4096)")
    p.add_argument("--stall", type=float, default=5.0, help="seconds without data before a stream counts as lost")
    p.add_argument("--duration", type=float, default=600.0, help="seconds of churn (default 600)")
    p.add_argument("--linger", type=float, default=60.0,
                   help="seconds to keep watching the router after the churn (default 60)")
    p.add_argument("--progress", type=float, default=30.0, help="seconds between progress lines (0: none)")
    p.add_argument("--hold-lost", action="store_true",
                   help="keep sessions with a lost end open until the churn is over, then close them")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()
    if args.parallel < 1:
        p.error("--parallel must be at least 1")

    try:
        hello = read_line_hello(args.sam)
    except (OSError, SamError) as e:
        print("no SAM bridge at %s:%d: %s" % (args.sam + (e,)), file=sys.stderr)
        return 2
    print("bridge %s:%d: %s" % (args.sam + (hello,)), flush=True)

    server = None
    if args.streams == 0:
        target, host = "", ""
    elif args.target:
        target = host = args.target
    else:
        t = time.monotonic()
        try:
            server = Server(args.sam, args.body)
        except (OSError, SamError) as e:
            print("could not publish the target site: %s" % e, file=sys.stderr)
            return 2
        target, host = i2p_b64encode(server.public), b32_of(server.public)
        print("target site %s up after %.1f s (body %d bytes)" % (host, time.monotonic() - t, args.body),
              flush=True)

    stats = Stats()
    stop = threading.Event()
    death = []
    t0 = time.monotonic()
    mon = threading.Thread(target=monitor, args=(args, stats, stop, t0, death), daemon=True)
    mon.start()
    workers = [threading.Thread(target=worker, args=(args, target, host, stats, stop, t0), daemon=True)
               for _ in range(args.workers)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    churn_end = time.monotonic()
    if stats.held and not stop.is_set():
        print("[%7.1f s] churn over; closing the %d held session(s)" % (churn_end - t0, len(stats.held)),
              flush=True)
        for control, lost in stats.held:
            close_quietly(control)
            stats.lost_sessions.extend((time.monotonic(), t) for t in lost)
            stats.add(sessions_closed=1)
    print("[%7.1f s] churn over; watching the router for %.0f s more" % (churn_end - t0, args.linger),
          flush=True)
    while not stop.is_set() and time.monotonic() - churn_end < args.linger:
        time.sleep(0.5)
    stop.set()
    mon.join()

    churn = churn_end - t0
    print("---- summary")
    print("churn time            %.1f s with %d workers, %d streams per session (%d at once)"
          % (churn, args.workers, args.streams, args.parallel))
    print("sessions              %d created, %d closed, %d failed"
          % (stats.sessions_created, stats.sessions_closed, stats.session_failures))
    if stats.create_times:
        ct = sorted(stats.create_times)
        print("SESSION CREATE time   median %.1f s, min %.1f s, max %.1f s"
              % (statistics.median(ct), ct[0], ct[-1]))
    print("session rate          %.3f created+closed per second" % (stats.sessions_closed / churn))
    if args.hold_lost:
        print("held sessions         %d (closed after the churn)" % len(stats.held))
    print("streams               %d opened, %d ended with EOF, %d lost ends (all bytes, no EOF), "
          "%d lost tails, %d failed to open or broke"
          % (stats.streams, stats.streams_ended, stats.lost_ends, stats.lost_tails, stats.connect_failures))
    if death:
        print("ROUTER DIED           %.1f s after the start" % (death[0] - t0))
        # i2pd re-arms a lost stream's receive timer every 20 s from its last byte: the crash
        # comes at such a tick once the stream's session is gone.
        gone = sorted(stats.lost_sessions, key=lambda e: e[1])
        gone = [(closed, last) for closed, last in gone if closed < death[0]]
        for closed, last in gone[:12]:
            print("  lost end: last byte %6.1f s, session closed %6.1f s, death - last byte %5.1f s"
                  % (last - t0, closed - t0, death[0] - last))
        return 1
    print("router                alive")
    return 0


def read_line_hello(sam):
    sock = socket.create_connection(sam, timeout=10)
    try:
        return command(sock, HELLO, "RESULT=OK", 10)
    finally:
        close_quietly(sock)


if __name__ == "__main__":
    sys.exit(main())
