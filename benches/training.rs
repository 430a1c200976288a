//! Whole training epochs and test-set evaluation on the bundled MNIST, per
//! kernel path, thread count and batch size, for softmax regression and for
//! a 784-256-10 MLP. Throughput is in samples/s (criterion's `elem/s`).
//!
//! ```text
//! cargo bench --bench training
//! ```

use std::path::Path;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use idx_softmax::data::{Dataset, LoadOptions};
use idx_softmax::kernels::KernelPath;
use idx_softmax::run::{TrainConfig, Trainer};

fn bench_training(c: &mut Criterion) {
    let data = Dataset::load(
        Path::new(idx_softmax::data::BUNDLED_MNIST),
        &LoadOptions::default(),
    )
    .expect("bundled MNIST");
    let train_set = data.train.samples(data.classes).expect("train samples");
    let test_set = data.test.samples(data.classes).expect("test samples");
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let thread_counts: Vec<usize> = [1, 2, cpus]
        .into_iter()
        .filter(|&t| t <= cpus)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();

    let mut group = c.benchmark_group("epoch");
    group.throughput(Throughput::Elements(train_set.len() as u64));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_millis(500));
    for path in KernelPath::available() {
        for &threads in &thread_counts {
            for batch in [100, 1000] {
                let cfg = TrainConfig {
                    threads,
                    kernel: Some(path),
                    batch_size: batch,
                    ..TrainConfig::default()
                };
                let mut trainer = Trainer::new(&train_set, None, cfg).unwrap();
                let id = BenchmarkId::new(format!("{}/threads{threads}", path.name()), batch);
                group.bench_function(id, |b| b.iter(|| trainer.train_epoch(&|_| {}).unwrap()));
            }
        }
    }
    group.finish();

    // The issue-8 workload: 784-256-10, ReLU, batch 100, SGD, at 1 and 2
    // threads, on the best path (the first layer on the fused u8 kernels)
    // and on gemm.
    let mut group = c.benchmark_group("mlp_epoch");
    group.throughput(Throughput::Elements(train_set.len() as u64));
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8))
        .warm_up_time(Duration::from_millis(500));
    let mut mlp_paths = vec![KernelPath::best()];
    if KernelPath::best() != KernelPath::Gemm {
        mlp_paths.push(KernelPath::Gemm);
    }
    for &path in &mlp_paths {
        for threads in [1, 2] {
            let cfg = TrainConfig {
                threads,
                hidden: vec![256],
                batch_size: 100,
                kernel: Some(path),
                ..TrainConfig::default()
            };
            let mut trainer = Trainer::new(&train_set, None, cfg).unwrap();
            let id = BenchmarkId::new(
                format!("784-256-10/{}", path.name()),
                format!("threads{threads}"),
            );
            group.bench_function(id, |b| b.iter(|| trainer.train_epoch(&|_| {}).unwrap()));
        }
    }
    group.finish();

    let mut group = c.benchmark_group("eval");
    group.throughput(Throughput::Elements(test_set.len() as u64));
    group.sample_size(20);
    for path in KernelPath::available() {
        for &threads in &thread_counts {
            let cfg = TrainConfig {
                threads,
                kernel: Some(path),
                ..TrainConfig::default()
            };
            let trainer = Trainer::new(&train_set, None, cfg).unwrap();
            group.bench_function(
                BenchmarkId::new(path.name(), format!("threads{threads}")),
                |b| b.iter(|| trainer.evaluate(&test_set)),
            );
        }
    }
    for &path in &mlp_paths {
        for &threads in &thread_counts {
            let cfg = TrainConfig {
                threads,
                hidden: vec![256],
                kernel: Some(path),
                ..TrainConfig::default()
            };
            let trainer = Trainer::new(&train_set, None, cfg).unwrap();
            group.bench_function(
                BenchmarkId::new(
                    format!("784-256-10/{}", path.name()),
                    format!("threads{threads}"),
                ),
                |b| b.iter(|| trainer.evaluate(&test_set)),
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench_training);
criterion_main!(benches);
