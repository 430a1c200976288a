//! Throughput of every kernel on every path this CPU has, at batch 100 and
//! 1000, on MNIST-shaped data (K = 784, C = 10).
//!
//! Criterion reports `elem/s`; the element counts are chosen so that reads
//! directly in the wanted unit:
//! * `forward/*`, `weight_grad/*`: one element = one flop (2·B·K·C per call),
//!   so `Gelem/s` = GFLOP/s;
//! * `softmax_ce/*`: one element = one row (`block/PATH`: the fused
//!   path's vectorised version; `row/gemm`: the per-row one the gemm path uses);
//! * `conv1_*`, `conv2_*`: the two conv layers of the LeNet-style network
//!   (1 → 6 channels at 28 × 28 and 6 → 16 at 14 × 14, 5 × 5 kernels) at
//!   n = 25 and 100 samples; one element = one flop, so `Gelem/s` =
//!   GFLOP/s (`forward`, `input_grad`, `weight_grad` cost the same flops);
//! * `pool*`: MaxPool2d(2) of those layers' outputs (`relu_forward_per_sample`,
//!   `backward_routed`: as training runs it behind a conv); one element = one sample;
//! * `epoch/*`, `eval/*` (benches/training.rs): one element = one sample.
//!
//! ```text
//! cargo bench --bench kernels
//! ```

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use idx_softmax::data::U8_SCALE;
use idx_softmax::kernels::conv::{self, ConvGeom, PoolGeom};
use idx_softmax::kernels::{fused, gemm, pool, softmax_ce, KernelPath};
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

fn random(rng: &mut Xoshiro256PlusPlus, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-1.0..1.0)).collect()
}

fn bench_conv(c: &mut Criterion) {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(2);
    let layers = [
        ("conv1", ConvGeom::new(1, 6, 28, 28, 5)),
        ("conv2", ConvGeom::new(6, 16, 14, 14, 5)),
    ];
    for (name, g) in layers {
        for n in [25, 100] {
            let inp = random(&mut rng, n * g.in_len());
            let d_out = random(&mut rng, n * g.out_len());
            let wt = random(&mut rng, g.weight_len());
            let bias = random(&mut rng, g.c_out);
            let flops = g.flops_per_sample() * n as u64;
            let mut scratch = Vec::new();

            let mut group = c.benchmark_group(format!("{name}_forward"));
            group.throughput(Throughput::Elements(flops));
            let mut out = vec![0.0f32; n * g.out_len()];
            for path in KernelPath::available() {
                group.bench_function(BenchmarkId::new(path.name(), n), |b| {
                    b.iter(|| {
                        conv::conv2d_forward(path, &mut out, &inp, &wt, &bias, n, g, &mut scratch);
                        black_box(&out);
                    })
                });
            }
            group.finish();

            // conv1's input gradient is never needed (its input is the image).
            if name != "conv1" {
                let mut group = c.benchmark_group(format!("{name}_input_grad"));
                group.throughput(Throughput::Elements(flops));
                let mut d_inp = vec![0.0f32; n * g.in_len()];
                for path in KernelPath::available() {
                    group.bench_function(BenchmarkId::new(path.name(), n), |b| {
                        b.iter(|| {
                            conv::conv2d_backward_input(
                                path,
                                &mut d_inp,
                                &d_out,
                                &wt,
                                n,
                                g,
                                &mut scratch,
                            );
                            black_box(&d_inp);
                        })
                    });
                }
                group.finish();
            }

            let mut group = c.benchmark_group(format!("{name}_weight_grad"));
            group.throughput(Throughput::Elements(flops));
            let (mut dw, mut db) = (vec![0.0f32; g.weight_len()], vec![0.0f32; g.c_out]);
            for path in KernelPath::available() {
                group.bench_function(BenchmarkId::new(path.name(), n), |b| {
                    b.iter(|| {
                        conv::conv2d_weight_grad(
                            path,
                            &mut dw,
                            &mut db,
                            &d_out,
                            &inp,
                            n,
                            g,
                            0..g.c_out,
                            &mut scratch,
                        );
                        black_box(&dw);
                    })
                });
            }
            group.finish();
        }
    }

    let n = 100;
    for (name, g) in [
        ("pool1", PoolGeom::new(6, 28, 28)),
        ("pool2", PoolGeom::new(16, 14, 14)),
    ] {
        let inp = random(&mut rng, n * g.in_len());
        let d_out = random(&mut rng, n * g.out_len());
        let mut out = vec![0.0f32; n * g.out_len()];
        let mut d_inp = vec![0.0f32; n * g.in_len()];
        let mut group = c.benchmark_group(name);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_function(BenchmarkId::new("forward", n), |b| {
            b.iter(|| {
                conv::maxpool2_forward(&mut out, &inp, n, g);
                black_box(&out);
            })
        });
        group.bench_function(BenchmarkId::new("backward", n), |b| {
            b.iter(|| {
                conv::maxpool2_backward(&mut d_inp, &d_out, &inp, n, g);
                black_box(&d_inp);
            })
        });
        // As training runs them behind a conv: the forward one sample at a
        // time (the conv's output for it is in L1), keeping the argmax,
        // and the backward from the argmax bytes.
        let mut argmax = vec![0u8; n * g.out_len()];
        let (il, ol) = (g.in_len(), g.out_len());
        group.bench_function(BenchmarkId::new("relu_forward_per_sample", n), |b| {
            b.iter(|| {
                for s in 0..n {
                    pool::relu_maxpool2_forward(
                        &mut out[s * ol..][..ol],
                        &mut argmax[s * ol..][..ol],
                        &inp[..il],
                        1,
                        g,
                    );
                }
                black_box(&out);
            })
        });
        group.bench_function(BenchmarkId::new("backward_routed", n), |b| {
            b.iter(|| {
                pool::maxpool2_backward_routed(&mut d_inp, &d_out, &argmax, n, g);
                black_box(&d_inp);
            })
        });
        group.finish();
    }
}

criterion_group!(benches, bench_products, bench_conv);
criterion_main!(benches);
