//! The step scheduler: runs any network's step plan on persistent workers.
//!
//! A [`StepPlan`] cuts each training step into phases, and each phase into
//! numbered chunks. Every chunk of the epoch gets a ticket number, in
//! phase order. Workers claim the next ticket with an atomic counter and
//! run its chunk once every chunk of the earlier phases is done
//! ([`CompletionCounter`]). So the split adapts to whichever worker is
//! running: a worker that the OS deschedules holds nobody up unless it
//! holds a chunk, and no worker waits at a barrier for one that has no
//! work.
//!
//! A worker that loses its CPU while it holds a chunk does hold the others
//! up; when that lasts, it is benched for a while
//! ([`super::bench`](mod@super::bench)).
//!
//! Which worker runs a chunk never changes the result, provided the plan
//! keeps its side of the contract below; so the bits are the same for any
//! number of workers.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use super::bench::{self, Bench};
use crate::engine::parallel::{CachePadded, CompletionCounter, Wait, SPIN_TIME, SPIN_TIME_SHARED};
use crate::engine::placement::Placement;

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
/// must have at least that many threads; the rest return at once), placed
/// per `placement` (whose thread `i` is the pool's thread `i`).
/// A panic in a chunk abandons the epoch and is re-raised here.
pub fn run<P: StepPlan>(
    plan: &P,
    workers: usize,
    pool: &rayon::ThreadPool,
    placement: &Placement,
) -> Outcome {
    let workers = workers.max(1);
    let shared = Shared {
        tickets: CachePadded(AtomicUsize::new(0)),
        done: CompletionCounter::with_spin(if placement.pins_any() {
            SPIN_TIME
        } else {
            SPIN_TIME_SHARED
        }),
        holding: (0..workers)
            .map(|_| CachePadded(AtomicUsize::new(IDLE)))
            .collect(),
        bench: Bench::new(workers),
        // One worker is the calling thread, not a pool thread, and benches
        // nobody: it has no placement to keep.
        placement: (workers > 1).then_some(placement),
        start: Instant::now(),
    };
    if workers == 1 {
        shared.worker(plan, 0);
    } else {
        pool.broadcast(|b| {
            if b.index() < workers {
                shared.worker(plan, b.index())
            }
        });
    }
    Outcome {
        finished: !shared.done.is_abandoned(),
        benchings: shared.bench.benchings(),
    }
}

/// How an epoch's run went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Whether it ran to the end (false: a chunk abandoned it).
    pub finished: bool,
    /// Workers benched for losing their CPU ([`super::bench`](mod@super::bench)).
    pub benchings: u32,
}

/// Calls [`Placement::come_back`] for a worker when dropped.
struct ComeBack<'p>(Option<&'p Placement>, usize);

impl Drop for ComeBack<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.0 {
            p.come_back(self.1);
        }
    }
}

/// A `holding` slot's value while its worker holds no ticket.
const IDLE: usize = usize::MAX;

struct Shared<'p> {
    /// The next ticket to claim (on its own cache lines: every claim
    /// writes it).
    tickets: CachePadded<AtomicUsize>,
    /// Chunks finished.
    done: CompletionCounter,
    /// Per worker: the first ticket of the phase of the ticket it holds
    /// (claimed, not yet finished), or [`IDLE`] (each on its own lines:
    /// written twice a chunk).
    holding: Vec<CachePadded<AtomicUsize>>,
    /// Workers that lost their CPU, sitting out ([`super::bench`](mod@super::bench)).
    bench: Bench,
    /// The pool's placement (None when the calling thread works alone).
    placement: Option<&'p Placement>,
    start: Instant,
}

