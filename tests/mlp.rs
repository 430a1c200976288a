//! Multilayer perceptrons (issue 8) against the f64 reference MLP of
//! tests/common/mlp.rs: the gradient by finite differences, one engine
//! step and whole epochs against reference SGD, the initialisation, the
//! inference path, the determinism promise at every worker count, and
//! resume through a run checkpoint.

mod common;

use common::mlp::{self as reference, RefSgd};
use idx_softmax::data::pixels::U8_SCALE;
use idx_softmax::data::samples::Samples;
use idx_softmax::kernels::KernelPath;
use idx_softmax::metrics;
use idx_softmax::nn::Network;
use idx_softmax::optim::{Schedule, Sgd};
use idx_softmax::run::record::{self, Results, RunMeta};
use idx_softmax::run::{TrainConfig, Trainer};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use rand_xoshiro::Xoshiro256PlusPlus;

/// `threads` workers exactly (even beyond the CPUs), the kernel the
/// network and data call for.
fn config(threads: usize) -> TrainConfig {
    TrainConfig {
        threads,
        oversubscribe: true,
        kernel: None,
        ..TrainConfig::default()
    }
}

fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

/// The kernel paths that serve u8 samples (every one this CPU has) or f32
/// samples (gemm alone).
fn paths_for(u8_rows: bool) -> Vec<KernelPath> {
    if u8_rows {
        KernelPath::available()
    } else {
        vec![KernelPath::Gemm]
    }
}

fn hidden_of(sizes: &[usize]) -> Vec<usize> {
    sizes[1..sizes.len() - 1].to_vec()
}

/// Momentum, Nesterov, weight decay and a cosine schedule at once.
fn every_option(lr: f32) -> Sgd {
    Sgd {
        momentum: 0.9,
        nesterov: true,
        weight_decay: 1e-3,
        schedule: Schedule::Cosine,
        ..Sgd::plain(lr)
    }
}

// ---------------------------------------------------------------------------
// The reference itself, and the initialisation.

/// (a) The f64 reference's backpropagation against central finite
/// differences of its mean loss, for every parameter of a 6→5→4→3 network.
#[test]
fn mlp_gradient_matches_finite_differences_for_every_parameter() {
    let sizes = [6, 5, 4, 3];
    let n = 7;
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(21);
    let mut params: Vec<f64> = (0..reference::param_count(&sizes))
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let x: Vec<f64> = (0..n * sizes[0])
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let labels: Vec<usize> = (0..n).map(|i| i % 3).collect();

    // No hidden pre-activation sits at the ReLU's kink (where the loss has
    // no derivative), and both sides of the ReLU are exercised.
    let f = reference::forward(&sizes, &params, &x, n);
    let hidden: Vec<f64> = f.z[1..sizes.len() - 1].iter().flatten().copied().collect();
    let closest = hidden.iter().fold(f64::INFINITY, |m, v| m.min(v.abs()));
    assert!(
        closest > 1e-3,
        "a pre-activation is {closest} from the kink"
    );
    let off = hidden.iter().filter(|&&v| v < 0.0).count();
    assert!(
        off > 0 && off < hidden.len(),
        "{off} of {} units off",
        hidden.len()
    );

    let (loss, grad) = reference::gradient(&sizes, &params, &x, &labels);
    assert!((loss - reference::loss(&sizes, &params, &x, &labels)).abs() < 1e-12);
    let h = 1e-6;
    for i in 0..params.len() {
        let orig = params[i];
        params[i] = orig + h;
        let plus = reference::loss(&sizes, &params, &x, &labels);
        params[i] = orig - h;
        let minus = reference::loss(&sizes, &params, &x, &labels);
        params[i] = orig;
        let fd = (plus - minus) / (2.0 * h);
        assert!(
            (fd - grad[i]).abs() <= 1e-8 + 1e-6 * grad[i].abs(),
            "parameter {i}: finite difference {fd}, backpropagation {}",
            grad[i]
        );
    }
    // Every tensor has a non-zero gradient: the check compared something.
    let offs = reference::offsets(&sizes);
    for (l, &(wo, bo)) in offs.iter().enumerate() {
        let end = wo + sizes[l] * sizes[l + 1] + sizes[l + 1];
        assert!(grad[wo..bo].iter().any(|g| g.abs() > 1e-4), "layer {l} W");
        assert!(grad[bo..end].iter().any(|g| g.abs() > 1e-4), "layer {l} b");
    }
}

