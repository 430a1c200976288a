//! A network's outputs: batch inference over samples, in fixed chunks run
//! in parallel, and the outputs for one input. Evaluation
//! ([`crate::metrics`]), `eval`, `predict`, Python and the server all
//! compute logits here.
//!
//! The chunks are fixed ([`CHUNK_ROWS`] rows), whatever the thread count,
//! and their results come back in chunk order: a reduction over them (a
//! loss sum) is the same sum on any number of threads.

use rayon::prelude::*;

use crate::data::Samples;
use crate::kernels::KernelPath;
use crate::nn::Network;

/// Rows per inference task.
pub const CHUNK_ROWS: usize = 250;

/// How many of the most probable classes a prediction lists by default.
pub const DEFAULT_TOP: usize = 3;

/// Which samples to run.
#[derive(Clone, Copy, Debug)]
pub enum Rows<'r> {
    /// Every sample, in order.
    All,
    /// These sample indices, in this order.
    Only(&'r [u32]),
}

impl Rows<'_> {
    /// How many rows, of a set of `n` samples.
    pub fn len(&self, n: usize) -> usize {
        match self {
            Self::All => n,
            Self::Only(r) => r.len(),
        }
    }

    /// The indices of chunk `chunk` into `out`.
    fn chunk(&self, chunk: usize, n: usize, out: &mut Vec<u32>) {
        out.clear();
        let start = chunk * CHUNK_ROWS;
        let end = ((chunk + 1) * CHUNK_ROWS).min(self.len(n));
        match self {
            Self::All => out.extend(start as u32..end as u32),
            Self::Only(r) => out.extend_from_slice(&r[start..end]),
        }
    }
}

/// Runs `net` on `rows` of `samples` (on kernel `path`), chunk by chunk in
/// parallel on the current rayon pool, and returns `visit(rows, logits)`
/// for each chunk in chunk order: `rows` the chunk's sample indices,
/// `logits` their `rows.len() × C` logits.
pub fn map_chunks<T: Send>(
    net: &Network,
    samples: &Samples<'_>,
    rows: Rows<'_>,
    path: KernelPath,
    visit: impl Fn(&[u32], &[f32]) -> T + Sync,
) -> Vec<T> {
    let c = net.classes();
    let chunks = rows.len(samples.len()).div_ceil(CHUNK_ROWS);
    (0..chunks)
        .into_par_iter()
        .map_init(
            || (Vec::new(), Vec::new(), Vec::new()),
            |(idx, logits, ws): &mut (Vec<u32>, Vec<f32>, Vec<f32>), chunk| {
                rows.chunk(chunk, samples.len(), idx);
                logits.resize(idx.len() * c, 0.0);
                net.forward_rows(samples, idx, path, ws, logits);
                visit(idx, logits)
            },
        )
        .collect()
}

/// The logits (`rows × C`, row-major) of `rows` of `samples`, on the
/// current rayon pool.
pub fn logits(net: &Network, samples: &Samples<'_>, rows: Rows<'_>, path: KernelPath) -> Vec<f32> {
    map_chunks(net, samples, rows, path, |_, z| z.to_vec()).concat()
}

/// The network's logits for one input of `net.features()` features
/// (scaled as the training data is: u8 × [`crate::data::U8_SCALE`]), on
/// kernel `path` (the conv layers' kernels; the linear layers run on sgemm).
///
/// # Panics
///
/// If `features.len()` is not the network's feature count.
pub fn logits_one(net: &Network, path: KernelPath, features: &[f32]) -> Vec<f32> {
    assert_eq!(features.len(), net.features(), "feature count");
    let mut out = vec![0.0; net.classes()];
    net.forward_f32(path, features, 1, &mut Vec::new(), &mut out);
    out
}

/// A rayon pool of `threads` threads, for inference outside a run.
pub fn thread_pool(threads: usize) -> Result<rayon::ThreadPool, crate::run::TrainError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| {
            crate::run::TrainError::Threads(format!("cannot start {threads} threads: {e}"))
        })
}

/// Softmax of `z`, in f64: evaluation's own
/// ([`crate::kernels::softmax_ce::probabilities`]).
pub use crate::kernels::softmax_ce::probabilities as softmax;

/// Class indices by decreasing score; ties keep the lower class first, so
/// the first entry is the argmax evaluation counts.
pub fn ranked(scores: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    idx
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{LabelValues, Pixels};
    use std::borrow::Cow;

    #[test]
    fn softmax_and_ranking() {
        let p = softmax(&[1.0, 3.0, 3.0, -1000.0]);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(ranked(&p), [1, 2, 0, 3]);
        assert_eq!(p[3], 0.0);
    }

    #[test]
    fn one_input_is_the_networks_forward_pass() {
        use rand::SeedableRng;
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(3);
        let net = Network::init(&[4, 3, 2], &mut rng).unwrap();
        let x = [0.5, -1.0, 0.25, 2.0];
        let mut want = vec![0.0; 2];
        net.forward_f32(KernelPath::Gemm, &x, 1, &mut Vec::new(), &mut want);
        assert_eq!(logits_one(&net, KernelPath::Gemm, &x), want);
    }

    #[test]
    fn batches_are_the_rows_own_outputs_in_order() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_xoshiro::Xoshiro256PlusPlus::seed_from_u64(5);
        let net = Network::init(&[3, 4, 2], &mut rng).unwrap();
        let n = 2 * CHUNK_ROWS + 7;
        let x: Vec<f32> = (0..n * 3).map(|_| rng.random_range(-1.0..1.0)).collect();
        let y = vec![0u8; n];
        let s = Samples::new(
            Pixels::F32(Cow::Borrowed(&x)),
            LabelValues::U8(&y),
            3,
            2,
            vec![],
        )
        .unwrap();
        let all = logits(&net, &s, Rows::All, KernelPath::Gemm);
        assert_eq!(all.len(), n * 2);
        for i in [0, CHUNK_ROWS, n - 1] {
            assert_eq!(
                &all[i * 2..i * 2 + 2],
                logits_one(&net, KernelPath::Gemm, &x[i * 3..i * 3 + 3])
            );
        }
        let rows: Vec<u32> = vec![n as u32 - 1, 0];
        let some = logits(&net, &s, Rows::Only(&rows), KernelPath::Gemm);
        assert_eq!(&some[..2], &all[(n - 1) * 2..]);
        assert_eq!(&some[2..], &all[..2]);
    }
}
