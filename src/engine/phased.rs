//! The step scheduler: runs any network's step plan on persistent workers.
//!
//! A [`StepPlan`] cuts each training step into phases, and each phase into
//! numbered chunks. Every chunk of the epoch gets a ticket number, in
//! phase order. Workers claim the next ticket with an atomic counter and
//! run its chunk once every chunk of the earlier phases is done
//! ([`CompletionCounter`]). So the split adapts to whichever worker is
//! running: a worker that the OS deschedules holds nobody up unless it is
//! inside a chunk, and no worker waits at a barrier for one that has no
//! work.
//!
//! Which worker runs a chunk never changes the result, provided the plan
//! keeps its side of the contract below; so the bits are the same for any
//! number of workers.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::parallel::{CachePadded, CompletionCounter};

/// What to do after a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    /// Stop the epoch: chunks already running finish, no new one starts.
    Abandon,
}

/// A training epoch's work, cut into phases of chunks.
///
/// # Contract
///
/// The scheduler guarantees:
/// * every chunk `(step, phase, chunk)` with `chunk < chunks(step, phase)`
///   runs exactly once (unless the epoch is abandoned);
/// * a chunk starts only after every chunk of every earlier phase (in
///   `(step, phase)` order) has returned, and sees all their writes;
/// * chunks of the same phase may run at the same time, on any worker.
///
/// The plan guarantees, for the result to be sound and deterministic:
/// * chunks of one phase write disjoint data, and nothing another chunk of
///   that phase reads;
/// * a chunk's result depends only on `(step, phase, chunk)` and the data
///   of earlier phases, never on the worker or its scratch's history;
/// * `chunks` depends only on `(step, phase)`, and is at least 1.
pub trait StepPlan: Sync {
    /// Per-worker scratch space.
    type Scratch;
    fn scratch(&self) -> Self::Scratch;
    /// Steps in the epoch.
    fn steps(&self) -> usize;
    /// Phases per step (the same for every step).
    fn phases(&self) -> usize;
    /// Chunks of phase `phase` of step `step`.
    fn chunks(&self, step: usize, phase: usize) -> usize;
    /// Runs one chunk.
    fn run(&self, step: usize, phase: usize, chunk: usize, scratch: &mut Self::Scratch) -> Flow;
}

/// Runs every chunk of `plan` on `workers` workers: the calling thread when
/// `workers` is 1, else `workers` threads of `pool` (a broadcast: the pool
/// must have at least that many threads; the rest return at once).
/// Returns whether the epoch ran to the end (false: a chunk abandoned it).
/// A panic in a chunk abandons the epoch and is re-raised here.
pub fn run<P: StepPlan>(plan: &P, workers: usize, pool: &rayon::ThreadPool) -> bool {
    let shared = Shared {
        tickets: CachePadded(AtomicUsize::new(0)),
        done: CompletionCounter::new(),
    };
    if workers <= 1 {
        shared.worker(plan);
    } else {
        pool.broadcast(|b| {
            if b.index() < workers {
                shared.worker(plan)
            }
        });
    }
    !shared.done.is_abandoned()
}

struct Shared {
    /// The next ticket to claim (on its own cache lines: every claim
    /// writes it).
    tickets: CachePadded<AtomicUsize>,
    /// Chunks finished.
    done: CompletionCounter,
}

impl Shared {
    /// One worker's epoch: claim tickets until the epoch is done.
    fn worker<P: StepPlan>(&self, plan: &P) {
        let mut scratch = plan.scratch();
        let phases_per_step = plan.phases();
        let phases = phases_per_step * plan.steps();
        if phases == 0 {
            return;
        }
        // A panic in a chunk must not leave the other workers waiting for
        // it forever: they give up, and `broadcast` re-raises the panic.
        let _abandon = self.done.abandon_on_panic();
        let split = |p: usize| (p / phases_per_step, p % phases_per_step);
        // This worker's view of the phase that holds its latest ticket.
        let (mut phase, mut phase_start) = (0, 0);
        let mut phase_len = plan.chunks(0, 0);
        loop {
            let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
            while ticket >= phase_start + phase_len {
                phase += 1;
                if phase >= phases {
                    return;
                }
                phase_start += phase_len;
                let (s, p) = split(phase);
                phase_len = plan.chunks(s, p);
            }
            if !self.done.wait_for(phase_start) {
                // Abandoned by another worker.
                return;
            }
            let (s, p) = split(phase);
            if plan.run(s, p, ticket - phase_start, &mut scratch) == Flow::Abandon {
                self.done.abandon();
                return;
            }
            self.done.complete(phase_start + phase_len);
        }
    }
}