/// The draws `Network::init` documents, replayed with the same crates: the
/// notebook's `randn(K, C)/√K` in K × C order for softmax regression; He
/// normal `randn(out, in)·√(2/in)` for hidden layers and `randn/√in` for
/// the last, in `[out, in]` order; zero biases.
#[test]
fn initialisation_follows_the_documented_draws() {
    for sizes in [vec![7, 3], vec![7, 5, 3], vec![784, 16, 8, 10]] {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(77);
        let mut want: Vec<f32> = Vec::new();
        let linears = sizes.len() - 1;
        if linears == 1 {
            let (k, c) = (sizes[0], sizes[1]);
            let mut w = vec![0.0f32; k * c];
            for i in 0..k {
                for j in 0..c {
                    let z: f64 = rng.sample(StandardNormal);
                    w[j * k + i] = (z / (k as f64).sqrt()) as f32;
                }
            }
            want.extend(w);
            want.extend(vec![0.0; c]);
        } else {
            for l in 0..linears {
                let (inp, out) = (sizes[l], sizes[l + 1]);
                let gain: f64 = if l + 1 < linears { 2.0 } else { 1.0 };
                for _ in 0..inp * out {
                    let z: f64 = rng.sample(StandardNormal);
                    want.push((z * (gain / inp as f64).sqrt()) as f32);
                }
                want.extend(vec![0.0; out]);
            }
        }
        let net = Network::init(&sizes, &mut Xoshiro256PlusPlus::seed_from_u64(77)).unwrap();
        assert_eq!(net.sizes(), &sizes[..]);
        let got = net.params().data();
        assert_eq!(got.len(), want.len(), "{sizes:?}");
        assert!(
            got.iter()
                .zip(&want)
                .all(|(a, b)| a.to_bits() == b.to_bits()),
            "{sizes:?}: the initialisation is not the documented one"
        );
        // And the trainer starts from it.
        let (x, y) = reference::synthetic_f32(4, sizes[0], *sizes.last().unwrap(), 1);
        let s = reference::f32_samples(&x, &y, sizes[0], *sizes.last().unwrap());
        let cfg = TrainConfig {
            seed: 77,
            hidden: hidden_of(&sizes),
            ..config(1)
        };
        assert_eq!(Trainer::new(&s, None, cfg).unwrap().network(), &net);
    }
}

