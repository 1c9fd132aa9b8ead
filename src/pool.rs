//! A bounded pool of worker threads fed by the accept loop.
//!
//! At most `max` jobs run at once; a job offered beyond that is handed back
//! at once so the caller can refuse the client instead of queueing it (a
//! queued SOCKS client would only time out). Threads are started on demand
//! up to `max`. Each worker has a one-place channel of its own, and an idle
//! worker's sender waits on a last-in, first-out stack: the worker that
//! finished last takes the next job (its stack and caches are still warm),
//! so under any steady load the same few workers serve it, and those at the
//! bottom, unused for [`IDLE_EXIT`], leave. After a burst the pool thus
//! shrinks back to what the load needs, and a leaving worker hands memory
//! back ([`memory::give_back`]). (One shared channel would hand jobs to
//! whichever worker waited longest, keeping every worker of a burst alive.)
//!
//! A caller that was handed its job back and has had a running job asked
//! to end (a held half-close, src/holds.rs) can wait for the place with
//! [`Pool::wait_room`]: finishing workers wake it, nothing polls.

use crate::memory;
use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

/// An idle worker thread exits after this long without a job.
pub const IDLE_EXIT: Duration = Duration::from_secs(30);
/// Stack of a worker thread: address space, not memory. A held connection
/// touches two pages of it (the relay's buffers are on the heap). glibc
/// keeps the stacks of exited threads for reuse, up to 40 MiB of them, with
/// the pages they touched: 1 MiB stacks keep 39 (312 KiB resident) where
/// 256 KiB ones kept 157 (1.2 MiB), measured after 1,000 clients left.
pub const WORKER_STACK: usize = 1024 * 1024;

type Handler<T> = dyn Fn(T) + Send + Sync;

/// What a worker is sent.
enum Msg<T> {
    Job(T),
    /// Taken off the idle stack (and uncounted) by the dropped pool.
    Leave,
}

/// What is shared by the pool and its workers.
struct Inner<T> {
    /// Jobs accepted and not yet finished.
    busy: AtomicUsize,
    /// Worker threads alive. A worker that leaves is taken off `idle` and
    /// uncounted here under the `idle` lock, so that a submit that finds no
    /// idle worker also finds room for a new one.
    live: AtomicUsize,
    /// The channels of idle workers, the one that finished last on top.
    idle: Mutex<Vec<Sender<Msg<T>>>>,
    /// The pool was dropped: workers leave instead of waiting.
    closed: AtomicBool,
    /// Callers in [`Pool::wait_room`]; a finishing job signals `room` only
    /// when there are some, so the usual finish takes no lock for it.
    waiting: AtomicUsize,
    room: Mutex<()>,
    room_freed: Condvar,
    /// [`IDLE_EXIT`], shorter in tests.
    idle_exit: Duration,
    handler: Box<Handler<T>>,
}

/// The pool. Dropping it makes idle workers leave; running jobs finish.
pub struct Pool<T: Send + 'static> {
    max: usize,
    inner: Arc<Inner<T>>,
}

