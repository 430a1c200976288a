//! Convolutional networks end to end: a training step against an f64
//! reference built from the kernels' references, the determinism promise
//! on every path, and the accuracy of LeNet-5's shape on MNIST.

mod common;

use std::borrow::Cow;

use idx_softmax::data::{LabelValues, Pixels, Samples};
use idx_softmax::kernels::conv::{ConvGeom, PoolGeom};
use idx_softmax::kernels::{reference, reference_conv, KernelPath};
use idx_softmax::nn::{ConvBlock, Layer, Network};
use idx_softmax::optim::Sgd;
use idx_softmax::run::{train, TrainConfig, Trainer};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

fn cfg(
    conv: &[(usize, usize)],
    hidden: &[usize],
    threads: usize,
    kernel: KernelPath,
) -> TrainConfig {
    TrainConfig {
        conv: conv
            .iter()
            .map(|&(channels, kernel)| ConvBlock { channels, kernel })
            .collect(),
        hidden: hidden.to_vec(),
        threads,
        kernel: Some(kernel),
        oversubscribe: true,
        ..TrainConfig::default()
    }
}

/// The f64 gradient of the mean cross-entropy of `net` on `x` (n samples of
/// `shape`), from the kernels' naive references: conv, ReLU, pool, linear,
/// softmax-CE forward, then back. Laid out as the network's parameters.
fn reference_gradient(net: &Network, x: &[f64], labels: &[usize], n: usize) -> Vec<f64> {
    let p: Vec<f64> = net.params().data().iter().map(|&v| v as f64).collect();
    let t = net.params().tensors();
    let get = |i: usize| &p[t[i].range()];
    // Forward, keeping every activation.
    let mut acts = vec![x.to_vec()];
    for layer in net.layers() {
        let inp = acts.last().unwrap();
        let mut out = match layer {
            Layer::Conv(c) => {
                reference_conv::conv2d_forward(inp, get(c.weight), get(c.bias), n, c.geom)
            }
            Layer::Pool(pl) => reference_conv::maxpool2_forward(inp, n, pl.geom),
            Layer::Linear(l) => reference::forward(inp, get(l.weight), get(l.bias), n, l.inputs),
        };
        if layer.relu() {
            for v in &mut out {
                *v = v.max(0.0);
            }
        }
        acts.push(out);
    }
    let c = net.classes();
    let (_, mut g) = reference::softmax_ce(acts.last().unwrap(), labels, c);
    let mut grad = vec![0.0; p.len()];
    for (l, layer) in net.layers().iter().enumerate().rev() {
        let inp = &acts[l];
        match layer {
            Layer::Conv(cv) => {
                let (dw, db) = reference_conv::conv2d_weight_grad(&g, inp, n, cv.geom);
                grad[t[cv.weight].range()].copy_from_slice(&dw);
                grad[t[cv.bias].range()].copy_from_slice(&db);
                g = reference_conv::conv2d_backward_input(&g, get(cv.weight), n, cv.geom);
            }
            Layer::Pool(pl) => g = reference_conv::maxpool2_backward(&g, inp, n, pl.geom),
            Layer::Linear(li) => {
                let dw = reference::weight_grad(inp, &g, n, li.inputs, li.outputs);
                grad[t[li.weight].range()].copy_from_slice(&dw);
                grad[t[li.bias].range()].copy_from_slice(&reference::bias_grad(&g, li.outputs));
                // g · W: the gradient at the layer's input.
                let w = get(li.weight);
                let mut gi = vec![0.0; n * li.inputs];
                for r in 0..n {
                    for o in 0..li.outputs {
                        let go = g[r * li.outputs + o];
                        for i in 0..li.inputs {
                            gi[r * li.inputs + i] += go * w[o * li.inputs + i];
                        }
                    }
                }
                g = gi;
            }
        }
        if l > 0 && net.layers()[l - 1].relu() {
            for (gv, &a) in g.iter_mut().zip(&acts[l]) {
                if a <= 0.0 {
                    *gv = 0.0;
                }
            }
        }
    }
    grad
}