/// Inference (`forward_rows`, `forward_f32` and `metrics::evaluate`) of an
/// MLP against the reference forward pass.
#[test]
fn mlp_inference_matches_the_reference_forward() {
    let sizes = [30, 17, 9, 4];
    let (n, k, c) = (513, 30, 4);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
    let mut net = Network::init(&sizes, &mut rng).unwrap();
    for v in net.params_mut().data_mut() {
        *v += rng.random_range(-0.1..0.1f32);
    }
    let (x, y) = reference::synthetic_f32(n, k, c, 4);
    let xu8: Vec<u8> = (0..n * k).map(|_| rng.random()).collect();
    let params = to_f64(net.params().data());
    for u8_rows in [false, true] {
        let samples = if u8_rows {
            reference::u8_samples(&xu8, &y, k, c)
        } else {
            reference::f32_samples(&x, &y, k, c)
        };
        let x64: Vec<f64> = if u8_rows {
            xu8.iter().map(|&v| (v as f32 * U8_SCALE) as f64).collect()
        } else {
            to_f64(&x)
        };
        let want = reference::forward(&sizes, &params, &x64, n);
        let want_logits = &want.a[sizes.len() - 1];
        let labels: Vec<usize> = y.iter().map(|&v| v as usize).collect();
        let want_loss = reference::loss(&sizes, &params, &x64, &labels);
        let argmax = |z: &[f64]| (0..c).fold(0, |b, j| if z[j] > z[b] { j } else { b });
        let correct = (0..n)
            .filter(|&r| argmax(&want_logits[r * c..(r + 1) * c]) == labels[r])
            .count();
        // Rows whose two largest logits nearly tie may go either way in f32.
        let ties = (0..n)
            .filter(|&r| {
                let mut z = want_logits[r * c..(r + 1) * c].to_vec();
                z.sort_by(|a, b| b.partial_cmp(a).unwrap());
                z[0] - z[1] < 1e-4
            })
            .count();
        for path in paths_for(u8_rows) {
            let what = format!("u8={u8_rows} {path}");
            let rows: Vec<u32> = (0..n as u32).rev().collect();
            let mut got = vec![f32::NAN; n * c];
            net.forward_rows(&samples, &rows, path, &mut Vec::new(), &mut got);
            for (i, &r) in rows.iter().enumerate() {
                for j in 0..c {
                    let (g, w) = (got[i * c + j] as f64, want_logits[r as usize * c + j]);
                    assert!(
                        (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
                        "{what}: row {r} logit {j}: {g} vs {w}"
                    );
                }
            }
            // Loss and accuracy of the evaluation, against the reference.
            let ev = metrics::evaluate(&net, &samples, path);
            assert_eq!(ev.total, n);
            assert!(
                (ev.loss - want_loss).abs() < 1e-5 * want_loss,
                "{what}: {ev:?} vs {want_loss}"
            );
            assert!(
                ev.correct.abs_diff(correct) <= ties,
                "{what}: {} correct, reference {correct} ({ties} near-ties)",
                ev.correct
            );
        }
    }
    // forward_f32 is the same computation on rows given directly.
    let mut a = vec![0.0; n * c];
    let mut b = vec![0.0; n * c];
    net.forward_f32(KernelPath::Gemm, &x, n, &mut Vec::new(), &mut a);
    let s = reference::f32_samples(&x, &y, k, c);
    let rows: Vec<u32> = (0..n as u32).collect();
    net.forward_rows(&s, &rows, KernelPath::Gemm, &mut Vec::new(), &mut b);
    assert_eq!(a, b);
}

// ---------------------------------------------------------------------------
// The engine against the reference.

/// Element `i` of `got` is within `rel · (largest |change| of its tensor)
/// + a few ulps of want` of `want`: the step itself must be right to
/// `rel`, not only the unchanged part of the weights.
fn assert_step_close(
    what: &str,
    net: &Network,
    got: &[f32],
    want: &[f64],
    start: &[f64],
    rel: f64,
) {
    for t in net.params().tensors() {
        let r = t.range();
        let scale = r
            .clone()
            .map(|i| (want[i] - start[i]).abs())
            .fold(0.0, f64::max);
        assert!(scale > 0.0, "{what}: {} did not move", t.name);
        for i in r {
            let err = (got[i] as f64 - want[i]).abs();
            let bound = rel * scale + 4.0 * f32::EPSILON as f64 * want[i].abs();
            assert!(
                err <= bound,
                "{what}: {}[{}]: got {}, reference {} (error {err:e}, allowed {bound:e})",
                t.name,
                i - t.offset,
                got[i],
                want[i]
            );
        }
    }
}

/// (b) One training step of the engine (batch = every sample, one epoch,
/// one thread) against the reference SGD step, for softmax regression and
/// MLPs, f32 samples (gemm) and u8 samples (every path), plain SGD and
/// every option.
#[test]
fn one_engine_step_matches_the_reference_sgd_step() {
    let (n, k, c) = (9, 6, 3);
    let (x, y) = reference::synthetic_f32(n, k, c, 5);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(6);
    let xu8: Vec<u8> = (0..n * k).map(|_| rng.random()).collect();
    let labels: Vec<usize> = y.iter().map(|&v| v as usize).collect();
    for sizes in [vec![6, 3], vec![6, 5, 3], vec![6, 5, 4, 3]] {
        for sgd in [Sgd::plain(0.5), every_option(0.5)] {
            for (u8_rows, path) in [false, true]
                .into_iter()
                .flat_map(|u| paths_for(u).into_iter().map(move |p| (u, p)))
            {
                let what = format!("{sizes:?} u8={u8_rows} {path} {sgd:?}");
                let samples = if u8_rows {
                    reference::u8_samples(&xu8, &y, k, c)
                } else {
                    reference::f32_samples(&x, &y, k, c)
                };
                let x64: Vec<f64> = if u8_rows {
                    xu8.iter().map(|&v| (v as f32 * U8_SCALE) as f64).collect()
                } else {
                    to_f64(&x)
                };
                let seed = 3;
                let cfg = TrainConfig {
                    epochs: 1,
                    batch_size: n,
                    sgd,
                    seed,
                    hidden: hidden_of(&sizes),
                    kernel: Some(path),
                    ..config(1)
                };
                let mut trainer = Trainer::new(&samples, None, cfg).unwrap();
                assert_eq!(trainer.kernel(), path);
                let init =
                    Network::init(&sizes, &mut Xoshiro256PlusPlus::seed_from_u64(seed)).unwrap();
                assert_eq!(trainer.network(), &init, "{what}: initialisation");

                // The reference step: the whole set is the batch, so the
                // shuffle only reorders a sum.
                let start = to_f64(init.params().data());
                let (loss, grad) = reference::gradient(&sizes, &start, &x64, &labels);
                let mut want = start.clone();
                let mut buf = vec![0.0; want.len()];
                let lr = sgd.lr_at(0, 0, 1) as f64;
                RefSgd::from(&sgd).step(lr, &mut want, &grad, &mut buf);

                let stats = trainer.train_epoch(&|_| {}).unwrap();
                assert!(
                    (stats.train_loss - loss).abs() <= 1e-6 * loss,
                    "{what}: loss {} vs {loss}",
                    stats.train_loss
                );
                let state = trainer.state();
                assert_step_close(
                    &what,
                    &init,
                    state.network.params().data(),
                    &want,
                    &start,
                    1e-5,
                );
                if sgd.has_momentum() {
                    let zero = vec![0.0; buf.len()];
                    assert_step_close(&what, &init, &state.momentum, &buf, &zero, 1e-5);
                } else {
                    assert!(state.momentum.is_empty());
                }
            }
        }
    }
}

/// Trains `sizes` on f32 rows `x` for `epochs` epochs with the reference:
/// the trainer's initialisation (checked separately above), then one
/// shuffle of the order per epoch from the same generator, batches of
/// `bs` (the last one partial), reference SGD at the schedule's rate.
fn reference_run(
    sizes: &[usize],
    x: &[f32],
    y: &[u8],
    seed: u64,
    bs: usize,
    epochs: usize,
    sgd: Sgd,
) -> (Vec<f64>, Vec<f64>) {
    let n = y.len();
    let k = sizes[0];
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let init = Network::init(sizes, &mut rng).unwrap();
    let mut params = to_f64(init.params().data());
    let mut buf = vec![0.0; params.len()];
    let mut order: Vec<u32> = (0..n as u32).collect();
    let steps = n.div_ceil(bs);
    let opt = RefSgd::from(&sgd);
    for epoch in 0..epochs {
        order.shuffle(&mut rng);
        for (step, batch) in order.chunks(bs).enumerate() {
            let xb = reference::gather(x, k, batch);
            let yb: Vec<usize> = batch.iter().map(|&r| y[r as usize] as usize).collect();
            let (_, g) = reference::gradient(sizes, &params, &xb, &yb);
            let lr = sgd.lr_at(epoch, epoch * steps + step, epochs * steps) as f64;
            opt.step(lr, &mut params, &g, &mut buf);
        }
    }
    (params, buf)
}

/// A whole MLP run (300 samples of 20 features, 16 hidden units, 3
/// classes, batch 32 with a partial last batch, momentum + Nesterov +
/// weight decay + cosine, 2 epochs) against the reference loop replaying
/// the same shuffles, at 1 and 3 workers: on f32 samples (gemm) and on the
/// same samples quantised to u8 (every path).
#[test]
fn mlp_epochs_match_an_f64_reference_loop() {
    let (n, k, h, c) = (300, 20, 16, 3);
    assert_ne!(n % 32, 0, "the last batch must be partial");
    let (x, y) = reference::synthetic_f32(n, k, c, 17);
    let xq: Vec<u8> = x
        .iter()
        .map(|&v| ((v + 1.6) / 3.2 * 255.0).round().clamp(0.0, 255.0) as u8)
        .collect();
    // What the engine sees of the u8 samples.
    let xq_f32: Vec<f32> = xq.iter().map(|&v| v as f32 * U8_SCALE).collect();
    let f32_set = reference::f32_samples(&x, &y, k, c);
    let u8_set = reference::u8_samples(&xq, &y, k, c);
    let sizes = [k, h, c];
    let (seed, bs, epochs) = (1234, 32, 2);
    let sgd = every_option(0.1);
    // Measured: 1.0e-7 (gemm) on AVX-512; ten times that allows other
    // sgemm and fused kernels.
    let tol = 1e-6;
    for (name, samples, xs, u8_rows) in
        [("f32", &f32_set, &x, false), ("u8", &u8_set, &xq_f32, true)]
    {
        let (want, want_buf) = reference_run(&sizes, xs, &y, seed, bs, epochs, sgd);
        // The comparison can fail: a reference without Nesterov, or
        // without weight decay, is far outside the tolerance.
        let controls: Vec<Vec<f64>> = [
            Sgd {
                nesterov: false,
                ..sgd
            },
            Sgd {
                weight_decay: 0.0,
                ..sgd
            },
        ]
        .into_iter()
        .map(|other| reference_run(&sizes, xs, &y, seed, bs, epochs, other).0)
        .collect();
        for path in paths_for(u8_rows) {
            for threads in [1, 3] {
                let what = format!("{name} {path} {threads} threads");
                let cfg = TrainConfig {
                    epochs,
                    batch_size: bs,
                    sgd,
                    seed,
                    hidden: vec![h],
                    kernel: Some(path),
                    ..config(threads)
                };
                let mut trainer = Trainer::new(samples, None, cfg).unwrap();
                assert_eq!(trainer.kernel(), path);
                let mut losses = Vec::new();
                for _ in 0..epochs {
                    losses.push(trainer.train_epoch(&|_| {}).unwrap().train_loss);
                }
                assert!(losses[1] < losses[0], "{what}: it learns: {losses:?}");
                let state = trainer.state();
                let got = state.network.params().data();
                let (err, i) = reference::worst_error(got, &want);
                println!("{what}: worst parameter error {err:e} at {i}");
                assert!(err < tol, "{what}: parameter {i} off by {err:e}");
                let (err, i) = reference::worst_error(&state.momentum, &want_buf);
                assert!(err < tol, "{what}: momentum {i} off by {err:e}");
                for p in &controls {
                    let (err, _) = reference::worst_error(got, p);
                    assert!(err > 10.0 * tol, "{what}: a control is only {err:e} away");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Determinism and resume.

/// What a run produced, bit for bit: the digest, the momentum buffer's
/// bits, each epoch's training loss bits and validation evaluation.
type RunBits = (String, Vec<u32>, Vec<u64>, Vec<Option<metrics::Evaluation>>);

fn run_bits(samples: &Samples<'_>, cfg: TrainConfig) -> RunBits {
    let threads = cfg.threads;
    let mut t = Trainer::new(samples, None, cfg).unwrap();
    assert_eq!(t.workers(), threads);
    let (mut losses, mut vals) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        let r = t.run_epoch(&|_| {}).unwrap();
        losses.push(r.stats.train_loss.to_bits());
        vals.push(r.validation);
    }
    let state = t.state();
    let momentum = state.momentum.iter().map(|v| v.to_bits()).collect();
    (state.network.digest(), momentum, losses, vals)
}

/// The same bits for MLPs at 1, 2, 3, 4 and 8 workers on every path: u8
/// samples on every kernel path this CPU has (784→70→9→10: column blocks
/// of 64 that do not divide 784 or 70), f32 samples on gemm (40→33→5),
/// with and without momentum; and for softmax regression on f32 samples
/// (gemm; u8 softmax on every path is tests/training.rs's).
#[test]
fn mlp_bits_do_not_depend_on_the_worker_count() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::load(&common::write_synthetic(
        dir.path(),
        1000,
        50,
        28,
        28,
        10,
        31,
    ));
    let (u8_train, _) = common::samples(&data);
    let (xf, yf) = reference::synthetic_f32(900, 40, 5, 32);
    let f32_train = reference::f32_samples(&xf, &yf, 40, 5);
    let cases: [(&str, &Samples<'_>, Vec<usize>); 4] = [
        ("u8 784-70-9-10", &u8_train, vec![70, 9]),
        ("u8 784-16-10", &u8_train, vec![16]),
        ("f32 40-33-5", &f32_train, vec![33]),
        ("f32 softmax 40-5", &f32_train, vec![]),
    ];
    for (name, samples, hidden) in cases {
        for (path, sgd) in paths_for(samples.as_u8().is_some())
            .into_iter()
            .flat_map(|p| [(p, Sgd::plain(0.1)), (p, every_option(0.05))])
        {
            let cfg = |threads| TrainConfig {
                epochs: 2,
                batch_size: 64,
                sgd,
                val_split: 0.1,
                hidden: hidden.clone(),
                kernel: Some(path),
                ..config(threads)
            };
            let one = run_bits(samples, cfg(1));
            assert_eq!(one.1.is_empty(), !sgd.has_momentum());
            assert!(one.3.iter().all(|v| v.is_some()));
            for threads in [2, 3, 4, 8] {
                let other = run_bits(samples, cfg(threads));
                assert!(
                    other == one,
                    "{name}, {path}, {sgd:?}: {threads} workers differ from 1 ({} vs {})",
                    other.0,
                    one.0
                );
            }
        }
    }
}

/// 3 epochs straight equal 1 epoch, a run checkpoint (record::save and
/// load, through a file) and 2 resumed epochs, bit for bit: weights,
/// momentum and epochs done; for u8 and f32 samples.
#[test]
fn resumed_mlp_run_equals_the_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::load(&common::write_synthetic(dir.path(), 500, 50, 10, 10, 4, 16));
    let (u8_train, u8_test) = common::samples(&data);
    let (xf, yf) = reference::synthetic_f32(400, 12, 3, 33);
    let f32_train = reference::f32_samples(&xf, &yf, 12, 3);
    let sgd = Sgd {
        momentum: 0.9,
        weight_decay: 1e-4,
        schedule: Schedule::Cosine,
        ..Sgd::plain(0.05)
    };
    for (name, train_set, test_set, kernel) in [
        ("u8-best", &u8_train, Some(&u8_test), None),
        ("u8-gemm", &u8_train, Some(&u8_test), Some(KernelPath::Gemm)),
        ("f32", &f32_train, None, None),
    ] {
        let cfg = TrainConfig {
            epochs: 3,
            batch_size: 64,
            sgd,
            seed: 9,
            val_split: 0.2,
            hidden: vec![24, 12],
            kernel,
            ..config(2)
        };
        let mut straight = Trainer::new(train_set, test_set, cfg.clone()).unwrap();
        for _ in 0..3 {
            straight.train_epoch(&|_| {}).unwrap();
        }

        let mut first = Trainer::new(train_set, test_set, cfg.clone()).unwrap();
        let report = first.run_epoch(&|_| {}).unwrap();
        let path = dir.path().join(format!("{name}.safetensors"));
        let meta = RunMeta {
            config: TrainConfig {
                kernel: Some(first.kernel()),
                ..cfg.clone()
            },
            epochs_done: 1,
            classes: train_set.classes(),
            features: train_set.features(),
            sample_shape: train_set.sample_shape().to_vec(),
            train_samples: train_set.len(),
            test_samples: test_set.map_or(0, |t| t.len()),
            data_dir: String::new(),
            class_names: Vec::new(),
            input_background: None,
        };
        let results = Results {
            test_accuracy: report.test.as_ref().map_or(0.0, |t| t.accuracy),
            test_loss: report.test.as_ref().map_or(0.0, |t| t.loss),
            train_loss: report.stats.train_loss,
            validation: report.validation.as_ref().map(|v| (v.accuracy, v.loss)),
        };
        record::save(&path, &first.state(), &meta, &results).unwrap();
        drop(first);

        let (ck, got_meta, state) = record::load(&path).unwrap();
        assert_eq!(got_meta.config.hidden, [24, 12]);
        assert_eq!(got_meta.epochs_done, 1);
        assert_eq!(
            ck.metadata["layers"],
            format!("{}-24-12-{}", train_set.features(), train_set.classes())
        );
        for t in ck.network.params().tensors() {
            assert_eq!(ck.extra[&format!("momentum.{}", t.name)].shape, t.shape);
        }
        let run_cfg = TrainConfig {
            threads: 3,
            ..got_meta.config.clone()
        };
        let mut resumed = Trainer::resume(train_set, test_set, run_cfg, state).unwrap();
        assert_eq!(resumed.epochs_done(), 1);
        resumed.train_epoch(&|_| {}).unwrap();
        resumed.train_epoch(&|_| {}).unwrap();
        let (a, b) = (resumed.state(), straight.state());
        assert_eq!(a.network.digest(), b.network.digest(), "{name}");
        assert!(a == b, "{name}: momentum or epochs differ");

        // A checkpoint of another network is refused.
        let (_, _, state) = record::load(&path).unwrap();
        let other = TrainConfig {
            hidden: vec![24],
            ..cfg.clone()
        };
        let e = Trainer::resume(train_set, test_set, other, state)
            .err()
            .expect("a 2-hidden-layer state into a 1-hidden-layer run")
            .to_string();
        assert!(
            e.contains("-24-12-") && e.contains("but this run builds"),
            "{e}"
        );
    }
}
