//! How the register blocks of the fused kernels were chosen: times
//! candidate block shapes on MNIST-shaped data (random rows of a 47 MB u8
//! matrix, ~1/3 non-zero), interleaved so machine noise hits every variant
//! alike, and prints the median GFLOP/s of each. Run it with
//!
//! ```text
//! cargo run --release --features tuning --example tune_blocks
//! ```
//!
//! On the development machine (AMD EPYC Zen 4) the winners were 3 rows × 5
//! classes for the AVX-512 forward pass and 4 vectors × 5 classes for its
//! gradient; the 2 × 10 and 4 × 5 forward blocks made LLVM spill
//! accumulators to the stack.
//!
//! A child of `fused`, so that it can time the private generic kernels;
//! built only with the `tuning` feature.
use super::*;

const N: usize = 60_000;
const K: usize = 784;
const C: usize = 10;
const B: usize = 100;

/// 40 interleaved rounds of 60 batches per variant; `run(f, rows)` runs
/// variant `f` on one batch.
fn time_variants<F: Copy>(variants: &[(&str, F)], run: impl Fn(F, &[u32])) {
    let mut times = vec![Vec::new(); variants.len()];
    for round in 0..40u64 {
        for (i, &(_, f)) in variants.iter().enumerate() {
            let t = std::time::Instant::now();
            for step in 0..60u64 {
                let rows: Vec<u32> = (0..B as u64)
                    .map(|j| ((j * 7919 + step * 104_729 + round * 31) % N as u64) as u32)
                    .collect();
                run(f, &rows);
            }
            times[i].push(t.elapsed().as_secs_f64());
        }
    }
    for ((name, _), t) in variants.iter().zip(&mut times) {
        t.sort_by(|a, b| a.partial_cmp(b).unwrap());
        println!(
            "{name}: {:.1} GFLOP/s",
            2.0 * (60 * B * K * C) as f64 / t[t.len() / 2] / 1e9
        );
    }
}

fn pixels() -> Vec<u8> {
    let mut s = 1u64;
    (0..N * K)
        .map(|i| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            if (7..22).contains(&(i % 28)) && !s.is_multiple_of(3) {
                s as u8
            } else {
                0
            }
        })
        .collect()
}

macro_rules! forward_variant {
    ($isa:literal, $v:ty, $r:literal, $g:literal) => {{
        #[target_feature(enable = $isa)]
        /// # Safety
        /// The CPU must have the ISA; every row index must be below N.
        unsafe fn f(images: &[u8], rows: &[u32], wt: &[f32], bias: &[f32], out: &mut [f32]) {
            // SAFETY: the caller guarantees the ISA and the row indices.
            unsafe { forward_rows::<u8, $v, $r, $g>(images, K, rows, &[], wt, bias, 1.0, out) }
        }
        f
    }};
}
macro_rules! grad_variant {
    ($isa:literal, $v:ty, $nv:literal, $g:literal) => {{
        #[target_feature(enable = $isa)]
        /// # Safety
        /// The CPU must have the ISA; every row index must be below N.
        unsafe fn f(images: &[u8], rows: &[u32], g: &[f32], out: &mut [f32]) {
            // SAFETY: the caller guarantees the ISA and the row indices.
            unsafe {
                weight_grad_cols::<u8, $v, $nv, $g>(images, K, rows, g, C, 0, K, out, Start::Zero)
            }
        }
        f
    }};
}

/// Times the forward-pass block shapes and prints their GFLOP/s.
pub fn forward_blocks() {
    if !KernelPath::Avx512.is_available() {
        println!("forward blocks: this CPU has no AVX-512F; nothing to time");
        return;
    }
    let images = pixels();
    let wt: Vec<f32> = (0..C * K).map(|i| (i % 97) as f32 * 1e-4).collect();
    let bias = vec![0.0f32; C];
    let out = std::cell::RefCell::new(vec![0.0f32; B * C]);
    type F = unsafe fn(&[u8], &[u32], &[f32], &[f32], &mut [f32]);
    let candidates: [(&str, F); 7] = [
        ("avx512 1×10", forward_variant!("avx512f", Avx512, 1, 10)),
        ("avx512 2×10", forward_variant!("avx512f", Avx512, 2, 10)),
        ("avx512 2×5", forward_variant!("avx512f", Avx512, 2, 5)),
        ("avx512 3×5", forward_variant!("avx512f", Avx512, 3, 5)),
        ("avx512 4×5", forward_variant!("avx512f", Avx512, 4, 5)),
        ("avx2 1×10", forward_variant!("avx2,fma", Avx2, 1, 10)),
        ("avx2 2×5", forward_variant!("avx2,fma", Avx2, 2, 5)),
    ];
    // SAFETY: AVX-512F (and so AVX2 + FMA) checked above; rows < N.
    time_variants(&candidates, |f, rows| unsafe {
        f(&images, rows, &wt, &bias, &mut out.borrow_mut())
    });
}

/// Times the gradient block shapes and prints their GFLOP/s.
pub fn gradient_blocks() {
    if !KernelPath::Avx512.is_available() {
        println!("gradient blocks: this CPU has no AVX-512F; nothing to time");
        return;
    }
    let images = pixels();
    let g: Vec<f32> = (0..B * C).map(|i| (i % 89) as f32 * 1e-4).collect();
    let out = std::cell::RefCell::new(vec![0.0f32; C * K]);
    type F = unsafe fn(&[u8], &[u32], &[f32], &mut [f32]);
    let candidates: [(&str, F); 7] = [
        (
            "avx512 2 vectors × 10",
            grad_variant!("avx512f", Avx512, 2, 10),
        ),
        ("avx512 1 × 10", grad_variant!("avx512f", Avx512, 1, 10)),
        ("avx512 3 × 5", grad_variant!("avx512f", Avx512, 3, 5)),
        ("avx512 4 × 5", grad_variant!("avx512f", Avx512, 4, 5)),
        ("avx512 2 × 5", grad_variant!("avx512f", Avx512, 2, 5)),
        ("avx2 1 × 10", grad_variant!("avx2,fma", Avx2, 1, 10)),
        ("avx2 2 × 5", grad_variant!("avx2,fma", Avx2, 2, 5)),
    ];
    // SAFETY: AVX-512F (and so AVX2 + FMA) checked above; rows < N.
    time_variants(&candidates, |f, rows| unsafe {
        f(&images, rows, &g, &mut out.borrow_mut())
    });
}
