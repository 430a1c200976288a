//! Where the training pool's threads run: the CPU each worker is pinned
//! to, and the one move the scheduler makes when a worker loses its CPU.
//!
//! Pinning: when the workers fill every CPU this process may use, worker
//! `i` is pinned to the `i`-th of them. An epoch lasts ~15 ms, shorter than
//! the OS takes to notice that two freshly woken workers share one CPU
//! while another sits idle; on the 2-CPU development VM about half of all
//! single-epoch runs then ran as if on one core. Pinning places them once.
//! With fewer workers than CPUs nothing is pinned (concurrent runs would
//! otherwise all pile onto the first CPUs), and `IDX_SOFTMAX_NO_PIN` turns
//! it off.
//!
//! The move: when another process takes a pinned worker's CPU, the worker
//! waits in the run queue of that CPU, and nothing else may run it, while
//! the worker that waits for it idles on its own CPU. The scheduler
//! ([`crate::engine::phased`]) then benches the late worker and moves it
//! to the waiter's CPU ([`Placement::move_here`]), where it finishes its
//! chunk at once; when its time on the bench is over it goes back to its
//! own CPU ([`Placement::come_back`]). Results never depend on any
//! of this. Outside Linux every method is a no-op.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// Environment variable that turns CPU pinning of the pool threads off.
pub const NO_PIN_ENV: &str = "IDX_SOFTMAX_NO_PIN";

/// Whether [`NO_PIN_ENV`] is on (a boolean by [`crate::env`]'s rule: `0`,
/// `off` or empty leave pinning on). A value that is not a boolean turns
/// pinning off, as any value once did; front ends refuse it first
/// ([`crate::env::check`]).
fn no_pin() -> bool {
    crate::env::flag(NO_PIN_ENV).unwrap_or(true)
}

/// The pool threads' CPUs and OS thread ids.
#[derive(Debug)]
pub struct Placement {
    /// Per pool thread: the CPU it is pinned to, if any.
    pins: Vec<Option<usize>>,
    /// The CPUs the process may use, when the pool was planned.
    allowed: Vec<usize>,
    /// Per pool thread: its OS thread id once started (0 before).
    tids: Vec<AtomicI32>,
    /// Per pool thread: set after [`Self::move_here`] moved it, until it
    /// goes back ([`Self::come_back`]).
    displaced: Vec<AtomicBool>,
}

impl Placement {
    /// The plan for a pool of `threads` threads of which the first
    /// `workers` run the training chunks: pinned per the module rule.
    pub fn plan(threads: usize, workers: usize) -> Self {
        let allowed = os::allowed_cpus();
        let pin = workers >= 2 && allowed.len() >= 2 && workers >= allowed.len() && !no_pin();
        let pins = (0..threads)
            .map(|i| (pin && i < allowed.len()).then(|| allowed[i]))
            .collect();
        Self::with_pins(pins, allowed)
    }

    /// A plan that pins nothing (the scheduler's tests).
    pub fn unpinned(threads: usize) -> Self {
        Self::with_pins(vec![None; threads], os::allowed_cpus())
    }

    /// One thread per entry of `pins`, none started yet.
    fn with_pins(pins: Vec<Option<usize>>, allowed: Vec<usize>) -> Self {
        let threads = pins.len();
        Self {
            pins,
            allowed,
            tids: (0..threads).map(|_| AtomicI32::new(0)).collect(),
            displaced: (0..threads).map(|_| AtomicBool::new(false)).collect(),
        }
    }

    /// Whether any thread is pinned.
    pub fn pins_any(&self) -> bool {
        self.pins.iter().any(Option::is_some)
    }

    /// Called on pool thread `index` as it starts: records its thread id
    /// and pins it. Best effort: a refused request leaves it unpinned.
    pub fn start_thread(&self, index: usize) {
        if let Some(tid) = self.tids.get(index) {
            tid.store(os::current_tid(), Ordering::Release);
        }
        if let Some(cpu) = self.pins.get(index).copied().flatten() {
            os::set_affinity(0, &[cpu]);
        }
    }

    /// Moves pool thread `index` onto the CPU the caller runs on (the
    /// caller is about to sleep there), and returns that CPU. Best effort;
    /// a thread not started yet, or a refused request, is left where it
    /// is. Only call it while the pool lives (its thread ids are valid).
    pub fn move_here(&self, index: usize) -> Option<usize> {
        let tid = self
            .tids
            .get(index)
            .map_or(0, |t| t.load(Ordering::Acquire));
        // Without the process's CPU set a moved unpinned thread could not
        // go back: then nothing moves.
        if tid == 0 || self.allowed.is_empty() {
            return None;
        }
        let cpu = os::current_cpu()?;
        os::set_affinity(tid, &[cpu]);
        // Set after the move: a thread that sees the flag was moved, and a
        // move it misses is caught at its next check.
        self.displaced[index].store(true, Ordering::Release);
        Some(cpu)
    }