impl Shared<'_> {
    /// Worker `me`'s epoch: claim tickets until the epoch is done.
    fn worker<P: StepPlan>(&self, plan: &P, me: usize) {
        let mut scratch = plan.scratch();
        let phases_per_step = plan.phases();
        let phases = phases_per_step * plan.steps();
        // Whoever leaves first wakes the sitters: once one worker is out of
        // tickets (or the epoch is abandoned) nobody needs to sit out.
        let _finish = self.bench.finish_on_drop();
        // A worker moved by a benching goes back to its CPU as it leaves
        // (the evaluation after the epoch runs on the same threads).
        let _home = ComeBack(self.placement, me);
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
            if self.bench.is_benched(me) {
                self.bench.sit_out(me);
            }
            // Back to its own CPU if benching moved it (also when the move
            // came after the sit-out, or in an earlier epoch).
            if let Some(p) = self.placement {
                p.come_back(me);
            }
            // (Between this claim and the `holding` store below, a few
            // instructions, the claim is invisible to a late waiter.)
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
            self.holding[me].store(phase_start, Ordering::Relaxed);
            if !self.wait_for_phase(me, phase_start) {
                // Abandoned by another worker.
                return;
            }
            let (s, p) = split(phase);
            if plan.run(s, p, ticket - phase_start, &mut scratch) == Flow::Abandon {
                self.done.abandon();
                return;
            }
            self.holding[me].store(IDLE, Ordering::Relaxed);
            self.done.complete(phase_start + phase_len);
        }
    }

    /// Waits until every chunk before ticket `phase_start` is done; if that
    /// takes longer than [`bench::patience`], first benches the workers
    /// that hold those chunks. False if the epoch was abandoned.
    fn wait_for_phase(&self, me: usize, phase_start: usize) -> bool {
        let patience = || {
            let chunks = self.done.count().max(1) as u32;
            bench::patience(self.start.elapsed() * self.holding.len() as u32 / chunks)
        };
        match self.done.wait_patiently(phase_start, &patience) {
            Wait::Reached => true,
            Wait::Abandoned => false,
            Wait::Late => {
                let open = self.done.count();
                for (w, slot) in self.holding.iter().enumerate() {
                    // A worker holding a ticket of an earlier phase that is
                    // open (all its own earlier phases done) is what we
                    // wait for: descheduled inside its chunk, or before it
                    // could start it. One whose phase is not open yet waits
                    // like us, and is left alone. (One that has just
                    // finished costs a needless sit-out and move, and
                    // counts as a benching; one that has left the epoch
                    // goes back to its CPU as it leaves, or at the next.)
                    let held = slot.load(Ordering::Relaxed);
                    if w != me && held < phase_start && held <= open && self.bench.bench(w) {
                        if let Some(p) = self.placement {
                            p.move_here(w);
                        }
                    }
                }
                self.done.wait_for(phase_start)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::sync::Mutex;

    /// Records every chunk run, and checks the ordering contract as it goes:
    /// when a chunk starts, every chunk of every earlier phase has finished.
    struct Recorder {
        steps: usize,
        phases: usize,
        /// Chunk counts per (step, phase), varied to catch index slips.
        counts: Vec<usize>,
        runs: Vec<AtomicU32>,
        finished: Vec<AtomicU32>,
        violations: Mutex<Vec<String>>,
        abandon_at: Option<(usize, usize, usize)>,
    }

    impl Recorder {
        fn new(steps: usize, phases: usize, abandon_at: Option<(usize, usize, usize)>) -> Self {
            let counts: Vec<usize> = (0..steps * phases).map(|p| 1 + (p * 7) % 5).collect();
            let total: usize = counts.iter().sum();
            Self {
                steps,
                phases,
                runs: (0..total).map(|_| AtomicU32::new(0)).collect(),
                finished: (0..steps * phases).map(|_| AtomicU32::new(0)).collect(),
                counts,
                violations: Mutex::new(Vec::new()),
                abandon_at,
            }
        }

        fn index(&self, step: usize, phase: usize, chunk: usize) -> usize {
            let p = step * self.phases + phase;
            self.counts[..p].iter().sum::<usize>() + chunk
        }
    }

    impl StepPlan for Recorder {
        type Scratch = ();
        fn scratch(&self) {}
        fn steps(&self) -> usize {
            self.steps
        }
        fn phases(&self) -> usize {
            self.phases
        }
        fn chunks(&self, step: usize, phase: usize) -> usize {
            self.counts[step * self.phases + phase]
        }
        fn run(&self, step: usize, phase: usize, chunk: usize, _: &mut ()) -> Flow {
            let p = step * self.phases + phase;
            for earlier in 0..p {
                let done = self.finished[earlier].load(Ordering::SeqCst) as usize;
                if done != self.counts[earlier] {
                    self.violations.lock().unwrap().push(format!(
                        "({step},{phase},{chunk}) started with phase {earlier} at {done}/{}",
                        self.counts[earlier]
                    ));
                }
            }
            // Give other workers a chance to run into an ordering bug.
            std::thread::yield_now();
            self.runs[self.index(step, phase, chunk)].fetch_add(1, Ordering::SeqCst);
            self.finished[p].fetch_add(1, Ordering::SeqCst);
            if self.abandon_at == Some((step, phase, chunk)) {
                Flow::Abandon
            } else {
                Flow::Continue
            }
        }
    }

    fn pool(threads: usize) -> rayon::ThreadPool {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap()
    }

    #[test]
    fn every_chunk_runs_once_in_phase_order() {
        for workers in [1, 2, 3, 5, 8] {
            let plan = Recorder::new(40, 3, None);
            assert!(
                run(
                    &plan,
                    workers,
                    &pool(workers),
                    &Placement::unpinned(workers)
                )
                .finished
            );
            let v = plan.violations.lock().unwrap();
            assert!(
                v.is_empty(),
                "{workers} workers: {:?}",
                &v[..v.len().min(3)]
            );
            for (i, r) in plan.runs.iter().enumerate() {
                assert_eq!(r.load(Ordering::SeqCst), 1, "{workers} workers: chunk {i}");
            }
        }
    }

    #[test]
    fn abandon_stops_later_phases() {
        for workers in [1, 2, 4] {
            let plan = Recorder::new(10, 2, Some((3, 1, 0)));
            assert!(
                !run(
                    &plan,
                    workers,
                    &pool(workers),
                    &Placement::unpinned(workers)
                )
                .finished
            );
            // Nothing of step 4 or later ran.
            let first_later = plan.index(4, 0, 0);
            assert!(
                plan.runs[first_later..]
                    .iter()
                    .all(|r| r.load(Ordering::SeqCst) == 0),
                "{workers} workers ran chunks after the abandon"
            );
            assert_eq!(plan.runs[plan.index(3, 1, 0)].load(Ordering::SeqCst), 1);
        }
    }

    struct Panics;
    impl StepPlan for Panics {
        type Scratch = ();
        fn scratch(&self) {}
        fn steps(&self) -> usize {
            50
        }
        fn phases(&self) -> usize {
            2
        }
        fn chunks(&self, _: usize, _: usize) -> usize {
            3
        }
        fn run(&self, step: usize, _: usize, chunk: usize, _: &mut ()) -> Flow {
            if step == 7 && chunk == 1 {
                panic!("chunk failure");
            }
            Flow::Continue
        }
    }

    #[test]
    fn a_panicking_chunk_reaches_the_caller_and_nobody_hangs() {
        for workers in [1, 2, 4] {
            let pool = pool(workers);
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                run(&Panics, workers, &pool, &Placement::unpinned(workers))
            }));
            assert!(r.is_err(), "{workers} workers: the panic was swallowed");
        }
    }

    /// Chunk (30, 0, 1) stands for a worker that loses its CPU: once
    /// `threads_wanted` different workers have started, it sleeps 200 ms
    /// (far beyond the patience, so that a waiter notices even on a machine
    /// so loaded that the waiter itself runs late).
    struct Stalls {
        threads_wanted: usize,
        threads: Mutex<std::collections::HashSet<std::thread::ThreadId>>,
        runs: Vec<AtomicU32>,
    }

    impl Stalls {
        fn new(threads_wanted: usize) -> Self {
            Self {
                threads_wanted,
                threads: Mutex::new(Default::default()),
                runs: (0..200 * 2 * 4).map(|_| AtomicU32::new(0)).collect(),
            }
        }
    }

    impl StepPlan for Stalls {
        type Scratch = ();
        /// Called once by each worker as it starts.
        fn scratch(&self) {
            let me = std::thread::current().id();
            self.threads.lock().unwrap().insert(me);
        }
        fn steps(&self) -> usize {
            200
        }
        fn phases(&self) -> usize {
            2
        }
        fn chunks(&self, _: usize, _: usize) -> usize {
            4
        }
        fn run(&self, step: usize, phase: usize, chunk: usize, _: &mut ()) -> Flow {
            if (step, phase, chunk) == (30, 0, 1) {
                // Wait (up to 10 s) for the other workers to show up, so
                // that they are there to notice the stall.
                let t = std::time::Instant::now();
                while self.threads.lock().unwrap().len() < self.threads_wanted
                    && t.elapsed().as_secs() < 10
                {
                    std::thread::yield_now();
                }
                std::thread::sleep(std::time::Duration::from_millis(200));
            }
            self.runs[(step * 2 + phase) * 4 + chunk].fetch_add(1, Ordering::SeqCst);
            Flow::Continue
        }
    }

    #[test]
    fn a_worker_stuck_in_a_chunk_is_benched_and_nothing_is_lost() {
        for workers in [1, 2, 3] {
            let plan = Stalls::new(workers);
            // The pool's threads register with the placement, so that
            // benching moves them too.
            let placement = std::sync::Arc::new(Placement::unpinned(workers));
            let p = placement.clone();
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(workers)
                .start_handler(move |i| p.start_thread(i))
                .build()
                .unwrap();
            let outcome = run(&plan, workers, &pool, &placement);
            assert!(outcome.finished);
            if workers == 1 {
                assert_eq!(outcome.benchings, 0, "one worker has nobody to bench");
            } else {
                assert!(
                    outcome.benchings >= 1,
                    "{workers} workers: the 200 ms chunk held the others up without a benching"
                );
            }
            for (i, r) in plan.runs.iter().enumerate() {
                assert_eq!(r.load(Ordering::SeqCst), 1, "{workers} workers: chunk {i}");
            }
        }
    }
}
