//! Augmentation in training and on disk: the same bits at any thread count
//! for every network and path, a resumed run continuing the same
//! deformations, the flags' rules, the picture, and `idx-softmax augment`.

mod common;
use common::bin;

use idx_softmax::data::augment::{self, Augment, AugmentKind, Augmenter};
use idx_softmax::kernels::KernelPath;
use idx_softmax::nn::ConvBlock;
use idx_softmax::optim::Sgd;
use idx_softmax::run::{train, TrainConfig, Trainer};

fn cfg(augment: Augment, threads: usize, kernel: KernelPath) -> TrainConfig {
    TrainConfig {
        epochs: 2,
        batch_size: 32,
        sgd: Sgd {
            momentum: 0.9,
            ..Sgd::plain(0.05)
        },
        augment,
        threads,
        kernel: Some(kernel),
        oversubscribe: true,
        ..TrainConfig::default()
    }
}

/// Softmax regression, an MLP and a CNN: (conv blocks, hidden sizes).
fn networks() -> [(Vec<ConvBlock>, Vec<usize>); 3] {
    [
        (vec![], vec![]),
        (vec![], vec![16]),
        (
            vec![ConvBlock {
                channels: 3,
                kernel: 3,
            }],
            vec![8],
        ),
    ]
}

/// Softmax regression, an MLP and a CNN, each with shift, affine and
/// elastic deformations: 1, 2 and 3 threads give the same bits on every
/// path, and the deformations change the result.
#[test]
fn augmented_runs_are_bitwise_identical_for_any_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::load(&common::write_synthetic(dir.path(), 130, 30, 12, 12, 3, 7));
    let (tr, te) = common::samples(&data);
    let nets = networks();
    let kinds = [
        AugmentKind::Shift,
        AugmentKind::Affine,
        AugmentKind::Elastic,
    ];
    for kernel in KernelPath::available() {
        for (conv, hidden) in &nets {
            let plain = {
                let c = TrainConfig {
                    conv: conv.clone(),
                    hidden: hidden.clone(),
                    ..cfg(Augment::None, 2, kernel)
                };
                train(&tr, Some(&te), c, &|_| {}, |_| {})
                    .unwrap()
                    .0
                    .digest()
            };
            for kind in kinds {
                let run = |threads| {
                    let c = TrainConfig {
                        conv: conv.clone(),
                        hidden: hidden.clone(),
                        ..cfg(Augment::defaults(kind), threads, kernel)
                    };
                    train(&tr, Some(&te), c, &|_| {}, |_| {})
                        .unwrap()
                        .0
                        .digest()
                };
                let one = run(1);
                assert_ne!(
                    one, plain,
                    "{kernel} {kind} {hidden:?}: no deformation happened"
                );
                for threads in [2, 3] {
                    assert_eq!(
                        run(threads),
                        one,
                        "{kernel} {kind} {hidden:?}: {threads} threads"
                    );
                }
            }
        }
    }
}

/// An epoch trains on exactly the deformations `Augmenter::apply` gives
/// for `(seed, epoch, sample)`: a run of 2 epochs resumed after 1 equals
/// the straight run, and `none` is the run without augmentation.
#[test]
fn a_resumed_run_continues_the_same_deformations() {
    let dir = tempfile::tempdir().unwrap();
    let data = common::load(&common::write_synthetic(dir.path(), 100, 20, 10, 10, 3, 9));
    let (tr, _) = common::samples(&data);
    let c = cfg(
        Augment::defaults(AugmentKind::Elastic),
        2,
        KernelPath::best(),
    );
    let mut straight = Trainer::new(&tr, None, c.clone()).unwrap();
    straight.train_epoch(&|_| {}).unwrap();
    let after_one = straight.state();
    straight.train_epoch(&|_| {}).unwrap();
    let mut resumed = Trainer::resume(&tr, None, c.clone(), after_one).unwrap();
    resumed.train_epoch(&|_| {}).unwrap();
    assert_eq!(resumed.network().digest(), straight.network().digest());
    let none = train(
        &tr,
        None,
        cfg(Augment::None, 2, KernelPath::best()),
        &|_| {},
        |_| {},
    );
    let off = train(
        &tr,
        None,
        TrainConfig {
            augment: Augment::None,
            ..cfg(Augment::None, 1, KernelPath::best())
        },
        &|_| {},
        |_| {},
    );
    assert_eq!(none.unwrap().0.digest(), off.unwrap().0.digest());
}

