//! The two pieces of shared-memory machinery the training loop needs: a
//! barrier that spins briefly before it sleeps, and a slice that several
//! workers write in disjoint parts between barriers.
//!
//! A training step is ~10 µs of arithmetic split across workers in two
//! phases, 600 steps an epoch. A barrier that puts threads to sleep at once
//! costs tens of µs per wake-up, more than the work; one that only spins
//! starves the workers when there are more threads than cores. So
//! [`SpinBarrier`] spins for a few µs, then yields the CPU, then parks.

use std::marker::PhantomData;
use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a waiter spins before it starts yielding: longer than the
/// imbalance of a normal phase (a few µs), far shorter than a phase.
const SPIN_TIME: Duration = Duration::from_micros(20);
/// `yield_now` calls before parking: lets a core shared with other work
/// run the thread we are waiting for.
const YIELD_LIMIT: u32 = 32;

/// A reusable barrier for a fixed number of threads.
pub struct SpinBarrier {
    threads: usize,
    arrived: AtomicUsize,
    generation: AtomicUsize,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

impl SpinBarrier {
    pub fn new(threads: usize) -> Self {
        Self {
            threads: threads.max(1),
            arrived: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        }
    }

    /// Blocks until all `threads` have called `wait`. Everything a thread
    /// wrote before `wait` is visible to every thread after it.
    pub fn wait(&self) {
        if self.threads == 1 {
            return;
        }
        let generation = self.generation.load(Ordering::Acquire);
        if self.arrived.fetch_add(1, Ordering::AcqRel) + 1 == self.threads {
            // Last to arrive: reset the count *before* releasing the others,
            // so none of them can arrive at the next barrier early.
            self.arrived.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::SeqCst);
            if self.sleepers.load(Ordering::SeqCst) > 0 {
                let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
                self.wake.notify_all();
            }
            return;
        }
        let released = || self.generation.load(Ordering::Acquire) != generation;
        let start = Instant::now();
        'spin: loop {
            // Check the clock only every 64 spins: it costs more than a spin.
            for _ in 0..64 {
                if released() {
                    return;
                }
                std::hint::spin_loop();
            }
            if start.elapsed() > SPIN_TIME {
                break 'spin;
            }
        }
        for _ in 0..YIELD_LIMIT {
            if released() {
                return;
            }
            std::thread::yield_now();
        }
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        // SeqCst pairs with the releaser's SeqCst generation bump and
        // sleepers load: either it sees us sleeping and notifies under the
        // lock, or we see the new generation here and never sleep.
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        while self.generation.load(Ordering::SeqCst) == generation {
            guard = self.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
        }
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A mutable slice that several threads access through disjoint ranges,
/// with phases separated by a barrier.
///
/// Rust's borrows cannot express "everyone reads all of it in phase 1, each
/// thread writes its own part in phase 2"; this type states that protocol
/// in its `# Safety` sections instead. Ranges are bounds-checked, so misuse
/// of a range panics rather than reading out of bounds.
pub struct SharedSlice<'a, T> {
    ptr: *mut T,
    len: usize,
    _borrow: PhantomData<&'a mut [T]>,
}

// SAFETY: a SharedSlice is a &mut [T] shared under the protocol documented
// on `get` and `get_mut`; sending or sharing it is sound when T is Send,
// because every access goes through those unsafe methods.
unsafe impl<T: Send> Send for SharedSlice<'_, T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for SharedSlice<'_, T> {}

impl<'a, T> SharedSlice<'a, T> {
    pub fn new(slice: &'a mut [T]) -> Self {
        Self {
            ptr: slice.as_mut_ptr(),
            len: slice.len(),
            _borrow: PhantomData,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn check(&self, range: &Range<usize>) {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "SharedSlice range {range:?} out of bounds (len {})",
            self.len
        );
    }

    /// Reads `range`.
    ///
    /// # Safety
    ///
    /// While the returned slice lives, no thread may write any element of
    /// `range` (through [`Self::get_mut`]).
    pub unsafe fn get(&self, range: Range<usize>) -> &[T] {
        self.check(&range);
        // SAFETY: in bounds (checked); no concurrent writer (caller).
        unsafe { std::slice::from_raw_parts(self.ptr.add(range.start), range.len()) }
    }

    /// Writes `range`.
    ///
    /// # Safety
    ///
    /// While the returned slice lives, no other reference to any element of
    /// `range` may exist, on this thread or another.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn get_mut(&self, range: Range<usize>) -> &mut [T] {
        self.check(&range);
        // SAFETY: in bounds (checked); exclusive (caller).
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(range.start), range.len()) }
    }
}

/// Worker `t`'s share of `0..n` when split into `parts` near-equal,
/// contiguous ranges.
pub fn split_range(n: usize, parts: usize, t: usize) -> Range<usize> {
    (n * t / parts)..(n * (t + 1) / parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_covers_everything_once() {
        for n in [0, 1, 7, 100] {
            for parts in 1..9 {
                let mut next = 0;
                for t in 0..parts {
                    let r = split_range(n, parts, t);
                    assert_eq!(r.start, next);
                    next = r.end;
                }
                assert_eq!(next, n);
            }
        }
    }

    #[test]
    fn barrier_orders_phases() {
        // Each round, every thread adds 1 to a counter, waits, and checks it
        // sees all of the round's additions; more threads than cores
        // exercises the yield and park paths.
        let threads = 6;
        let barrier = SpinBarrier::new(threads);
        let counter = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    for round in 1..=200 {
                        counter.fetch_add(1, Ordering::Relaxed);
                        barrier.wait();
                        assert_eq!(counter.load(Ordering::Relaxed), round * threads);
                        barrier.wait();
                    }
                });
            }
        });
        assert_eq!(counter.load(Ordering::Relaxed), 200 * threads);
    }
}