    /// Called on pool thread `index`, often (a relaxed load when nothing
    /// happened): if [`Self::move_here`] moved it, puts it back where the
    /// plan wants it (its CPU if pinned, else any CPU the process may use).
    pub fn come_back(&self, index: usize) {
        if self
            .displaced
            .get(index)
            .is_some_and(|d| d.load(Ordering::Relaxed) && d.swap(false, Ordering::Acquire))
        {
            match self.pins[index] {
                Some(cpu) => os::set_affinity(0, &[cpu]),
                None => os::set_affinity(0, &self.allowed),
            }
        }
    }
}

#[cfg(target_os = "linux")]
mod os {
    /// The CPUs in this thread's affinity mask.
    pub fn allowed_cpus() -> Vec<usize> {
        // SAFETY: cpu_set_t is a plain bit array; all zeros is a valid
        // (empty) set.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid cpu_set_t of the size passed.
        let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
        if r != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            // SAFETY: `cpu` < CPU_SETSIZE, within the set.
            .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
            .collect()
    }

    pub fn current_tid() -> i32 {
        // SAFETY: gettid has no preconditions.
        unsafe { libc::gettid() }
    }

    pub fn current_cpu() -> Option<usize> {
        // SAFETY: sched_getcpu has no preconditions.
        let cpu = unsafe { libc::sched_getcpu() };
        usize::try_from(cpu).ok()
    }

    /// Sets the affinity of thread `tid` (0: the calling thread) to
    /// `cpus`; best effort.
    pub fn set_affinity(tid: i32, cpus: &[usize]) {
        if cpus.is_empty() {
            return;
        }
        // SAFETY: as in `allowed_cpus`.
        let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        for &cpu in cpus.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
            // SAFETY: `cpu` < CPU_SETSIZE, within the set.
            unsafe { libc::CPU_SET(cpu, &mut set) };
        }
        // SAFETY: `set` is a valid cpu_set_t of the size passed; the call
        // reads nothing else. The tid is one of this process's live pool
        // threads (see `move_here`); a failure is ignored (best effort).
        unsafe { libc::sched_setaffinity(tid, std::mem::size_of_val(&set), &set) };
    }
}

#[cfg(not(target_os = "linux"))]
mod os {
    pub fn allowed_cpus() -> Vec<usize> {
        Vec::new()
    }
    pub fn current_tid() -> i32 {
        0
    }
    pub fn current_cpu() -> Option<usize> {
        None
    }
    pub fn set_affinity(_tid: i32, _cpus: &[usize]) {}
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn current_mask() -> Vec<usize> {
        os::allowed_cpus()
    }

    #[test]
    fn a_moved_thread_runs_on_the_movers_cpu_and_goes_back() {
        let allowed = os::allowed_cpus();
        // Workers on every CPU (at least 2, so that thread 1 exists).
        let n = allowed.len().max(2);
        let placement = std::sync::Arc::new(Placement::plan(n, n));
        let expect_pins = allowed.len() >= 2 && !no_pin();
        assert_eq!(placement.pins_any(), expect_pins);
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let (ack_tx, ack_rx) = std::sync::mpsc::channel::<Vec<usize>>();
        let p = placement.clone();
        let worker = std::thread::spawn(move || {
            p.start_thread(1);
            ack_tx.send(current_mask()).unwrap();
            go_rx.recv().unwrap(); // moved by the main thread meanwhile
            ack_tx.send(current_mask()).unwrap();
            p.come_back(1);
            ack_tx.send(current_mask()).unwrap();
            p.come_back(1); // nothing to undo: stays home
            ack_tx.send(current_mask()).unwrap();
        });
        let pinned = ack_rx.recv().unwrap();
        let here = placement.move_here(1).expect("moved");
        go_tx.send(()).unwrap();
        let moved = ack_rx.recv().unwrap();
        let restored = ack_rx.recv().unwrap();
        let still = ack_rx.recv().unwrap();
        worker.join().unwrap();
        let expect_home = match placement.pins[1] {
            Some(cpu) => vec![cpu],
            None => allowed.clone(),
        };
        assert_eq!(pinned, expect_home);
        assert_eq!(moved, vec![here]);
        assert_eq!(restored, expect_home);
        assert_eq!(still, expect_home);
    }

    #[test]
    fn pins_only_when_the_workers_fill_every_cpu() {
        let n = os::allowed_cpus().len();
        let env_off = no_pin();
        assert!(!Placement::plan(1, 1).pins_any());
        assert!(!Placement::unpinned(n.max(2)).pins_any());
        if n >= 2 {
            assert!(!Placement::plan(n - 1, n - 1).pins_any());
            let p = Placement::plan(n + 2, n);
            assert_eq!(p.pins_any(), !env_off);
            if !env_off {
                // Threads beyond the CPU count stay free.
                assert_eq!(p.pins[n..], [None, None]);
                assert_eq!(p.pins[..n].iter().flatten().count(), n);
            }
        }
    }
}