/// Undoes a job's or a thread's count if the handler panics.
struct Release<'a>(&'a AtomicUsize);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn lock<X>(m: &Mutex<X>) -> MutexGuard<'_, X> {
    // Every update under these locks is a single step: a panic elsewhere
    // cannot leave them half-done.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<T: Send + 'static> Pool<T> {
    /// A pool running `handler` on each job, at most `max` at once.
    pub fn new(max: usize, handler: impl Fn(T) + Send + Sync + 'static) -> Self {
        Pool::with_idle_exit(max, IDLE_EXIT, handler)
    }

    fn with_idle_exit(max: usize, idle_exit: Duration, handler: impl Fn(T) + Send + Sync + 'static) -> Self {
        let max = max.max(1);
        Pool {
            max,
            inner: Arc::new(Inner {
                busy: AtomicUsize::new(0),
                live: AtomicUsize::new(0),
                // All the room it can need, now: grown during a burst, it
                // would be a long-lived block high in the heap, which keeps
                // the allocator from trimming what the burst freed below it.
                idle: Mutex::new(Vec::with_capacity(max)),
                closed: AtomicBool::new(false),
                waiting: AtomicUsize::new(0),
                room: Mutex::new(()),
                room_freed: Condvar::new(),
                idle_exit,
                handler: Box::new(handler),
            }),
        }
    }

    /// Run `job` on a worker, or hand it back when `max` jobs are running
    /// (or no thread could be started).
    pub fn submit(&self, job: T) -> Result<(), T> {
        let c = &self.inner;
        if c.busy.fetch_add(1, Ordering::SeqCst) >= self.max {
            c.busy.fetch_sub(1, Ordering::SeqCst);
            return Err(job);
        }
        let idle = lock(&c.idle).pop();
        // An idle worker's channel is empty and its worker waits on it (a
        // worker leaves only after taking itself off the stack), so the
        // send cannot fail; if it did, a new worker takes the job.
        let job = match idle {
            Some(tx) => match tx.try_send(Msg::Job(job)) {
                Ok(()) => return Ok(()),
                Err(e) => match e.into_inner() {
                    Msg::Job(job) => job,
                    Msg::Leave => return Ok(()),
                },
            },
            None => job,
        };
        let result = self.spawn(job);
        if result.is_err() {
            c.busy.fetch_sub(1, Ordering::SeqCst);
        }
        result
    }

    fn spawn(&self, first: T) -> Result<(), T> {
        let c = Arc::clone(&self.inner);
        if c.live.fetch_add(1, Ordering::SeqCst) >= self.max {
            // Not expected (see `Inner::live`); refuse rather than exceed.
            c.live.fetch_sub(1, Ordering::SeqCst);
            return Err(first);
        }
        // The first job waits in the new worker's channel, where it can be
        // taken back if the thread cannot be started.
        let (tx, rx) = bounded(1);
        let (tx, rx) = match tx.try_send(Msg::Job(first)) {
            Ok(()) => (tx, rx),
            Err(e) => {
                c.live.fetch_sub(1, Ordering::SeqCst);
                return match e.into_inner() {
                    Msg::Job(job) => Err(job),
                    Msg::Leave => Ok(()),
                };
            }
        };
        let theirs = rx.clone();
        let spawned = thread::Builder::new()
            .name("worker".into())
            .stack_size(WORKER_STACK)
            .spawn(move || work(&c, &tx, &theirs));
        match spawned {
            Ok(_) => Ok(()),
            Err(_) => {
                self.inner.live.fetch_sub(1, Ordering::SeqCst);
                match rx.try_recv() {
                    Ok(Msg::Job(job)) => Err(job),
                    // Unreachable in practice: the thread never ran.
                    _ => Ok(()),
                }
            }
        }
    }

    /// Most jobs run at once.
    pub fn max(&self) -> usize {
        self.max
    }

    /// Jobs running now.
    pub fn busy(&self) -> usize {
        self.inner.busy.load(Ordering::SeqCst)
    }

    /// Worker threads alive now.
    pub fn threads(&self) -> usize {
        self.inner.live.load(Ordering::SeqCst)
    }

    /// Wait until fewer than `max` jobs run or `deadline` passes; true if
    /// there is room (which another caller may still take first).
    pub fn wait_room(&self, deadline: Instant) -> bool {
        let c = &self.inner;
        let mut guard = lock(&c.room);
        c.waiting.fetch_add(1, Ordering::SeqCst);
        let room = loop {
            if c.busy.load(Ordering::SeqCst) < self.max {
                break true;
            }
            let now = Instant::now();
            if now >= deadline {
                break false;
            }
            guard = match c.room_freed.wait_timeout(guard, deadline - now) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        };
        c.waiting.fetch_sub(1, Ordering::SeqCst);
        room
    }

    /// Wait until no job runs or `deadline` passes; true if idle.
    pub fn wait_idle(&self, deadline: Instant) -> bool {
        loop {
            if self.busy() == 0 {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            thread::sleep((deadline - now).min(Duration::from_millis(20)));
        }
    }
}

impl<T: Send + 'static> Drop for Pool<T> {
    fn drop(&mut self) {
        let c = &self.inner;
        let mut idle = lock(&c.idle);
        c.closed.store(true, Ordering::SeqCst);
        for tx in idle.drain(..) {
            c.live.fetch_sub(1, Ordering::SeqCst);
            let _ = tx.try_send(Msg::Leave);
        }
    }
}

