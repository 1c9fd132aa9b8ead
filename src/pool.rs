//! A bounded pool of worker threads fed by the accept loop.
//!
//! At most `max` jobs run at once; a job offered beyond that is handed back
//! at once so the caller can refuse the client instead of queueing it (a
//! queued SOCKS client would only time out). Threads are started on demand
//! up to `max` and leave after [`IDLE_EXIT`] without work, so an idle proxy
//! holds few threads and a busy one never holds more than `max`.

use crossbeam_channel::{bounded, Receiver, SendTimeoutError, Sender, TrySendError};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// An idle worker thread exits after this long without a job.
pub const IDLE_EXIT: Duration = Duration::from_secs(30);
/// Stack of a worker thread: the relay's buffers are on the heap, so a
/// small stack keeps a thousand held connections cheap.
pub const WORKER_STACK: usize = 256 * 1024;
/// How long a submit waits for a worker that is finishing its last job.
const HANDOFF_WAIT: Duration = Duration::from_millis(200);

type Handler<T> = dyn Fn(T) + Send + Sync;

struct Counts {
    /// Jobs accepted and not yet finished.
    busy: AtomicUsize,
    /// Worker threads alive.
    live: AtomicUsize,
}

/// The pool. Dropping it lets idle workers run out; running jobs finish.
pub struct Pool<T: Send + 'static> {
    tx: Sender<T>,
    rx: Receiver<T>,
    max: usize,
    counts: Arc<Counts>,
    handler: Arc<Handler<T>>,
}

/// Undoes a job's or a thread's count even if the handler panics.
struct Release<'a>(&'a AtomicUsize);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<T: Send + 'static> Pool<T> {
    /// A pool running `handler` on each job, at most `max` at once.
    pub fn new(max: usize, handler: impl Fn(T) + Send + Sync + 'static) -> Self {
        // Rendezvous channel: a send succeeds only when a worker is waiting.
        let (tx, rx) = bounded(0);
        Pool {
            tx,
            rx,
            max: max.max(1),
            counts: Arc::new(Counts { busy: AtomicUsize::new(0), live: AtomicUsize::new(0) }),
            handler: Arc::new(handler),
        }
    }

    /// Run `job` on a worker, or hand it back when `max` jobs are running
    /// (or no thread could be started).
    pub fn submit(&self, job: T) -> Result<(), T> {
        let c = &self.counts;
        if c.busy.fetch_add(1, Ordering::SeqCst) >= self.max {
            c.busy.fetch_sub(1, Ordering::SeqCst);
            return Err(job);
        }
        let job = match self.tx.try_send(job) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(j) | TrySendError::Disconnected(j)) => j,
        };
        let job = if c.live.load(Ordering::SeqCst) >= self.max {
            // Every thread exists and fewer than max jobs run: one of them
            // is between its last job and its next receive.
            match self.tx.send_timeout(job, HANDOFF_WAIT) {
                Ok(()) => return Ok(()),
                Err(SendTimeoutError::Timeout(j) | SendTimeoutError::Disconnected(j)) => j,
            }
        } else {
            job
        };
        match self.spawn(job) {
            Ok(()) => Ok(()),
            Err(job) => {
                c.busy.fetch_sub(1, Ordering::SeqCst);
                Err(job)
            }
        }
    }

    fn spawn(&self, first: T) -> Result<(), T> {
        let c = Arc::clone(&self.counts);
        if c.live.fetch_add(1, Ordering::SeqCst) >= self.max {
            c.live.fetch_sub(1, Ordering::SeqCst);
            return Err(first);
        }
        let rx = self.rx.clone();
        let handler = Arc::clone(&self.handler);
        // The job moves into the closure; if the spawn fails we get it back
        // through this slot.
        let slot = Arc::new(std::sync::Mutex::new(Some(first)));
        let theirs = Arc::clone(&slot);
        let spawned =
            thread::Builder::new().name("worker".into()).stack_size(WORKER_STACK).spawn(move || {
                let _alive = Release(&c.live);
                let first = theirs.lock().ok().and_then(|mut s| s.take());
                if let Some(job) = first {
                    let _done = Release(&c.busy);
                    handler(job);
                }
                // Timeout or disconnect: this thread is no longer needed.
                while let Ok(job) = rx.recv_timeout(IDLE_EXIT) {
                    let _done = Release(&c.busy);
                    handler(job);
                }
            });
        match spawned {
            Ok(_) => Ok(()),
            Err(_) => {
                self.counts.live.fetch_sub(1, Ordering::SeqCst);
                match slot.lock().ok().and_then(|mut s| s.take()) {
                    Some(job) => Err(job),
                    // Unreachable in practice: the thread never ran.
                    None => Ok(()),
                }
            }
        }
    }

    /// Jobs running now.
    pub fn busy(&self) -> usize {
        self.counts.busy.load(Ordering::SeqCst)
    }

    /// Worker threads alive now.
    pub fn threads(&self) -> usize {
        self.counts.live.load(Ordering::SeqCst)
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
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
}
