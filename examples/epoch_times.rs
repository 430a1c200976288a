//! Median epoch time of the training loop, in one process, for several
//! thread counts and kernel paths, interleaved so that machine noise hits
//! every variant alike.
//!
//! ```text
//! cargo run --release --example epoch_times -- [RUNS] [THREADS,...] [KERNELS,...] [BATCH] [HIDDEN,...]
//! cargo run --release --example epoch_times -- 15 1,2 avx512,gemm 100
//! cargo run --release --example epoch_times -- 15 1,2 avx512,gemm 100 256
//! ```
//!
//! HIDDEN (e.g. `256` or `512,256`) trains an MLP (any kernel path: the fused
//! ones run its first layer on the u8 pixels).

use std::path::Path;

use idx_softmax::data::{Dataset, LoadOptions};
use idx_softmax::kernels::KernelPath;
use idx_softmax::run::{TrainConfig, Trainer};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = args.get(1).map_or(15, |s| s.parse().expect("RUNS"));
    let threads: Vec<usize> = args
        .get(2)
        .map_or("1,2".into(), |s| s.clone())
        .split(',')
        .map(|s| s.parse().expect("THREADS"))
        .collect();
    let kernels: Vec<KernelPath> = args
        .get(3)
        .map_or(KernelPath::best().name().to_string(), |s| s.clone())
        .split(',')
        .map(|s| s.parse().expect("KERNELS"))
        .collect();
    let batch: usize = args.get(4).map_or(100, |s| s.parse().expect("BATCH"));
    let hidden: Vec<usize> = args.get(5).map_or_else(Vec::new, |s| {
        s.split(',').map(|h| h.parse().expect("HIDDEN")).collect()
    });
    let data = Dataset::load(
        Path::new(idx_softmax::data::BUNDLED_MNIST),
        &LoadOptions::default(),
    )
    .expect("MNIST");
    let train_set = data.train.samples(data.classes).expect("train samples");
    let test_set = data.test.samples(data.classes).expect("test samples");

    let variants: Vec<(usize, KernelPath)> = kernels
        .iter()
        .flat_map(|&k| threads.iter().map(move |&t| (t, k)))
        .collect();
    let mut trainers: Vec<Trainer> = variants
        .iter()
        .map(|&(t, k)| {
            let cfg = TrainConfig {
                threads: t,
                kernel: Some(k),
                batch_size: batch,
                hidden: hidden.clone(),
                ..TrainConfig::default()
            };
            Trainer::new(&train_set, None, cfg).unwrap()
        })
        .collect();
    let mut times = vec![Vec::new(); variants.len()];
    let mut eval_times = vec![Vec::new(); variants.len()];
    // One warm-up epoch each, then interleaved measured epochs.
    for round in 0..=runs {
        for (i, tr) in trainers.iter_mut().enumerate() {
            let s = tr.train_epoch(&|_| {}).unwrap();
            let t0 = std::time::Instant::now();
            let e = tr.evaluate(&test_set);
            let et = t0.elapsed().as_secs_f64();
            if round > 0 {
                times[i].push(s.seconds);
                eval_times[i].push(et);
            }
            let _ = e;
        }
    }
    println!(
        "network {}, batch {batch}, {runs} runs each (median [min, max]); CPUs: {}",
        trainers[0].network().describe(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!("| kernel | threads | epoch ms | samples/s | eval ms |");
    println!("|---|---|---|---|---|");
    for (i, &(t, k)) in variants.iter().enumerate() {
        if std::env::var_os("EPOCH_TIMES_ALL").is_some() {
            let all: Vec<String> = times[i].iter().map(|t| format!("{:.1}", t * 1e3)).collect();
            eprintln!("{k}/{t}: {}", all.join(" "));
        }
        let (med, lo, hi) = stats(&mut times[i]);
        let (emed, _, _) = stats(&mut eval_times[i]);
        println!(
            "| {k} | {t} | {:.2} [{:.2}, {:.2}] | {:.0} | {:.2} |",
            med * 1e3,
            lo * 1e3,
            hi * 1e3,
            train_set.len() as f64 / med,
            emed * 1e3
        );
    }
}

fn stats(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (v[v.len() / 2], v[0], v[v.len() - 1])
}
