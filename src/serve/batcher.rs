//! Dynamic batching: the samples of concurrent requests go through the
//! network in one forward pass.
//!
//! Requests wait in a bounded queue ([`super::Config::queue`] requests; a
//! request that finds it full is refused at once, and the server answers
//! 503). One thread, the batcher, takes the oldest request and every
//! request already waiting. Then, while other requests are on their way
//! (an [`Arrival`] is held for each from the moment its handler starts
//! until it is queued), it waits for them, until the oldest has waited
//! [`super::Config::batch_wait`] or the batch holds
//! [`super::Config::max_batch`] rows. A request is never split: one larger
//! than that runs alone. A lone request is not kept waiting: with nothing
//! on its way, the batch runs at once. The batch's rows go through
//! [`crate::infer::logits`] on the server's thread pool, and each request
//! gets its own rows' logits back, with the size of the batch it ran in.
//!
//! A request whose client has gone before its batch starts is dropped
//! unrun. A forward pass that panics fails its batch's requests (the
//! server answers 500) and the batcher goes on with the next.

use std::borrow::Cow;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::metrics::Metrics;
use crate::data::{LabelValues, Pixels, Samples};
use crate::infer;
use crate::kernels::KernelPath;
use crate::nn::Network;

/// A request's logits, and the size of the forward pass it ran in.
#[derive(Debug)]
pub struct Output {
    /// `rows × classes` logits, row-major.
    pub logits: Vec<f32>,
    /// The rows of the whole forward pass.
    pub batch_rows: usize,
    /// The requests batched into it.
    pub batch_requests: usize,
}

/// Why a request got no logits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// The queue is full: try again later.
    Full,
    /// The server is shutting down.
    Closed,
    /// The forward pass failed (the message says why).
    Failed(String),
}

struct Job {
    /// `rows × features` inputs.
    x: Vec<f32>,
    rows: usize,
    queued: Instant,
    reply: oneshot::Sender<Result<Output, BatchError>>,
}

enum Msg {
    Job(Job),
    Stop,
}

/// What the batcher needs to run the network.
pub struct Model {
    pub network: Network,
    /// The per-sample shape ([`crate::data::Samples`]'s; empty: flat).
    pub sample_shape: Vec<usize>,
    pub kernel: KernelPath,
}

/// How batches are formed.
#[derive(Clone, Copy, Debug)]
pub struct Policy {
    pub max_batch: usize,
    pub batch_wait: Duration,
    pub queue: usize,
}

/// The batcher thread and its queue.
pub struct Batcher {
    tx: SyncSender<Msg>,
    thread: Mutex<Option<JoinHandle<()>>>,
    features: usize,
    counts: Arc<Counts>,
}

/// Requests on their way and in the queue.
#[derive(Debug, Default)]
struct Counts {
    /// Announced ([`Batcher::arrival`]) and not yet queued.
    arriving: AtomicUsize,
    /// In the queue, not yet taken by the batcher.
    queued: AtomicUsize,
    /// Rows of the forward pass under way (0: none).
    running: AtomicUsize,
}

/// A request on its way to the queue, from the start of its handler until
/// it is queued or fails: while any is held, a batch waits for company.
pub struct Arrival(Arc<Counts>);

