//! The bench: a worker that loses its CPU sits out for a while.
//!
//! A chunk is run by the worker that claimed it, so a worker that the OS
//! deschedules while it holds a chunk (inside it, or before it could start
//! it) holds up the end of that phase until it runs again. When another
//! process wants the same CPU that is a whole time slice (milliseconds),
//! against chunks of microseconds: with one busy neighbour, two workers on
//! two CPUs ran slower than one worker alone.
//!
//! So the scheduler ([`super::phased`]) watches its waits. A worker that
//! has waited for a phase longer than [`patience`] benches every worker
//! that holds a chunk it waits for (one whose phase is open: a worker that
//! itself waits for an earlier phase is left alone). It moves them onto
//! its own CPU, where it is about to sleep, so that they finish their
//! chunks at once
//! ([`crate::engine::placement::Placement::move_here`]), and they then sit out for
//! a while before they claim again. The sit-out doubles with every
//! benching in an epoch (1, 2, 4, … 64 ms): under lasting load the epoch
//! runs on the workers that keep their CPUs, at the cost of one short
//! stall per doubling, and when the load goes, the workers are back within
//! one sit-out.
//!
//! Which worker runs a chunk never changes its result, so none of this
//! changes the bits.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::engine::parallel::CachePadded;

/// The shortest wait for a phase that counts as a stall: far above the
/// imbalance at the end of a normal phase (a chunk: 1–100 µs), far below
/// an OS time slice (≥ 1 ms).
pub const STALL_MIN: Duration = Duration::from_micros(200);
/// A wait counts as a stall only once it is also this many mean chunk
/// times long (networks with big chunks).
pub const STALL_CHUNKS: u32 = 8;
/// The first sit-out of an epoch; each later one is twice the one before.
pub const SIT_OUT_FIRST: Duration = Duration::from_millis(1);
/// The sit-out stops doubling after this many doublings (64 ms).
pub const SIT_OUT_DOUBLINGS: u32 = 6;

/// How long a worker waits for a phase before it benches the late ones,
/// given the epoch's mean time per chunk so far.
pub fn patience(mean_chunk: Duration) -> Duration {
    STALL_MIN.max(mean_chunk * STALL_CHUNKS)
}

/// Which workers sit out, for one epoch.
pub struct Bench {
    /// Per worker (each on its own lines: read before every claim).
    benched: Vec<CachePadded<AtomicBool>>,
    /// Benchings so far: sets the next sit-out's length.
    benchings: AtomicU32,
    /// Set when a worker leaves the epoch (the tickets are all claimed,
    /// or the epoch was abandoned): nobody needs to sit out any more.
    over: AtomicBool,
    lock: Mutex<()>,
    wake: Condvar,
}

impl Bench {
    pub fn new(workers: usize) -> Self {
        Self {
            benched: (0..workers)
                .map(|_| CachePadded(AtomicBool::new(false)))
                .collect(),
            benchings: AtomicU32::new(0),
            over: AtomicBool::new(false),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        }
    }

    pub fn is_benched(&self, worker: usize) -> bool {
        self.benched[worker].load(Ordering::Relaxed)
    }

    /// Benches `worker`; true if it was not benched already.
    pub fn bench(&self, worker: usize) -> bool {
        let fresh = !self.benched[worker].swap(true, Ordering::Relaxed);
        if fresh {
            self.benchings.fetch_add(1, Ordering::Relaxed);
        }
        fresh
    }

    /// Benchings so far in this epoch.
    pub fn benchings(&self) -> u32 {
        self.benchings.load(Ordering::Relaxed)
    }

    /// The length of a sit-out after `benchings` benchings.
    pub fn sit_out_length(benchings: u32) -> Duration {
        SIT_OUT_FIRST * (1 << benchings.saturating_sub(1).min(SIT_OUT_DOUBLINGS))
    }

    /// Called by a benched `worker` holding no chunk: sleeps for its
    /// sit-out, or until the epoch is over, and takes it off the bench.
    pub fn sit_out(&self, worker: usize) {
        let until = Instant::now() + Self::sit_out_length(self.benchings());
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        // `over` is checked under the lock that `finish` notifies under, so
        // the notification cannot fall between the check and the wait.
        while !self.over.load(Ordering::SeqCst) {
            let now = Instant::now();
            if now >= until {
                break;
            }
            guard = self
                .wake
                .wait_timeout(guard, until - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        drop(guard);
        self.benched[worker].store(false, Ordering::Relaxed);
    }

    /// The epoch is over for everyone: wakes every sitter.
    pub fn finish(&self) {
        self.over.store(true, Ordering::SeqCst);
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.wake.notify_all();
    }

    /// Calls [`Self::finish`] when dropped: on every way out of a worker's
    /// epoch, a panic included.
    pub fn finish_on_drop(&self) -> FinishOnDrop<'_> {
        FinishOnDrop(self)
    }
}

/// See [`Bench::finish_on_drop`].
pub struct FinishOnDrop<'a>(&'a Bench);

impl Drop for FinishOnDrop<'_> {
    fn drop(&mut self) {
        self.0.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sit_outs_double_and_stop_doubling() {
        let ms = |n| Bench::sit_out_length(n).as_millis();
        assert_eq!(
            [ms(0), ms(1), ms(2), ms(3), ms(7), ms(8), ms(100)],
            [1, 1, 2, 4, 64, 64, 64]
        );
    }

    #[test]
    fn patience_is_the_longer_of_the_floor_and_eight_chunks() {
        assert_eq!(patience(Duration::from_micros(2)), STALL_MIN);
        assert_eq!(
            patience(Duration::from_micros(100)),
            Duration::from_micros(800)
        );
    }

    #[test]
    fn a_sitter_sits_out_its_time() {
        let bench = Bench::new(2);
        assert!(bench.bench(1));
        assert!(!bench.bench(1), "benched twice");
        assert_eq!(bench.benchings(), 1);
        let t = Instant::now();
        bench.sit_out(1);
        assert!(t.elapsed() >= SIT_OUT_FIRST);
        assert!(!bench.is_benched(1));
    }

    #[test]
    fn the_end_of_the_epoch_wakes_a_sitter() {
        // Seven benchings: a 64 ms sit-out, cut short by the end of the epoch.
        let bench = Bench::new(8);
        for w in 0..7 {
            assert!(bench.bench(w));
        }
        assert_eq!(
            Bench::sit_out_length(bench.benchings()),
            Duration::from_millis(64)
        );
        std::thread::scope(|s| {
            let t = Instant::now();
            let sitter = s.spawn(|| bench.sit_out(7));
            std::thread::sleep(Duration::from_millis(5));
            drop(bench.finish_on_drop());
            sitter.join().unwrap();
            assert!(t.elapsed() < Duration::from_millis(50), "{:?}", t.elapsed());
        });
    }
}
