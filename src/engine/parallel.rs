//! The two pieces of shared-memory machinery the training loop needs: a
//! completion counter that orders the phases of the work, and a slice that
//! several workers write in disjoint parts between phases.
//!
//! A training step is ~20 µs of arithmetic split across workers in two
//! phases, 600 steps an epoch. Waiting that puts threads to sleep at once
//! costs tens of µs per wake-up, more than the work; waiting that only
//! spins starves the workers when there are more threads than cores. So
//! [`CompletionCounter::wait_for`] spins for up to 20 µs ([`SPIN_TIME`];
//! 2 µs, [`SPIN_TIME_SHARED`], for workers that are not pinned), then yields
//! the CPU, then parks.

use std::marker::PhantomData;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// How long a waiter spins before it starts yielding, when every worker has
/// a CPU of its own (pinned): longer than the imbalance at the end of a
/// normal phase (a chunk, a few µs), shorter than the wake-up from a park
/// it avoids (tens of µs).
pub const SPIN_TIME: Duration = Duration::from_micros(20);
/// The same for workers the OS places (not pinned). Under load it may put
/// two of them on one CPU; then a spinning waiter keeps the worker it waits
/// for off that CPU, and every phase end cost a whole spin: with one busy
/// loop beside the run, 2 unpinned workers took 2.5× the time of 1 worker
/// with 20 µs, 1.26× with 2 µs, and quiet runs measured no slower
/// (interleaved, 9 rounds).
pub const SPIN_TIME_SHARED: Duration = Duration::from_micros(2);
/// `yield_now` calls before parking: lets a core shared with other work
/// run the thread we are waiting for.
const YIELD_LIMIT: u32 = 32;

/// A count of finished work items that threads can wait on.
///
/// The training loop numbers every chunk of work in an epoch in order
/// (phase by phase); a chunk may start once every chunk of the earlier
/// phases is done, i.e. once the count reaches the index of its phase's
/// first chunk. Unlike a barrier, nobody waits for a thread that holds no
/// work: a worker the OS has descheduled delays the end of a phase only if
/// it is inside one of the phase's chunks; the others take the remaining
/// chunks.
///
/// The rule that makes waking work: every `wait_for` target must be a
/// `wake_at` value that some [`Self::complete`] call reaches (the end of
/// a phase), since a sleeping waiter is woken only then, or by
/// [`Self::abandon`].
pub struct CompletionCounter {
    done: CachePadded<AtomicUsize>,
    /// How long a waiter spins before it yields.
    spin: Duration,
    /// Set when the work was abandoned (a worker panicked, or training
    /// diverged): waiters give up instead of waiting for work that will
    /// never finish.
    abandoned: AtomicBool,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
}

/// Keeps a value on cache lines of its own, so that threads hammering it
/// (an atomic counter) do not slow down reads of its neighbours (false
/// sharing). 128 bytes: Intel's adjacent-line prefetcher pairs lines.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct CachePadded<T>(pub T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl Default for CompletionCounter {
    fn default() -> Self {
        Self::new()
    }
}

impl CompletionCounter {
    /// A counter whose waiters spin for [`SPIN_TIME`].
    pub fn new() -> Self {
        Self::with_spin(SPIN_TIME)
    }

    /// A counter whose waiters spin for `spin` before they yield.
    pub fn with_spin(spin: Duration) -> Self {
        Self {
            done: CachePadded(AtomicUsize::new(0)),
            spin,
            abandoned: AtomicBool::new(false),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        }
    }

    /// Counts one finished item. Everything the thread wrote before is
    /// visible to any thread whose [`Self::wait_for`] returns because of
    /// it. `wake_at` is the count at which waiters should be woken (the
    /// end of the item's phase).
    pub fn complete(&self, wake_at: usize) {
        // SeqCst pairs with the waiter's SeqCst `sleepers` increment and
        // `done` load: either this sees the sleeper and notifies under the
        // lock, or the sleeper sees the new count and never sleeps.
        let now = self.done.fetch_add(1, Ordering::SeqCst) + 1;
        if now == wake_at && self.sleepers.load(Ordering::SeqCst) > 0 {
            let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.wake.notify_all();
        }
    }

    /// Marks the work as abandoned (a worker panicked, or the result is
    /// already known to be an error) and wakes every waiter.
    pub fn abandon(&self) {
        self.abandoned.store(true, Ordering::SeqCst);
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.wake.notify_all();
    }

    /// Items done so far.
    pub fn count(&self) -> usize {
        self.done.load(Ordering::Relaxed)
    }

    /// Whether [`Self::abandon`] was called.
    pub fn is_abandoned(&self) -> bool {
        self.abandoned.load(Ordering::SeqCst)
    }