/// One SGD step of a small CNN (2-channel 7×6 images: odd sizes, so the
/// pools drop a row or a column) on every kernel path equals
/// `w − lr · ∇` with the f64 reference gradient. A batch of 120 samples:
/// several row chunks of the step, the last one short.
#[test]
fn a_step_matches_the_f64_reference_on_every_path() {
    let (n, shape, classes) = (120, [2usize, 7, 6], 3);
    let k: usize = shape.iter().product();
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(5);
    let x: Vec<f32> = (0..n * k).map(|_| rng.random_range(-1.0..1.0)).collect();
    let y: Vec<u8> = (0..n).map(|i| (i % classes) as u8).collect();
    let samples = Samples::new(
        Pixels::F32(Cow::Borrowed(&x)),
        LabelValues::U8(&y),
        k,
        classes,
        shape.to_vec(),
    )
    .unwrap();
    let lr = 0.5;
    for kernel in KernelPath::available() {
        let cfg = TrainConfig {
            batch_size: n,
            sgd: Sgd::plain(lr),
            ..cfg(&[(3, 3), (4, 1)], &[5], 2, kernel)
        };
        let mut trainer = Trainer::new(&samples, None, cfg).unwrap();
        let before = trainer.network().clone();
        assert_eq!(
            before.describe(),
            "2x7x6-conv3x3-conv4x1-4-5-3",
            "7x6 → 3x3 → 1x1"
        );
        trainer.train_epoch(&|_| {}).unwrap();
        let after = trainer.network();
        let xs: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        let labels: Vec<usize> = y.iter().map(|&v| v as usize).collect();
        let g = reference_gradient(&before, &xs, &labels, n);
        let (w0, w1) = (before.params().data(), after.params().data());
        let mut worst = 0.0f64;
        for i in 0..g.len() {
            let want = w0[i] as f64 - lr as f64 * g[i];
            worst = worst.max((w1[i] as f64 - want).abs());
        }
        assert!(worst < 2e-5, "{kernel}: worst parameter error {worst:e}");
        // The step did move every layer.
        assert!(g.iter().any(|&v| v.abs() > 1e-3));
    }
}

/// Same seed → same bits for 1, 2 and 3 threads, on every kernel path, for
/// a CNN on u8 images with momentum over several steps and a partial last
/// batch.
#[test]
fn cnn_weights_are_bitwise_identical_for_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::load(&common::write_synthetic(dir.path(), 150, 40, 12, 12, 4, 21));
    let (tr, te) = common::samples(&data);
    for kernel in KernelPath::available() {
        let run = |threads: usize| {
            let cfg = TrainConfig {
                epochs: 2,
                batch_size: 32,
                sgd: Sgd {
                    momentum: 0.9,
                    ..Sgd::plain(0.05)
                },
                ..cfg(&[(4, 3), (6, 5)], &[10], threads, kernel)
            };
            let (net, reports) = train(&tr, Some(&te), cfg, &|_| {}, |_| {}).unwrap();
            (net.digest(), reports[1].test.as_ref().unwrap().loss)
        };
        let one = run(1);
        for threads in [2, 3] {
            assert_eq!(
                run(threads),
                one,
                "{kernel}: {threads} threads differ from 1"
            );
        }
    }
}

/// The example network (`--conv 6 --conv 16 --hidden 120 --hidden 84`)
/// learns MNIST: one epoch at lr 0.05 with momentum 0.9 passes 0.97 on the
/// best path this CPU offers (and evaluation agrees with itself).
#[test]
fn lenet_learns_mnist_in_one_epoch() {
    let (tr, te) = common::mnist_samples();
    let cfg = TrainConfig {
        sgd: Sgd {
            momentum: 0.9,
            ..Sgd::plain(0.05)
        },
        ..cfg(&[(6, 5), (16, 5)], &[120, 84], 2, KernelPath::best())
    };
    let (net, reports) = train(tr, Some(te), cfg, &|_| {}, |_| {}).unwrap();
    assert_eq!(net.describe(), "1x28x28-conv6x5-conv16x5-784-120-84-10");
    let test = reports[0].test.as_ref().unwrap();
    println!(
        "{}: test accuracy {:.4}, {:.2} s",
        KernelPath::best(),
        test.accuracy,
        reports[0].stats.seconds
    );
    assert!(test.accuracy > 0.97, "test accuracy {}", test.accuracy);
    let again = idx_softmax::metrics::evaluate(&net, te, KernelPath::best());
    assert_eq!(&again, test);
}

/// The layer geometry the network builds for LeNet-5's shape, checked
/// against the kernels' own sizes.
#[test]
fn lenet_layers() {
    let arch = cfg(&[(6, 5), (16, 5)], &[120, 84], 1, KernelPath::Gemm).architecture(&[28, 28], 10);
    let net = Network::zeros_arch(&arch).unwrap();
    let layers = net.layers();
    assert_eq!(layers.len(), 7);
    assert_eq!(
        layers[0],
        Layer::Conv(idx_softmax::nn::Conv {
            geom: ConvGeom::new(1, 6, 28, 28, 5),
            weight: 0,
            bias: 1
        })
    );
    assert_eq!(
        layers[3],
        Layer::Pool(idx_softmax::nn::Pool {
            geom: PoolGeom::new(16, 14, 14)
        })
    );
    assert_eq!(layers[4].in_len(), 784);
    assert_eq!(
        net.params().len(),
        6 * 25 + 6 + 16 * 150 + 16 + 784 * 120 + 120 + 120 * 84 + 84 + 84 * 10 + 10
    );
}