impl Drop for Arrival {
    fn drop(&mut self) {
        self.0.arriving.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Batcher {
    /// Starts the batcher thread, running forward passes on `pool`.
    pub fn start(
        model: Model,
        policy: Policy,
        pool: rayon::ThreadPool,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(policy.queue);
        let features = model.network.features();
        let counts = Arc::new(Counts::default());
        let shared = counts.clone();
        let thread = std::thread::Builder::new()
            .name("idx-softmax-batcher".into())
            .spawn(move || pool.install(move || run(&rx, &model, policy, &metrics, &shared)))?;
        Ok(Self {
            tx,
            thread: Mutex::new(Some(thread)),
            features,
            counts,
        })
    }

    /// Announces a request on its way: batches wait for it (up to the
    /// batch wait) until the [`Arrival`] is dropped, which
    /// [`Batcher::submit`] does once the request is queued.
    pub fn arrival(&self) -> Arrival {
        self.counts.arriving.fetch_add(1, Ordering::SeqCst);
        Arrival(self.counts.clone())
    }

    /// Requests announced and not yet queued.
    pub fn arriving(&self) -> usize {
        self.counts.arriving.load(Ordering::SeqCst)
    }

    /// Requests in the queue, waiting for a forward pass.
    pub fn queued(&self) -> usize {
        self.counts.queued.load(Ordering::SeqCst)
    }

    /// Rows of the forward pass under way (0: none).
    pub fn running(&self) -> usize {
        self.counts.running.load(Ordering::SeqCst)
    }

    /// Queues `x` (`rows × features` inputs, every value finite) for the
    /// next forward pass; the receiver gets its logits. Refused at once
    /// when the queue is full or the batcher has stopped.
    pub fn submit(
        &self,
        x: Vec<f32>,
        rows: usize,
        arrival: Option<Arrival>,
    ) -> Result<oneshot::Receiver<Result<Output, BatchError>>, BatchError> {
        debug_assert_eq!(x.len(), rows * self.features);
        let (reply, rx) = oneshot::channel();
        let job = Job {
            x,
            rows,
            queued: Instant::now(),
            reply,
        };
        // No longer on its way once sent. Dropped before the send: the
        // batcher may then start a pass a moment before this request is
        // queued (it runs in the next one), but never waits for a request
        // it already holds.
        drop(arrival);
        // Counted before the send, so that the batcher never takes a job
        // it has not counted.
        self.counts.queued.fetch_add(1, Ordering::SeqCst);
        let sent = self.tx.try_send(Msg::Job(job));
        if sent.is_err() {
            self.counts.queued.fetch_sub(1, Ordering::SeqCst);
        }
        match sent {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => Err(BatchError::Full),
            Err(TrySendError::Disconnected(_)) => Err(BatchError::Closed),
        }
    }

    /// Runs what is queued, then stops the thread and waits for it.
    pub fn stop(&self) {
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(t) = thread {
            // A blocking send: it waits for room behind the queued
            // requests, which all run first. The thread may be gone
            // already (then the send fails, harmlessly).
            let _ = self.tx.send(Msg::Stop);
            let _ = t.join();
        }
    }
}

impl Drop for Batcher {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The batcher's loop: until [`Msg::Stop`] or every sender is gone.
fn run(rx: &Receiver<Msg>, model: &Model, policy: Policy, metrics: &Metrics, counts: &Counts) {
    let take = |job: Job| {
        counts.queued.fetch_sub(1, Ordering::SeqCst);
        job
    };
    let mut held: Option<Job> = None;
    loop {
        let first = match held.take() {
            Some(job) => job,
            None => match rx.recv() {
                Ok(Msg::Job(job)) => take(job),
                Ok(Msg::Stop) | Err(_) => return,
            },
        };
        let deadline = first.queued + policy.batch_wait;
        let mut rows = first.rows;
        let mut jobs = vec![first];
        let mut stop = false;
        while rows < policy.max_batch {
            let msg = match rx.try_recv() {
                Ok(m) => m,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() || counts.arriving.load(Ordering::SeqCst) == 0 {
                        break;
                    }
                    match rx.recv_timeout(left) {
                        Ok(m) => m,
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            let job = match msg {
                Msg::Job(job) => take(job),
                Msg::Stop => {
                    stop = true;
                    break;
                }
            };
            if rows + job.rows > policy.max_batch {
                held = Some(job);
                break;
            }
            rows += job.rows;
            jobs.push(job);
        }
        forward(jobs, model, metrics, counts);
        if stop {
            if let Some(job) = held.take() {
                forward(vec![job], model, metrics, counts);
            }
            // Requests queued behind the stop message (none, once the
            // server has stopped taking requests) are refused.
            while let Ok(Msg::Job(job)) = rx.try_recv() {
                let _ = take(job).reply.send(Err(BatchError::Closed));
            }
            return;
        }
    }
}

/// Runs `jobs` in one forward pass and answers each.
fn forward(mut jobs: Vec<Job>, model: &Model, metrics: &Metrics, counts: &Counts) {
    // Clients that have gone need no answer.
    jobs.retain(|j| !j.reply.is_closed());
    if jobs.is_empty() {
        return;
    }
    let rows: usize = jobs.iter().map(|j| j.rows).sum();
    let x: Cow<'_, [f32]> = if jobs.len() == 1 {
        Cow::Borrowed(&jobs[0].x)
    } else {
        Cow::Owned(jobs.iter().flat_map(|j| j.x.iter().copied()).collect())
    };
    counts.running.store(rows, Ordering::SeqCst);
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| logits(model, &x, rows)))
        .unwrap_or_else(|_| Err("the forward pass panicked".to_owned()));
    counts.running.store(0, Ordering::SeqCst);
    drop(x);
    metrics.batch(rows, jobs.len());
    let c = model.network.classes();
    let requests = jobs.len();
    let mut start = 0;
    for job in jobs {
        let answer = match &result {
            Ok(z) => Ok(Output {
                logits: z[start * c..(start + job.rows) * c].to_vec(),
                batch_rows: rows,
                batch_requests: requests,
            }),
            Err(e) => Err(BatchError::Failed(e.clone())),
        };
        start += job.rows;
        let _ = job.reply.send(answer);
    }
}

/// The logits of `rows` rows of inputs `x`, through [`infer::logits`].
fn logits(model: &Model, x: &[f32], rows: usize) -> Result<Vec<f32>, String> {
    let net = &model.network;
    let labels = vec![0u8; rows];
    let samples = Samples::new(
        Pixels::F32(Cow::Borrowed(x)),
        LabelValues::U8(&labels),
        net.features(),
        net.classes(),
        model.sample_shape.clone(),
    )
    .map_err(|e| e.to_string())?;
    Ok(infer::logits(net, &samples, infer::Rows::All, model.kernel))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn batcher(policy: Policy) -> (Batcher, Arc<Metrics>, Network) {
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(1);
        let net = Network::init(&[4, 3], &mut rng).unwrap();
        let metrics = Arc::new(Metrics::default());
        let model = Model {
            network: net.clone(),
            sample_shape: vec![],
            kernel: KernelPath::Gemm,
        };
        let pool = infer::thread_pool(1).unwrap();
        (
            Batcher::start(model, policy, pool, metrics.clone()).unwrap(),
            metrics,
            net,
        )
    }

    #[test]
    fn concurrent_requests_share_a_pass_and_get_their_own_rows() {
        let policy = Policy {
            max_batch: 64,
            batch_wait: Duration::from_millis(200),
            queue: 16,
        };
        let (b, metrics, net) = batcher(policy);
        let inputs: Vec<Vec<f32>> = (0..3)
            .map(|i| (0..8).map(|j| (i * 8 + j) as f32 / 10.0).collect())
            .collect();
        // Announced together: the first waits for the others (and for
        // one more announced, until the batch wait ends).
        let arrivals: Vec<Arrival> = inputs.iter().map(|_| b.arrival()).collect();
        let late = b.arrival();
        let rxs: Vec<_> = inputs
            .iter()
            .zip(arrivals)
            .map(|(x, a)| b.submit(x.clone(), 2, Some(a)).unwrap())
            .collect();
        drop(late);
        for (x, rx) in inputs.iter().zip(rxs) {
            let out = rx.blocking_recv().unwrap().unwrap();
            assert_eq!(out.batch_rows, 6);
            assert_eq!(out.batch_requests, 3);
            let mut want = vec![0.0; 6];
            net.forward_f32(KernelPath::Gemm, x, 2, &mut Vec::new(), &mut want);
            for (a, w) in out.logits.iter().zip(&want) {
                assert!((a - w).abs() < 1e-6, "{a} vs {w}");
            }
        }
        assert!(metrics
            .render(Default::default())
            .contains("idx_softmax_batch_rows_count 1\n"));
        b.stop();
        assert_eq!(
            b.submit(vec![0.0; 4], 1, None).unwrap_err(),
            BatchError::Closed
        );
    }

    #[test]
    fn a_full_batch_does_not_wait_and_a_big_request_runs_alone() {
        let policy = Policy {
            max_batch: 2,
            batch_wait: Duration::from_secs(30),
            queue: 16,
        };
        let (b, _, _) = batcher(policy);
        let _coming = b.arrival();
        let big = b.submit(vec![0.5; 12], 3, None).unwrap();
        let small = b.submit(vec![0.5; 4], 1, None).unwrap();
        let t = Instant::now();
        assert_eq!(big.blocking_recv().unwrap().unwrap().batch_rows, 3);
        // The small request waits for company, up to the batch wait; a
        // stop runs it at once.
        drop(b);
        assert!(t.elapsed() < Duration::from_secs(10));
        let small = small.blocking_recv();
        assert_eq!(small.unwrap().unwrap().batch_rows, 1);
    }

    #[test]
    fn a_lone_request_does_not_wait() {
        let policy = Policy {
            max_batch: 64,
            batch_wait: Duration::from_secs(30),
            queue: 16,
        };
        let (b, _, _) = batcher(policy);
        let t = Instant::now();
        let arrival = b.arrival();
        let rx = b.submit(vec![0.5; 4], 1, Some(arrival)).unwrap();
        assert_eq!(rx.blocking_recv().unwrap().unwrap().batch_rows, 1);
        assert!(t.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_full_queue_refuses() {
        let policy = Policy {
            max_batch: 1,
            batch_wait: Duration::ZERO,
            queue: 1,
        };
        let (b, _, _) = batcher(policy);
        let mut refused = 0;
        let mut rxs = Vec::new();
        for _ in 0..10_000 {
            match b.submit(vec![0.5; 4], 1, None) {
                Ok(rx) => rxs.push(rx),
                Err(BatchError::Full) => refused += 1,
                Err(e) => panic!("{e:?}"),
            }
        }
        assert!(refused > 0);
        for rx in rxs {
            assert!(rx.blocking_recv().unwrap().is_ok());
        }
    }
}