    /// Abandons the work if the current thread unwinds before the guard is
    /// dropped normally.
    pub fn abandon_on_panic(&self) -> AbandonOnPanic<'_> {
        AbandonOnPanic(self)
    }

    /// Blocks until at least `target` items are done: spins briefly, then
    /// yields, then sleeps. Returns `false` (at once) if the work was
    /// abandoned: the items will never be done.
    #[must_use]
    pub fn wait_for(&self, target: usize) -> bool {
        if !self.reached(target) {
            self.block_until(target, None);
        }
        !self.abandoned.load(Ordering::SeqCst)
    }

    /// [`Self::wait_for`] that gives up once it has waited `patience()`
    /// (evaluated only if the wait gets as far as sleeping): the caller
    /// learns that the items are late, and can wait again.
    #[must_use]
    pub fn wait_patiently(&self, target: usize, patience: &dyn Fn() -> Duration) -> Wait {
        if !self.reached(target) && !self.block_until(target, Some(patience)) {
            return Wait::Late;
        }
        if self.abandoned.load(Ordering::SeqCst) {
            Wait::Abandoned
        } else {
            Wait::Reached
        }
    }

    fn reached(&self, target: usize) -> bool {
        // Acquire pairs with the completers' RMWs (a release sequence), so
        // the finished items' writes are visible after this returns.
        self.done.load(Ordering::Acquire) >= target || self.abandoned.load(Ordering::Relaxed)
    }

    /// Waits until [`Self::reached`]; with `patience`, gives up (returns
    /// false) once that much time has passed since the call.
    fn block_until(&self, target: usize, patience: Option<&dyn Fn() -> Duration>) -> bool {
        let start = Instant::now();
        loop {
            // Check the clock only every 64 spins: it costs more than a spin.
            for _ in 0..64 {
                if self.reached(target) {
                    return true;
                }
                std::hint::spin_loop();
            }
            if start.elapsed() > self.spin {
                break;
            }
        }
        for _ in 0..YIELD_LIMIT {
            if self.reached(target) {
                return true;
            }
            std::thread::yield_now();
        }
        let deadline = patience.map(|p| start + p());
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.sleepers.fetch_add(1, Ordering::SeqCst);
        let mut on_time = true;
        while self.done.load(Ordering::SeqCst) < target && !self.abandoned.load(Ordering::SeqCst) {
            let Some(deadline) = deadline else {
                guard = self.wake.wait(guard).unwrap_or_else(|e| e.into_inner());
                continue;
            };
            let now = Instant::now();
            if now >= deadline {
                on_time = false;
                break;
            }
            guard = self
                .wake
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        self.sleepers.fetch_sub(1, Ordering::SeqCst);
        on_time
    }
}

/// How [`CompletionCounter::wait_patiently`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    Reached,
    Abandoned,
    /// Patience ran out first.
    Late,
}

/// See [`CompletionCounter::abandon_on_panic`].
pub struct AbandonOnPanic<'a>(&'a CompletionCounter);

impl Drop for AbandonOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.abandon();
        }
    }
}

/// A mutable slice that several threads access through disjoint ranges,
/// with phases ordered by a [`CompletionCounter`].
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
// SAFETY: as above; `get` hands out `&[T]` to several threads at once, so
// T must also be Sync.
unsafe impl<T: Send + Sync> Sync for SharedSlice<'_, T> {}

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
    fn a_panicking_worker_releases_the_others() {
        let counter = CompletionCounter::new();
        std::thread::scope(|s| {
            let waiter = s.spawn(|| counter.wait_for(1));
            let panicker = s.spawn(|| {
                let _guard = counter.abandon_on_panic();
                panic!("worker failed");
            });
            assert!(panicker.join().is_err());
            assert!(!waiter.join().unwrap(), "the waiter must give up");
        });
    }

    #[test]
    fn completion_counter_orders_phases() {
        // Phases of `per_phase` items claimed by ticket; an item may run
        // once every earlier phase is done. Each item checks that the
        // previous phase's increments are all visible. More threads than
        // cores exercises the yield and park paths.
        let (threads, per_phase, phases) = (6, 5, 300);
        let counter = CompletionCounter::new();
        let tickets = AtomicUsize::new(0);
        let sums: Vec<AtomicUsize> = (0..phases).map(|_| AtomicUsize::new(0)).collect();
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| loop {
                    let t = tickets.fetch_add(1, Ordering::Relaxed);
                    let phase = t / per_phase;
                    if phase >= phases {
                        return;
                    }
                    assert!(counter.wait_for(phase * per_phase));
                    if phase > 0 {
                        assert_eq!(sums[phase - 1].load(Ordering::Relaxed), per_phase);
                    }
                    sums[phase].fetch_add(1, Ordering::Relaxed);
                    counter.complete((phase + 1) * per_phase);
                });
            }
        });
        assert!(sums.iter().all(|s| s.load(Ordering::Relaxed) == per_phase));
    }
}