/// An epoch trains on exactly the deformations `Augmenter::apply` gives
/// for `(seed, epoch, sample)`, every row of every batch (a short last one
/// included) deformed once before any layer reads it: one augmented epoch
/// gives the same bits as one plain epoch on a copy of the data set whose
/// training samples were deformed beforehand, for softmax regression, an
/// MLP and a CNN on every path.
#[test]
fn an_augmented_epoch_equals_a_plain_epoch_on_the_deformed_set() {
    use idx_softmax::data::idx::ElementType;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    std::fs::create_dir(dir.path().join("deformed")).unwrap();
    let (n, h, w) = (130, 12, 12);
    let src = common::write_synthetic(&dir.path().join("src"), n, 30, h, w, 3, 8);
    for name in [
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    ] {
        std::fs::copy(src.join(name), dir.path().join("deformed").join(name)).unwrap();
    }
    let data = common::load(&src);
    let x = data.train.images.as_u8().unwrap();
    let k = h * w;
    let seed = 17;
    let nets = networks();
    let (tr, te) = common::samples(&data);
    for kind in [AugmentKind::Affine, AugmentKind::Elastic] {
        let aug =
            Augmenter::new(Augment::defaults(kind), augment::shape_of(&[h, w]).unwrap()).unwrap();
        let mut s = aug.scratch();
        let mut deformed = vec![0u8; n * k];
        for (i, row) in deformed.chunks_exact_mut(k).enumerate() {
            aug.apply(seed, 0, i as u64, &x[i * k..(i + 1) * k], row, &mut s);
        }
        assert_ne!(&deformed[..], x, "{kind}: no deformation");
        let out = dir.path().join("deformed");
        common::write_idx(
            &out.join("train-images-idx3-ubyte"),
            ElementType::U8,
            &[n, h, w],
            &deformed,
        );
        let pre = common::load(&out);
        let (pre_tr, pre_te) = common::samples(&pre);
        for kernel in KernelPath::available() {
            for (conv, hidden) in &nets {
                let c = |augment| TrainConfig {
                    conv: conv.clone(),
                    hidden: hidden.clone(),
                    epochs: 1,
                    seed,
                    ..cfg(augment, 2, kernel)
                };
                let on_the_fly = train(&tr, Some(&te), c(Augment::defaults(kind)), &|_| {}, |_| {});
                let beforehand = train(&pre_tr, Some(&pre_te), c(Augment::None), &|_| {}, |_| {});
                assert_eq!(
                    on_the_fly.unwrap().0.digest(),
                    beforehand.unwrap().0.digest(),
                    "{kernel} {kind} conv {conv:?} hidden {hidden:?}"
                );
            }
        }
    }
}

