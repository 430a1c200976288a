//! The epoch's shuffle: exactly rand's `SliceRandom::shuffle` (the same
//! permutation, and the RNG left in the same state), with the far end of
//! each swap loaded ahead.
//!
//! Why not call rand's: its Fisher–Yates swaps position `i` with a random
//! position `j ≤ i`, and over a training order of millions of samples
//! (32 MB for MNIST8M's 8.1M) each `order[j]` is a cache miss and a page
//! walk that the core waits on, one after another: a tenth of a softmax
//! epoch over such a set. The positions `j` depend only on the RNG, never
//! on the data, so they can be drawn [`AHEAD`] swaps early and their lines
//! requested while the earlier swaps run. The swaps themselves still run
//! in order, so the permutation is the same.
//!
//! What it reproduces (rand 0.9, `seq/slice.rs` and
//! `seq/increasing_uniform.rs`): a full shuffle of a slice shorter than
//! `u32::MAX` is `partial_shuffle(rng, len)`, which for `i` in `0..len`
//! swaps `i` with a uniform index in `[0, i]` drawn by `IncreasingUniform`.
//! That draws one `random_range(..bound)` for several indices at once,
//! where `bound = (n+1)(n+2)…(n+r)` is the longest such product that fits
//! a u32, and takes the indices out of it by mixed-radix digits. The test
//! below compares with rand's own shuffle over many lengths and seeds, so
//! a rand release that changes its algorithm fails it.

use rand::seq::SliceRandom;
use rand::Rng;

/// How many swaps ahead each swap's far end is requested: enough for
/// the misses of a DRAM access and a page walk to overlap, and few
/// enough that the lines are still in L1 when their swap comes.
const AHEAD: usize = 16;

/// Shuffles `order` in place: the same permutation as
/// `order.shuffle(rng)`, leaving `rng` in the same state.
pub fn shuffle<R: Rng + ?Sized>(order: &mut [u32], rng: &mut R) {
    let n = order.len();
    if n >= u32::MAX as usize {
        // rand takes another path (u64 draws) there; orders that long
        // cannot be indexed by a u32 sample index anyway.
        order.shuffle(rng);
        return;
    }
    if n <= 1 {
        return;
    }
    let mut draw = IncreasingUniform::new();
    // ring[i % AHEAD] holds the far end of swap i, drawn AHEAD swaps early.
    let mut ring = [0u32; AHEAD];
    for (i, slot) in ring.iter_mut().enumerate().take(n) {
        *slot = draw.next_index(rng);
        prefetch(order, *slot);
        debug_assert!(*slot as usize <= i);
    }
    for i in 0..n {
        let j = ring[i % AHEAD];
        if i + AHEAD < n {
            let far = draw.next_index(rng);
            ring[i % AHEAD] = far;
            prefetch(order, far);
        }
        order.swap(i, j as usize);
    }
}

/// Requests the line of `order[j]` into L1. A hint only.
#[inline(always)]
fn prefetch(order: &[u32], j: u32) {
    if let Some(x) = order.get(j as usize) {
        crate::kernels::fused::prefetch_line::<_, true>(x);
    }
}

/// rand's `IncreasingUniform` started at 0: each call returns a uniform
/// index in `[0, n]` and then increments `n`.
struct IncreasingUniform {
    /// The upper end of the next index's range, less one.
    n: u32,
    /// A uniform number in `[0, (n+1)(n+2)…(n+remaining))`.
    chunk: u32,
    /// Indices still to take out of `chunk`.
    remaining: u8,
}

impl IncreasingUniform {
    fn new() -> Self {
        // The first index lies in [0, 0]: no draw is needed for it.
        Self {
            n: 0,
            chunk: 0,
            remaining: 1,
        }
    }

    #[inline]
    fn next_index<R: Rng + ?Sized>(&mut self, rng: &mut R) -> u32 {
        let next_n = self.n + 1;
        let remaining = match self.remaining.checked_sub(1) {
            Some(r) => r,
            None => {
                let (bound, count) = bound_u32(next_n);
                self.chunk = rng.random_range(..bound);
                count - 1
            }
        };
        let index = if remaining == 0 {
            self.chunk
        } else {
            let r = self.chunk % next_n;
            self.chunk /= next_n;
            r
        };
        self.remaining = remaining;
        self.n = next_n;
        index
    }
}

/// `(m (m+1) … (m+count−1), count)` for the largest `count` whose product
/// fits a u32.
fn bound_u32(m: u32) -> (u32, u8) {
    let mut product = m;
    let mut current = m + 1;
    while let Some(p) = product.checked_mul(current) {
        product = p;
        current += 1;
    }
    (product, (current - m) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngCore, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    /// The same permutation and the same RNG state after it as rand's own
    /// shuffle, for lengths around every chunk boundary and many seeds.
    #[test]
    fn matches_rands_shuffle() {
        let lengths = [
            0, 1, 2, 3, 4, 5, 7, 12, 13, 14, 15, 16, 17, 31, 33, 100, 255, 1000, 1626, 1627, 1628,
            65_535, 65_536, 65_537, 70_001,
        ];
        for &len in &lengths {
            for seed in 0..6u64 {
                let mut ours: Vec<u32> = (0..len as u32).collect();
                let mut theirs = ours.clone();
                let mut rng_ours = Xoshiro256PlusPlus::seed_from_u64(seed);
                let mut rng_theirs = rng_ours.clone();
                shuffle(&mut ours, &mut rng_ours);
                theirs.shuffle(&mut rng_theirs);
                assert_eq!(ours, theirs, "len {len}, seed {seed}");
                assert_eq!(rng_ours.next_u64(), rng_theirs.next_u64(), "len {len}");
            }
        }
    }

    /// Repeated shuffles of one order (the epochs of a run) stay equal.
    #[test]
    fn successive_epochs_match() {
        let mut ours: Vec<u32> = (0..60_000).collect();
        let mut theirs = ours.clone();
        let mut rng_ours = Xoshiro256PlusPlus::seed_from_u64(42);
        let mut rng_theirs = rng_ours.clone();
        for _ in 0..3 {
            shuffle(&mut ours, &mut rng_ours);
            theirs.shuffle(&mut rng_theirs);
        }
        assert_eq!(ours, theirs);
    }

    #[test]
    fn bound_is_the_longest_product_that_fits() {
        // 2·3·…·12 = 479,001,600 fits; ·13 does not.
        assert_eq!(bound_u32(2), (479_001_600, 11));
        assert_eq!(bound_u32(65_535), (65_535 * 65_536, 2));
        assert_eq!(bound_u32(65_536), (65_536, 1));
    }
}
