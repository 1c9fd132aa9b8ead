//! Buffers lent out while bytes move and given back when drained, so that
//! an idle connection holds none: a thousand held connections then cost
//! their threads, not two buffers each. A buffer given back is kept for the
//! next taker, up to a bound per size; a busy relay that drains its buffer
//! on every wake-up then does not go back to the allocator (which would
//! also zero the memory again) each time. Beyond the bound it is freed.
//!
//! Not here: when a buffer is taken and given back, and why the sizes are
//! what they are (the relay decides both, see relay.rs).

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

/// A lender of buffers of two sizes.
pub struct Lender {
    small: usize,
    large: usize,
    /// How many given-back buffers of each size are kept.
    keep_small: usize,
    keep_large: usize,
    spares: Mutex<Spares>,
    /// Buffers out on loan now.
    lent: AtomicUsize,
}

#[derive(Default)]
struct Spares {
    small: Vec<Vec<u8>>,
    large: Vec<Vec<u8>>,
}

impl Lender {
    /// Buffers of `small` and `large` bytes; at most `keep_small` and
    /// `keep_large` of them kept when given back.
    pub const fn new(small: usize, large: usize, keep_small: usize, keep_large: usize) -> Lender {
        Lender {
            small,
            large,
            keep_small,
            keep_large,
            spares: Mutex::new(Spares { small: Vec::new(), large: Vec::new() }),
            lent: AtomicUsize::new(0),
        }
    }

    /// A buffer of the large size if `large`, else of the small size; it goes
    /// back to this lender when dropped. Its contents are unspecified.
    pub fn take(&self, large: bool) -> Buf<'_> {
        let kept = {
            let mut s = self.lock();
            if large {
                s.large.pop()
            } else {
                s.small.pop()
            }
        };
        let data = kept.unwrap_or_else(|| vec![0; if large { self.large } else { self.small }]);
        self.lent.fetch_add(1, Ordering::Relaxed);
        Buf { data, from: self }
    }

    /// Buffers out on loan now.
    pub fn lent(&self) -> usize {
        self.lent.load(Ordering::Relaxed)
    }

    /// Given-back buffers kept now, small and large.
    pub fn kept(&self) -> (usize, usize) {
        let s = self.lock();
        (s.small.len(), s.large.len())
    }

    /// Free the buffers kept for the next taker (once nobody is likely to
    /// take one soon).
    pub fn release_spares(&self) {
        let spares = std::mem::take(&mut *self.lock());
        drop(spares);
    }

    fn give_back(&self, data: Vec<u8>) {
        self.lent.fetch_sub(1, Ordering::Relaxed);
        let mut s = self.lock();
        if data.len() == self.large && s.large.len() < self.keep_large {
            s.large.push(data);
        } else if data.len() == self.small && s.small.len() < self.keep_small {
            s.small.push(data);
        }
        // Otherwise `data` is freed here.
    }

    fn lock(&self) -> MutexGuard<'_, Spares> {
        // The lists stay consistent whatever a panicking holder did.
        self.spares.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A lent buffer; dropping it gives it back.
pub struct Buf<'a> {
    data: Vec<u8>,
    from: &'a Lender,
}

impl Deref for Buf<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.data
    }
}

impl DerefMut for Buf<'_> {
    fn deref_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }
}

impl Drop for Buf<'_> {
    fn drop(&mut self) {
        self.from.give_back(std::mem::take(&mut self.data));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_have_their_size_and_are_counted_while_lent() {
        let l = Lender::new(16, 64, 2, 1);
        let a = l.take(false);
        let b = l.take(true);
        assert_eq!((a.len(), b.len()), (16, 64));
        assert_eq!(l.lent(), 2);
        drop(a);
        assert_eq!(l.lent(), 1);
        drop(b);
        assert_eq!(l.lent(), 0);
        assert_eq!(l.kept(), (1, 1));
    }

    #[test]
    fn a_given_back_buffer_is_lent_again_without_allocating() {
        let l = Lender::new(16, 64, 2, 1);
        let mut a = l.take(false);
        a.copy_from_slice(&[7; 16]);
        let at = a.as_ptr();
        drop(a);
        let again = l.take(false);
        assert_eq!(again.as_ptr(), at);
        // The lender does not clear it: the relay only reads back what it
        // has just read into it.
        assert_eq!(&again[..], &[7; 16]);
        assert_eq!(l.kept(), (0, 0));
    }

    #[test]
    fn no_more_than_the_bound_is_kept() {
        let l = Lender::new(16, 64, 2, 1);
        let small: Vec<Buf<'_>> = (0..5).map(|_| l.take(false)).collect();
        let large: Vec<Buf<'_>> = (0..3).map(|_| l.take(true)).collect();
        assert_eq!(l.lent(), 8);
        drop(small);
        drop(large);
        assert_eq!(l.lent(), 0);
        assert_eq!(l.kept(), (2, 1));
        l.release_spares();
        assert_eq!(l.kept(), (0, 0));
    }
}