#[test]
fn the_flags_and_their_rules() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("d")).unwrap();
    let data = common::write_synthetic(&dir.path().join("d"), 60, 20, 8, 8, 3, 4);
    let d = data.to_str().unwrap();
    let pic = dir.path().join("aug.png");
    let o = bin(&[
        "--data-dir",
        d,
        "--json",
        "--augment",
        "elastic",
        "--sigma",
        "3",
        "--alpha",
        "20",
        "--save-augmented",
        pic.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["augment"], "elastic:3,20");
    // 8 samples (of 8×8) by the original and 5 deformations, 4× with gaps.
    let img = idx_softmax::image::decode_file(&pic).unwrap();
    assert_eq!((img.width, img.height), (6 * 36 - 4, 8 * 36 - 4));
    // The human report names the augmentation and the picture.
    let o = bin(&[
        "--data-dir",
        d,
        "--augment",
        "shift",
        "--max-shift",
        "1",
        "--save-augmented",
        pic.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains(", augment shift(max_shift=1), "), "{text}");
    assert!(
        text.contains(&format!("picture  {} (212x284 pixels)", pic.display())),
        "{text}"
    );
    for (args, code, want) in [
        (
            vec!["--augment", "affine", "--sigma", "3"],
            2,
            "--sigma applies to --augment elastic only",
        ),
        (
            vec!["--augment", "warp"],
            2,
            "must be none, shift, affine or elastic, got 'warp'",
        ),
        (vec!["--augment", "elastic", "--alpha", "-1"], 2, "got -1"),
        (
            vec!["--augment", "shift", "--max-shift", "1.5"],
            2,
            "whole number of pixels",
        ),
        (
            vec!["--save-augmented", "x.png"],
            1,
            "no augmentation to show",
        ),
        (
            vec!["--augment", "shift", "--save-augmented", "x.gif"],
            2,
            "--save-augmented",
        ),
    ] {
        let mut a = vec!["--data-dir", d];
        a.extend(args.iter());
        let o = bin(&a);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

/// `idx-softmax augment --copies N`: the training set, then copy c of
/// every sample as epoch c of training deforms it; the test set as it was;
/// a set that trains.
#[test]
fn the_augment_command_writes_the_copies_training_sees() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    let src = common::write_synthetic(&dir.path().join("src"), 50, 10, 9, 7, 3, 5);
    let out = dir.path().join("out");
    let o = bin(&[
        "augment",
        "--data-dir",
        src.to_str().unwrap(),
        "--copies",
        "2",
        "--out",
        out.to_str().unwrap(),
        "--augment",
        "affine",
        "--seed",
        "11",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["train_samples"], 150);
    let a = common::load(&src);
    let b = common::load(&out);
    assert_eq!((b.train.len(), b.test.len()), (150, 10));
    assert_eq!(b.train.images.sample_shape(), [9, 7]);
    let (xa, xb) = (
        a.train.images.as_u8().unwrap(),
        b.train.images.as_u8().unwrap(),
    );
    let k = 63;
    assert_eq!(&xb[..50 * k], xa);
    let shape = augment::shape_of(&[9, 7]).unwrap();
    let aug = Augmenter::new(Augment::defaults(AugmentKind::Affine), shape).unwrap();
    let mut s = aug.scratch();
    let mut row = vec![0u8; k];
    for c in 1..=2usize {
        for i in [0usize, 17, 49] {
            aug.apply(
                11,
                (c - 1) as u64,
                i as u64,
                &xa[i * k..(i + 1) * k],
                &mut row,
                &mut s,
            );
            assert_eq!(
                &xb[(c * 50 + i) * k..(c * 50 + i + 1) * k],
                &row[..],
                "copy {c}, sample {i}"
            );
        }
    }
    let la = a.train.labels.to_vec();
    assert_eq!(
        b.train.labels.to_vec(),
        [la.clone(), la.clone(), la].concat()
    );
    assert_eq!(b.test.images.as_u8(), a.test.images.as_u8());
    assert_eq!(b.test.labels.to_vec(), a.test.labels.to_vec());
    let no_temp = std::fs::read_dir(&out)
        .unwrap()
        .all(|e| !e.unwrap().file_name().to_string_lossy().starts_with('.'));
    assert!(no_temp);
    // The new set trains.
    let o = bin(&["--data-dir", out.to_str().unwrap(), "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // Refused before any work: the data directory itself, a second
    // spelling already there, no copies.
    for (args, want) in [
        (
            vec!["--out", src.to_str().unwrap(), "--copies", "1"],
            "--out",
        ),
        (
            vec!["--out", out.to_str().unwrap(), "--copies", "0"],
            "must be >= 1, got 0",
        ),
    ] {
        let mut a = vec!["augment", "--data-dir", src.to_str().unwrap()];
        a.extend(args.iter());
        let o = bin(&a);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "{args:?}: {err}");
    }
    std::fs::write(out.join("train-images-idx3-ubyte.gz"), b"x").unwrap();
    let o = bin(&[
        "augment",
        "--data-dir",
        src.to_str().unwrap(),
        "--copies",
        "1",
        "--out",
        out.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("train-images-idx3-ubyte.gz") && err.contains("two versions"),
        "{err}"
    );
}
