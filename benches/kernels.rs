//! Throughput of every kernel on every path this CPU has, at batch 100 and
//! 1000, on MNIST-shaped data (K = 784, C = 10).
//!
//! Criterion reports `elem/s`; the element counts are chosen so that reads
//! directly in the wanted unit:
//! * `forward/*`, `weight_grad/*`: one element = one flop (2·B·K·C per call),
//!   so `Gelem/s` = GFLOP/s;
//! * `softmax_ce/*`: one element = one row (`block/PATH`: the fused
//!   path's vectorised version; `row/gemm`: the per-row one the gemm path uses);
//! * `epoch/*`, `eval/*` (benches/training.rs): one element = one sample.
//!
//! ```text
//! cargo bench --bench kernels
//! ```

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use idx_softmax::data::U8_SCALE;
use idx_softmax::kernels::{fused, gemm, softmax_ce, KernelPath};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

const K: usize = 784;
const C: usize = 10;
const N: usize = 60_000;

struct Inputs {
    images: Vec<u8>,
    rows: Vec<u32>,
    x: Vec<f32>,
    wt: Vec<f32>,
    bias: Vec<f32>,
    g: Vec<f32>,
}

/// MNIST-like density: ~19% non-zero pixels, blank borders.
fn inputs(batch: usize) -> Inputs {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(1);
    let mut images = vec![0u8; N * K];
    for row in images.chunks_exact_mut(K) {
        for (i, p) in row.iter_mut().enumerate() {
            let (y, x) = (i / 28, i % 28);
            if (5..23).contains(&y) && (6..22).contains(&x) && rng.random_bool(0.66) {
                *p = rng.random();
            }
        }
    }
    let rows: Vec<u32> = (0..batch).map(|_| rng.random_range(0..N as u32)).collect();
    let mut x = vec![0.0f32; batch * K];
    for (xr, &r) in x.chunks_exact_mut(K).zip(&rows) {
        idx_softmax::data::pixels::u8_to_f32(&images[r as usize * K..(r as usize + 1) * K], xr);
    }
    Inputs {
        images,
        rows,
        x,
        wt: (0..C * K).map(|_| rng.random_range(-0.05..0.05)).collect(),
        bias: vec![0.0; C],
        g: (0..batch * C)
            .map(|_| rng.random_range(-0.01..0.01))
            .collect(),
    }
}

fn bench_products(c: &mut Criterion) {
    for batch in [100, 1000] {
        let inp = inputs(batch);
        let flops = (2 * batch * K * C) as u64;
        let mut group = c.benchmark_group("forward");
        group.throughput(Throughput::Elements(flops));
        for path in KernelPath::available() {
            let mut logits = vec![0.0f32; batch * C];
            group.bench_function(BenchmarkId::new(path.name(), batch), |b| {
                b.iter(|| {
                    if path.is_fused() {
                        fused::forward(
                            path,
                            &inp.images,
                            K,
                            &inp.rows,
                            &inp.wt,
                            &inp.bias,
                            U8_SCALE,
                            &mut logits,
                        );
                    } else {
                        gemm::forward(&inp.x, &inp.wt, &inp.bias, &mut logits, batch, K);
                    }
                    black_box(&logits);
                })
            });
        }
        group.finish();

        let mut group = c.benchmark_group("weight_grad");
        group.throughput(Throughput::Elements(flops));
        for path in KernelPath::available() {
            let mut dwt = vec![0.0f32; C * K];
            group.bench_function(BenchmarkId::new(path.name(), batch), |b| {
                b.iter(|| {
                    if path.is_fused() {
                        fused::weight_grad(
                            path,
                            &inp.images,
                            K,
                            &inp.rows,
                            &inp.g,
                            C,
                            0,
                            K,
                            &mut dwt,
                        );
                    } else {
                        gemm::weight_grad(&inp.x, &inp.g, &mut dwt, batch, K, C);
                    }
                    black_box(&dwt);
                })
            });
        }
        group.finish();

        let mut group = c.benchmark_group("softmax_ce");
        group.throughput(Throughput::Elements(batch as u64));
        let labels: Vec<u32> = (0..batch as u32).map(|i| i % C as u32).collect();
        let logits: Vec<f32> = inp.g.iter().map(|v| v * 300.0).collect();
        let (mut g, mut losses) = (vec![0.0f32; batch * C], vec![0.0f32; batch]);
        for path in KernelPath::available().into_iter().filter(|p| p.is_fused()) {
            group.bench_function(
                BenchmarkId::new(format!("block/{}", path.name()), batch),
                |b| {
                    b.iter(|| {
                        softmax_ce::block(
                            path,
                            &logits,
                            C,
                            |i| labels[i] as usize,
                            1.0 / batch as f32,
                            &mut g,
                            &mut losses,
                        );
                        black_box(&g);
                    })
                },
            );
        }
        group.finish();
    }
}

criterion_group!(benches, bench_products);
criterion_main!(benches);