/// A worker thread: its first job is in its channel (`tx`, `rx`); then it
/// waits there for the next one until it has been idle for [`IDLE_EXIT`].
fn work<T>(c: &Inner<T>, tx: &Sender<Msg<T>>, rx: &Receiver<Msg<T>>) {
    // Uncounts the thread if a handler panics; disarmed when the thread
    // leaves normally, having been uncounted with the `idle` lock held.
    let alive = Release(&c.live);
    let mut next = rx.try_recv().ok();
    while let Some(Msg::Job(job)) = next {
        let done = Release(&c.busy);
        (c.handler)(job);
        {
            let mut idle = lock(&c.idle);
            if c.closed.load(Ordering::SeqCst) {
                drop(done);
                return;
            }
            // Idle before the job stops counting: a submit that then sees
            // room finds this worker.
            idle.push(tx.clone());
        }
        drop(done);
        if c.waiting.load(Ordering::SeqCst) > 0 {
            // Under the lock: a waiter between its check of `busy` and
            // its wait holds it, so this cannot fall in between.
            let _room = lock(&c.room);
            c.room_freed.notify_all();
        }
        next = match rx.recv_timeout(c.idle_exit) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => {
                let mut idle = lock(&c.idle);
                if let Some(at) = idle.iter().position(|s| s.same_channel(tx)) {
                    idle.remove(at);
                    c.live.fetch_sub(1, Ordering::SeqCst);
                    std::mem::forget(alive);
                    drop(idle);
                    memory::give_back();
                    return;
                }
                drop(idle);
                // Taken off the stack by a submit just now: the job is on
                // its way (or already in the channel).
                rx.recv().ok()
            }
            // Never: this worker holds a sender of its own channel.
            Err(RecvTimeoutError::Disconnected) => None,
        };
    }
    // Left by the dropped pool, already uncounted.
    std::mem::forget(alive);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn runs_jobs_and_refuses_beyond_max() {
        let (gate_tx, gate_rx) = crossbeam_channel::unbounded::<()>();
        let (done_tx, done_rx) = mpsc::channel::<u32>();
        let done_tx = std::sync::Mutex::new(done_tx);
        let pool = Pool::new(2, move |n: u32| {
            gate_rx.recv().unwrap();
            done_tx.lock().unwrap().send(n).unwrap();
        });
        assert!(pool.submit(1).is_ok());
        assert!(pool.submit(2).is_ok());
        assert_eq!(pool.submit(3), Err(3));
        assert_eq!(pool.busy(), 2);
        assert!(pool.threads() <= 2);
        gate_tx.send(()).unwrap();
        let first = done_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(first == 1 || first == 2);
        // A slot is free again: the next job is taken (by the finished worker).
        let deadline = Instant::now() + Duration::from_secs(5);
        while pool.busy() > 1 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        assert!(pool.submit(4).is_ok());
        assert!(pool.threads() <= 2);
        gate_tx.send(()).unwrap();
        gate_tx.send(()).unwrap();
        let mut rest: Vec<u32> =
            (0..2).map(|_| done_rx.recv_timeout(Duration::from_secs(5)).unwrap()).collect();
        rest.push(first);
        rest.sort();
        assert_eq!(rest, vec![1, 2, 4]);
        assert!(pool.wait_idle(Instant::now() + Duration::from_secs(5)));
    }

    #[test]
    fn wait_room_returns_when_a_job_ends_and_not_before() {
        let (gate_tx, gate_rx) = crossbeam_channel::unbounded::<()>();
        let pool = Pool::new(1, move |_: u32| gate_rx.recv().unwrap());
        assert!(pool.submit(1).is_ok());
        assert_eq!(pool.submit(2), Err(2));
        let t = Instant::now();
        assert!(!pool.wait_room(t + Duration::from_millis(200)), "room while the job runs");
        assert!(t.elapsed() >= Duration::from_millis(200));
        let opener = thread::spawn(move || {
            thread::sleep(Duration::from_millis(100));
            gate_tx.send(()).unwrap();
            gate_tx
        });
        let t = Instant::now();
        assert!(pool.wait_room(t + Duration::from_secs(5)));
        // Woken by the finish, not by the deadline.
        assert!(t.elapsed() < Duration::from_secs(2), "woken after {:?}", t.elapsed());
        let gate_tx = opener.join().unwrap();
        assert!(pool.submit(3).is_ok());
        gate_tx.send(()).unwrap();
        assert!(pool.wait_idle(Instant::now() + Duration::from_secs(5)));
    }

    #[test]
    fn panicking_job_frees_its_slot() {
        let pool = Pool::new(1, |n: u32| {
            if n == 0 {
                panic!("job failed");
            }
        });
        assert!(pool.submit(0).is_ok());
        assert!(pool.wait_idle(Instant::now() + Duration::from_secs(5)));
        let deadline = Instant::now() + Duration::from_secs(5);
        while pool.threads() > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(5));
        }
        assert!(pool.submit(1).is_ok());
        assert!(pool.wait_idle(Instant::now() + Duration::from_secs(5)));
    }

    /// Waits up to 5 s for `f`.
    fn eventually(f: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !f() {
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(2));
        }
        true
    }

    #[test]
    fn the_worker_that_finished_last_takes_the_next_job() {
        let (gate_tx, gate_rx) = crossbeam_channel::unbounded::<()>();
        let (ran_tx, ran_rx) = mpsc::channel::<(u32, thread::ThreadId)>();
        let ran_tx = std::sync::Mutex::new(ran_tx);
        let pool = Pool::new(3, move |n: u32| {
            if n < 3 {
                gate_rx.recv().unwrap();
            }
            ran_tx.lock().unwrap().send((n, thread::current().id())).unwrap();
        });
        for n in 0..3 {
            assert!(pool.submit(n).is_ok());
        }
        assert_eq!(pool.threads(), 3);
        // Let them finish one at a time; the last to finish is on top.
        let mut order = Vec::new();
        for _ in 0..3 {
            gate_tx.send(()).unwrap();
            let (n, id) = ran_rx.recv_timeout(Duration::from_secs(5)).unwrap();
            assert!(n < 3);
            order.push(id);
            assert!(eventually(|| pool.busy() == 3 - order.len()));
        }
        for n in 3..6 {
            assert!(pool.submit(n).is_ok());
            let (_, id) = ran_rx.recv_timeout(Duration::from_secs(5)).unwrap();
            assert_eq!(id, order[2], "job {n} did not go to the worker that finished last");
            assert!(eventually(|| pool.busy() == 0));
        }
        assert_eq!(pool.threads(), 3);
    }

    #[test]
    fn workers_unused_under_a_steady_load_leave() {
        const IDLE: Duration = Duration::from_millis(300);
        let (gate_tx, gate_rx) = crossbeam_channel::unbounded::<()>();
        let pool = Pool::with_idle_exit(4, IDLE, move |n: u32| {
            if n < 4 {
                gate_rx.recv().unwrap();
            }
        });
        for n in 0..4 {
            assert!(pool.submit(n).is_ok());
        }
        assert_eq!(pool.threads(), 4);
        for _ in 0..4 {
            gate_tx.send(()).unwrap();
        }
        assert!(eventually(|| pool.busy() == 0));
        // One job at a time, more often than the idle limit: one worker
        // does them all, the three others leave.
        let t = Instant::now();
        while t.elapsed() < IDLE * 4 {
            assert!(pool.submit(9).is_ok());
            assert!(eventually(|| pool.busy() == 0));
            thread::sleep(IDLE / 6);
        }
        assert_eq!(pool.threads(), 1);
    }

    #[test]
    fn dropping_the_pool_lets_idle_workers_leave() {
        let pool = Pool::new(4, |_: u32| {});
        for n in 0..4 {
            assert!(pool.submit(n).is_ok());
        }
        assert!(pool.wait_idle(Instant::now() + Duration::from_secs(5)));
        let inner = Arc::clone(&pool.inner);
        drop(pool);
        assert!(eventually(|| inner.live.load(Ordering::SeqCst) == 0));
        assert!(eventually(|| Arc::strong_count(&inner) == 1), "a worker still holds the pool");
    }
}
