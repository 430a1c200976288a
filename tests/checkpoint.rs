//! Safetensors checkpoints: round trips, every rejection path, atomic
//! writes, and interoperability with the Python reference implementation.

use std::collections::{BTreeMap, HashMap};
mod common;

use common::assert_one_line;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use idx_softmax::checkpoint::{self, CheckpointError, ExtraTensor, Tensor, FORMAT};
use idx_softmax::fsutil::write_atomic;
use idx_softmax::nn::{Network, ParamStore};
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;
use safetensors::tensor::{Dtype, TensorView};
use sha2::{Digest, Sha256};

/// An MNIST-sized softmax model with a non-zero bias.
fn model(seed: u64) -> Network {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut m = Network::init(&[784, 10], &mut rng).unwrap();
    for b in m.params_mut().get_mut(1) {
        *b = rng.random_range(-1.0..1.0);
    }
    m
}

fn small_model() -> Network {
    common::softmax_net(
        2,
        3,
        &[0.5, -1.25, 3.0, -0.0, 1e-30, -7.5],
        &[0.125, -2.0, 9.0],
    )
}

/// The weight (tensor 0) of a softmax network.
fn wt(m: &Network) -> &[f32] {
    m.params().get(0)
}

/// The bias (tensor 1) of a softmax network.
fn bias(m: &Network) -> &[f32] {
    m.params().get(1)
}

fn meta(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Names in `dir`, sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Writes raw safetensors bytes made by the reference crate.
fn write_raw(
    path: &Path,
    tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)],
    metadata: Option<HashMap<String, String>>,
) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    fs::write(path, safetensors::serialize(views, metadata).unwrap()).unwrap();
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn save_load_round_trip_is_bitwise() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let m = model(42);
    let mom_w: Vec<f32> = wt(&m).iter().map(|w| w * 0.5 - 1e-3).collect();
    let mom_b: Vec<f32> = bias(&m).iter().map(|b| -b).collect();
    let step = [1234.0f32];
    let extra: [ExtraTensor<'_>; 3] = [
        ("momentum.weight", &[10, 784], &mom_w),
        ("momentum.bias", &[10], &mom_b),
        ("step", &[], &step),
    ];
    let md = meta(&[
        ("seed", "42"),
        ("epochs", "3"),
        ("lr", "0.1"),
        ("note", "unicode ✓ and \"quotes\"\\"),
        ("format", "caller's value is replaced"),
    ]);
    checkpoint::save(&path, &m, &extra, &md).unwrap();
    let ck = checkpoint::load(&path).unwrap();

    assert_eq!((ck.network.features(), ck.network.classes()), (784, 10));
    assert_eq!(ck.network.sizes(), [784, 10]);
    assert_eq!(bits(wt(&ck.network)), bits(wt(&m)));
    assert_eq!(bits(bias(&ck.network)), bits(bias(&m)));
    assert_eq!(ck.network.digest(), m.digest());
    assert_eq!(ck.network, m);

    assert_eq!(ck.extra.len(), 3);
    assert_eq!(ck.extra["momentum.weight"].shape, [10, 784]);
    assert_eq!(bits(&ck.extra["momentum.weight"].data), bits(&mom_w));
    assert_eq!(ck.extra["momentum.bias"].shape, [10]);
    assert_eq!(bits(&ck.extra["momentum.bias"].data), bits(&mom_b));
    assert_eq!(
        ck.extra["step"],
        Tensor {
            shape: vec![],
            data: vec![1234.0]
        }
    );

    let mut want = md.clone();
    want.insert("format".into(), FORMAT.into());
    want.insert("crate_version".into(), env!("CARGO_PKG_VERSION").into());
    want.insert("layers".into(), "784-10".into());
    assert_eq!(ck.metadata, want);
    // No temporary file is left beside the checkpoint.
    assert_eq!(listing(dir.path()), ["model.safetensors"]);
}

#[test]
fn signed_zero_and_subnormals_survive() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    let m = small_model();
    checkpoint::save(&path, &m, &[], &BTreeMap::new()).unwrap();
    let ck = checkpoint::load(&path).unwrap();
    assert_eq!(bits(wt(&ck.network)), bits(wt(&m)));
    assert!(wt(&ck.network)[3].is_sign_negative());
    assert_eq!(wt(&ck.network)[4], 1e-30);
    assert_eq!(bits(bias(&ck.network)), bits(bias(&m)));
    assert!(ck.extra.is_empty());
    // format, crate_version and layers.
    assert_eq!(ck.metadata.len(), 3);
    assert_eq!(ck.metadata["layers"], "2-3");
}

#[test]
fn files_are_standard_and_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    let m = model(7);
    let md = meta(&[("z", "last"), ("a", "first"), ("m", "middle")]);
    let mom = vec![0.5f32; 10];
    let extra: [ExtraTensor<'_>; 1] = [("momentum.bias", &[10], &mom)];
    checkpoint::save(&a, &m, &extra, &md).unwrap();
    checkpoint::save(&b, &m, &extra, &md).unwrap();
    let bytes = fs::read(&a).unwrap();
    assert_eq!(bytes, fs::read(&b).unwrap(), "same input, different bytes");

    // The reference implementation reads it.
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let w = st.tensor("weight").unwrap();
    assert_eq!(w.dtype(), Dtype::F32);
    assert_eq!(w.shape(), [10, 784]);
    assert_eq!(w.data(), f32_bytes(wt(&m)));
    let b = st.tensor("bias").unwrap();
    assert_eq!(b.shape(), [10]);
    assert_eq!(b.data(), f32_bytes(bias(&m)));
    assert_eq!(st.names().len(), 3);
    assert_eq!(st.tensor("momentum.bias").unwrap().data(), f32_bytes(&mom));
    // The header is padded to 8 bytes.
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap());
    assert_eq!(n % 8, 0);
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let md = header.metadata().as_ref().unwrap();
    assert_eq!(md["format"], FORMAT);
    assert_eq!(md["a"], "first");
}

#[test]
fn loads_reference_files_without_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("torch.safetensors");
    let w = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    let b = [0.5f32, -0.5];
    write_raw(
        &path,
        &[
            ("weight", Dtype::F32, vec![2, 3], f32_bytes(&w)),
            ("bias", Dtype::F32, vec![2], f32_bytes(&b)),
        ],
        None,
    );
    let ck = checkpoint::load(&path).unwrap();
    assert_eq!(ck.network, common::softmax_net(3, 2, &w, &b));
    assert!(ck.metadata.is_empty());
}

#[test]
fn truncated_files_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    checkpoint::save(&path, &model(1), &[], &BTreeMap::new()).unwrap();
    let full = fs::read(&path).unwrap();
    let n = u64::from_le_bytes(full[..8].try_into().unwrap()) as usize;

    // Data cut short.
    let cut = dir.path().join("cut.safetensors");
    fs::write(&cut, &full[..full.len() - 4]).unwrap();
    match checkpoint::load(&cut).unwrap_err() {
        CheckpointError::Truncated {
            expected, found, ..
        } => {
            assert_eq!(expected, full.len() as u64);
            assert_eq!(found, full.len() as u64 - 4);
        }
        e => panic!("expected Truncated, got {e}"),
    }
    let e = checkpoint::load(&cut).unwrap_err();
    let msg = assert_one_line(&e, &cut);
    assert!(msg.contains("truncated"), "{msg}");

    // Header cut short.
    fs::write(&cut, &full[..8 + n / 2]).unwrap();
    assert!(matches!(
        checkpoint::load(&cut).unwrap_err(),
        CheckpointError::Truncated { expected, .. } if expected == 8 + n as u64
    ));

    // Shorter than the length field.
    for len in [0, 1, 7] {
        fs::write(&cut, &full[..len]).unwrap();
        let e = checkpoint::load(&cut).unwrap_err();
        assert!(matches!(e, CheckpointError::NotSafetensors { .. }), "{e}");
        assert_one_line(&e, &cut);
    }
}

#[test]
fn every_prefix_of_a_file_is_rejected_without_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    checkpoint::save(&path, &small_model(), &[], &meta(&[("k", "v")])).unwrap();
    let full = fs::read(&path).unwrap();
    let cut = dir.path().join("cut");
    for len in 0..full.len() {
        fs::write(&cut, &full[..len]).unwrap();
        let e = checkpoint::load(&cut).expect_err(&format!("prefix of {len} bytes loaded"));
        assert_one_line(&e, &cut);
    }
}

#[test]
fn flipped_bytes_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    checkpoint::save(&path, &small_model(), &[], &meta(&[("k", "v")])).unwrap();
    let full = fs::read(&path).unwrap();
    let bad = dir.path().join("bad");
    let mut rejected = 0;
    for i in 0..full.len() {
        for x in [0x01u8, 0x80, 0xFF] {
            let mut b = full.clone();
            b[i] ^= x;
            fs::write(&bad, &b).unwrap();
            if let Err(e) = checkpoint::load(&bad) {
                assert_one_line(&e, &bad);
                rejected += 1;
            }
        }
    }
    // Most header flips must be caught (data flips may still be finite).
    assert!(
        rejected > full.len(),
        "only {rejected} corruptions rejected"
    );
}

#[test]
fn corrupt_headers_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    checkpoint::save(&path, &small_model(), &[], &BTreeMap::new()).unwrap();
    let full = fs::read(&path).unwrap();
    let bad = dir.path().join("bad.safetensors");

    // Broken JSON inside the header.
    let text = String::from_utf8_lossy(&full).into_owned();
    let at = text.find("\"dtype\"").unwrap();
    let mut b = full.clone();
    b[at + 3] = b'}';
    fs::write(&bad, &b).unwrap();
    let e = checkpoint::load(&bad).unwrap_err();
    assert!(matches!(e, CheckpointError::CorruptHeader { .. }), "{e}");
    assert!(assert_one_line(&e, &bad).contains("corrupt safetensors header"));

    // Offsets that disagree with the shape.
    let at = text.find("\"data_offsets\":[0,").unwrap() + "\"data_offsets\":[0,".len();
    let mut b = full.clone();
    b[at] = if b[at] == b'1' { b'2' } else { b'1' };
    fs::write(&bad, &b).unwrap();
    let e = checkpoint::load(&bad).unwrap_err();
    assert!(matches!(e, CheckpointError::CorruptHeader { .. }), "{e}");

    // Invalid UTF-8.
    let mut b = full.clone();
    b[9] = 0xFF;
    fs::write(&bad, &b).unwrap();
    let e = checkpoint::load(&bad).unwrap_err();
    assert!(e.to_string().contains("UTF-8"), "{e}");

    // Not a JSON object at all.
    let mut b = full.clone();
    b[8] = b'[';
    fs::write(&bad, &b).unwrap();
    let e = checkpoint::load(&bad).unwrap_err();
    assert!(matches!(e, CheckpointError::NotSafetensors { .. }), "{e}");

    // Trailing bytes after the last tensor.
    let mut b = full.clone();
    b.extend_from_slice(&[0; 4]);
    fs::write(&bad, &b).unwrap();
    let e = checkpoint::load(&bad).unwrap_err();
    assert!(matches!(e, CheckpointError::CorruptHeader { .. }), "{e}");
}

#[test]
fn absurd_header_lengths_are_rejected_before_allocating() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.safetensors");
    for claim in [u64::MAX, 1 << 40, 100_000_001] {
        let mut b = claim.to_le_bytes().to_vec();
        b.extend_from_slice(b"{}");
        fs::write(&bad, &b).unwrap();
        let e = checkpoint::load(&bad).unwrap_err();
        assert!(matches!(e, CheckpointError::NotSafetensors { .. }), "{e}");
        assert!(e.to_string().contains("limit"), "{e}");
    }
    // Within the limit but beyond the file.
    let mut b = 99_999_992u64.to_le_bytes().to_vec();
    b.extend_from_slice(b"{}");
    fs::write(&bad, &b).unwrap();
    let e = checkpoint::load(&bad).unwrap_err();
    assert!(matches!(e, CheckpointError::Truncated { .. }), "{e}");

    // A huge shape in a tiny file is truncation, not an allocation.
    let header =
        br#"{"weight":{"dtype":"F32","shape":[1000000,1000000],"data_offsets":[0,4000000000000]}}"#;
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header);
    fs::write(&bad, &b).unwrap();
    let e = checkpoint::load(&bad).unwrap_err();
    assert!(matches!(e, CheckpointError::Truncated { .. }), "{e}");

    // Shapes whose size overflows.
    let header =
        br#"{"weight":{"dtype":"F32","shape":[18446744073709551615,2],"data_offsets":[0,8]}}"#;
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header);
    b.extend_from_slice(&[0; 8]);
    fs::write(&bad, &b).unwrap();
    let e = checkpoint::load(&bad).unwrap_err();
    assert!(matches!(e, CheckpointError::CorruptHeader { .. }), "{e}");
}

#[test]
fn foreign_files_are_not_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("image.png");
    fs::write(&bad, b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR and so on").unwrap();
    let e = checkpoint::load(&bad).unwrap_err();
    assert!(matches!(e, CheckpointError::NotSafetensors { .. }), "{e}");
    let e = checkpoint::load(dir.path()).unwrap_err();
    assert!(e.to_string().contains("directory"), "{e}");
    let missing = dir.path().join("missing.safetensors");
    let e = checkpoint::load(&missing).unwrap_err();
    assert!(matches!(e, CheckpointError::Io { .. }), "{e}");
    assert_one_line(&e, &missing);
}

#[test]
fn missing_tensors_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("renamed.safetensors");
    write_raw(
        &path,
        &[
            ("w", Dtype::F32, vec![2, 3], f32_bytes(&[0.0; 6])),
            ("bias", Dtype::F32, vec![2], f32_bytes(&[0.0; 2])),
        ],
        None,
    );
    let e = checkpoint::load(&path).unwrap_err();
    match &e {
        CheckpointError::MissingTensor { name, found, .. } => {
            assert_eq!(name, "weight");
            assert!(found.contains("\"w\""), "{found}");
        }
        e => panic!("expected MissingTensor, got {e}"),
    }
    let msg = assert_one_line(&e, &path);
    assert!(msg.contains("no tensor \"weight\""), "{msg}");

    write_raw(
        &path,
        &[("weight", Dtype::F32, vec![2, 3], f32_bytes(&[0.0; 6]))],
        None,
    );
    let e = checkpoint::load(&path).unwrap_err();
    assert!(
        matches!(&e, CheckpointError::MissingTensor { name, .. } if name == "bias"),
        "{e}"
    );

    write_raw(&path, &[], None);
    let e = checkpoint::load(&path).unwrap_err();
    assert!(e.to_string().contains("no tensors"), "{e}");
}

#[test]
fn wrong_dtypes_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f64.safetensors");
    write_raw(
        &path,
        &[
            ("weight", Dtype::F64, vec![2, 3], vec![0; 48]),
            ("bias", Dtype::F32, vec![2], f32_bytes(&[0.0; 2])),
        ],
        None,
    );
    let e = checkpoint::load(&path).unwrap_err();
    match &e {
        CheckpointError::WrongDtype { name, dtype, .. } => {
            assert_eq!((name.as_str(), dtype.as_str()), ("weight", "F64"));
        }
        e => panic!("expected WrongDtype, got {e}"),
    }
    assert!(assert_one_line(&e, &path).contains("F32"));

    write_raw(
        &path,
        &[
            ("weight", Dtype::F32, vec![2, 3], f32_bytes(&[0.0; 6])),
            ("bias", Dtype::F32, vec![2], f32_bytes(&[0.0; 2])),
            ("step", Dtype::I64, vec![], vec![0; 8]),
        ],
        None,
    );
    let e = checkpoint::load(&path).unwrap_err();
    assert!(
        matches!(&e, CheckpointError::WrongDtype { name, dtype, .. } if name == "step" && dtype == "I64"),
        "{e}"
    );
}

#[test]
fn wrong_shapes_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shape.safetensors");
    let cases: [(Vec<usize>, Vec<usize>, &str); 5] = [
        (vec![6], vec![2], "weight"),
        (vec![1, 2, 3], vec![2], "weight"),
        (vec![0, 3], vec![0], "weight"),
        (vec![2, 3], vec![3], "bias"),
        (vec![2, 3], vec![2, 1], "bias"),
    ];
    for (ws, bs, culprit) in cases {
        let wn: usize = ws.iter().product();
        let bn: usize = bs.iter().product();
        write_raw(
            &path,
            &[
                ("weight", Dtype::F32, ws.clone(), f32_bytes(&vec![0.0; wn])),
                ("bias", Dtype::F32, bs.clone(), f32_bytes(&vec![0.0; bn])),
            ],
            None,
        );
        let e = checkpoint::load(&path).unwrap_err();
        assert!(
            matches!(&e, CheckpointError::WrongShape { name, .. } if name == culprit),
            "weight {ws:?} bias {bs:?}: {e}"
        );
        assert_one_line(&e, &path);
    }
}

#[test]
fn non_finite_values_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nan.safetensors");
    for (bad, name) in [(f32::NAN, "weight"), (f32::INFINITY, "momentum")] {
        let mut w = vec![0.0f32; 6];
        let mut mom = vec![1.0f32; 4];
        if name == "weight" {
            w[4] = bad;
        } else {
            mom[4 - 1] = bad;
        }
        write_raw(
            &path,
            &[
                ("weight", Dtype::F32, vec![2, 3], f32_bytes(&w)),
                ("bias", Dtype::F32, vec![2], f32_bytes(&[0.0; 2])),
                ("momentum", Dtype::F32, vec![4], f32_bytes(&mom)),
            ],
            None,
        );
        let e = checkpoint::load(&path).unwrap_err();
        match &e {
            CheckpointError::NonFinite { name: n, index, .. } => {
                assert_eq!(n, name);
                assert_eq!(*index, if name == "weight" { 4 } else { 3 });
            }
            e => panic!("expected NonFinite, got {e}"),
        }
        assert_one_line(&e, &path);
    }

    // Saving a diverged model is refused, and nothing is written.
    let mut m = small_model();
    m.params_mut().get_mut(1)[1] = f32::NEG_INFINITY;
    let out = dir.path().join("diverged.safetensors");
    let e = checkpoint::save(&out, &m, &[], &BTreeMap::new()).unwrap_err();
    assert!(matches!(e, CheckpointError::InvalidInput { .. }), "{e}");
    assert!(e.to_string().contains("\"bias\""), "{e}");
    assert!(!out.exists());
}

#[test]
fn other_format_versions_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v2.safetensors");
    let tensors = [
        ("weight", Dtype::F32, vec![2, 1], f32_bytes(&[1.0, -1.0])),
        ("bias", Dtype::F32, vec![2], f32_bytes(&[0.0, 0.5])),
    ];
    let md = |f: &str| Some(HashMap::from([("format".to_string(), f.to_string())]));
    write_raw(&path, &tensors, md("idx-softmax/2"));
    let e = checkpoint::load(&path).unwrap_err();
    assert!(
        matches!(e, CheckpointError::UnsupportedFormat { .. }),
        "{e}"
    );
    assert!(e.to_string().contains("idx-softmax/2"), "{e}");
    // Someone else's format tag is fine.
    write_raw(&path, &tensors, md("pt"));
    assert_eq!(checkpoint::load(&path).unwrap().metadata["format"], "pt");
    // A one-class "classifier" is refused (Network needs at least 2).
    write_raw(
        &path,
        &[
            ("weight", Dtype::F32, vec![1, 1], f32_bytes(&[1.0])),
            ("bias", Dtype::F32, vec![1], f32_bytes(&[0.0])),
        ],
        md("pt"),
    );
    let e = checkpoint::load(&path).unwrap_err();
    assert!(matches!(e, CheckpointError::WrongShape { .. }), "{e}");
    assert!(assert_one_line(&e, &path).contains("2 classes"), "{e}");
}

#[test]
fn bad_save_inputs_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    fs::write(&path, b"previous content").unwrap();
    let m = small_model();
    let two = [1.0f32, 2.0];
    let cases: Vec<(Vec<ExtraTensor<'_>>, &str)> = vec![
        (vec![("weight", &[2], &two)], "replace"),
        (vec![("bias", &[2], &two)], "replace"),
        (vec![("x", &[3], &two)], "shape"),
        (vec![("x", &[2], &two), ("x", &[2], &two)], "twice"),
        (vec![("", &[2], &two)], "name"),
        (vec![("__metadata__", &[2], &two)], "name"),
        (vec![("x", &[usize::MAX, 2], &two)], "shape"),
    ];
    for (extra, words) in cases {
        let e = checkpoint::save(&path, &m, &extra, &BTreeMap::new()).unwrap_err();
        assert!(matches!(e, CheckpointError::InvalidInput { .. }), "{e}");
        let msg = assert_one_line(&e, &path);
        assert!(msg.contains(words), "{msg}");
    }
    // A network whose tensors disagree with its sizes cannot even be
    // built (what `wt.pop()` on the old Model tested at save time).
    let short = ParamStore::zeros(&[("weight".into(), vec![3, 1]), ("bias".into(), vec![3])]);
    assert!(Network::from_params(&idx_softmax::nn::Architecture::mlp(&[2, 3]), short).is_err());
    let renamed = ParamStore::zeros(&[("w".into(), vec![3, 2]), ("bias".into(), vec![3])]);
    assert!(Network::from_params(&idx_softmax::nn::Architecture::mlp(&[2, 3]), renamed).is_err());
    assert_eq!(fs::read(&path).unwrap(), b"previous content");
    assert_eq!(listing(dir.path()), ["m.safetensors"]);
}

#[test]
fn failed_writes_leave_no_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let m = small_model();

    // A missing directory: a clean I/O error, nothing created.
    let nowhere = dir.path().join("no/such/dir/m.safetensors");
    let e = checkpoint::save(&nowhere, &m, &[], &BTreeMap::new()).unwrap_err();
    assert!(matches!(e, CheckpointError::Io { .. }), "{e}");
    assert_one_line(&e, &nowhere);
    assert!(listing(dir.path()).is_empty());

    // The destination is a directory: the rename fails, the temporary file
    // is removed, the directory is untouched.
    let sub = dir.path().join("taken");
    fs::create_dir(&sub).unwrap();
    let e = checkpoint::save(&sub, &m, &[], &BTreeMap::new()).unwrap_err();
    assert!(matches!(e, CheckpointError::Io { .. }), "{e}");
    assert_eq!(listing(dir.path()), ["taken"]);
    assert!(listing(&sub).is_empty());

    // A writer that fails halfway: the old content survives, no temporary
    // file remains.
    let dest = dir.path().join("keep.safetensors");
    checkpoint::save(&dest, &m, &[], &BTreeMap::new()).unwrap();
    let before = fs::read(&dest).unwrap();
    let err = write_atomic(&dest, |f| {
        use std::io::Write;
        f.write_all(b"half a checkp")?;
        Err(std::io::Error::other("disk on fire"))
    })
    .unwrap_err();
    assert_eq!(err.to_string(), "disk on fire");
    assert_eq!(fs::read(&dest).unwrap(), before);
    assert_eq!(listing(dir.path()), ["keep.safetensors", "taken"]);
    checkpoint::load(&dest).unwrap();

    // A successful overwrite replaces the content.
    let m2 = model(3);
    checkpoint::save(&dest, &m2, &[], &BTreeMap::new()).unwrap();
    assert_eq!(checkpoint::load(&dest).unwrap().network, m2);
    assert_eq!(listing(dir.path()), ["keep.safetensors", "taken"]);
}

#[cfg(unix)]
#[test]
fn read_only_directory_fails_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let ro = dir.path().join("ro");
    fs::create_dir(&ro).unwrap();
    let dest = ro.join("m.safetensors");
    checkpoint::save(&dest, &small_model(), &[], &BTreeMap::new()).unwrap();
    let before = fs::read(&dest).unwrap();
    // chmod where permissions bind, chattr +i for root.
    let Some(guard) = common::read_only_dir(&ro) else {
        common::missing_prerequisite("a read-only directory (chmod 0555, or chattr +i as root)");
        return;
    };
    let result = checkpoint::save(&dest, &model(9), &[], &BTreeMap::new());
    drop(guard);
    let e = result.unwrap_err();
    assert!(matches!(e, CheckpointError::Io { .. }), "{e}");
    assert_one_line(&e, &dest);
    assert_eq!(fs::read(&dest).unwrap(), before);
    assert_eq!(listing(&ro), ["m.safetensors"]);
}

#[cfg(unix)]
#[test]
fn written_files_get_ordinary_permissions() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.safetensors");
    checkpoint::save(&path, &small_model(), &[], &BTreeMap::new()).unwrap();
    let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    // Not the owner-only 0o600 of a temporary file, unless the umask says so.
    let probe = dir.path().join("probe");
    fs::write(&probe, b"").unwrap();
    let umask_mode = fs::metadata(&probe).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, umask_mode);
}

// ---------------------------------------------------------------------------
// Python interoperability (fails under CI=true, and is skipped elsewhere,
// where safetensors/numpy are not installed).

use common::python;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/safetensors_interop.py")
}

fn run_script(exe: &str, mode: &str, file: &Path) -> serde_json::Value {
    let out = Command::new(exe)
        .arg(script())
        .arg(mode)
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn sha256_le(v: &[f32]) -> String {
    let mut h = Sha256::new();
    for x in v {
        h.update(x.to_le_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn python_reads_our_checkpoints() {
    let Some(exe) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let m = model(2024);
    let mom: Vec<f32> = wt(&m).iter().map(|w| -w).collect();
    let extra: [ExtraTensor<'_>; 1] = [("momentum.weight", &[10, 784], &mom)];
    checkpoint::save(&path, &m, &extra, &meta(&[("seed", "2024")])).unwrap();
    let got = run_script(&exe, "describe", &path);

    let t = &got["tensors"];
    assert_eq!(t.as_object().unwrap().len(), 3);
    for (name, shape, data) in [
        ("weight", vec![10, 784], wt(&m)),
        ("bias", vec![10], bias(&m)),
        ("momentum.weight", vec![10, 784], &mom[..]),
    ] {
        assert_eq!(t[name]["dtype"], "float32", "{name}");
        assert_eq!(t[name]["shape"], serde_json::json!(shape), "{name}");
        assert_eq!(t[name]["sha256"], sha256_le(data), "{name}");
        // Exact f32 values printed as f64: back to f32 without loss.
        let head: Vec<f32> = t[name]["head"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(bits(&head), bits(&data[..5]), "{name}");
    }
    assert_eq!(got["metadata"]["seed"], "2024");
    assert_eq!(got["metadata"]["format"], FORMAT);
    assert_eq!(got["metadata"]["crate_version"], env!("CARGO_PKG_VERSION"));
}

#[test]
fn we_read_python_checkpoints() {
    let Some(exe) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("from_numpy.safetensors");
    let got = run_script(&exe, "write", &path);
    let ck = checkpoint::load(&path).unwrap();
    assert_eq!((ck.network.classes(), ck.network.features()), (3, 4));
    let want_w: Vec<f32> = (0..12).map(|i| (i as f32 - 5.5) / 7.0).collect();
    assert_eq!(bits(wt(&ck.network)), bits(&want_w));
    assert_eq!(bias(&ck.network), [0.25, -1.5, 3.0]);
    assert_eq!(
        got["tensors"]["weight"]["sha256"],
        sha256_le(wt(&ck.network))
    );
    assert_eq!(ck.metadata["format"], "pt");
}

// ---------------------------------------------------------------------------
// MLPs: nn.Sequential names.

/// A 784-32-16-10 network with non-zero biases.
fn mlp(seed: u64) -> Network {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut m = Network::init(&[784, 32, 16, 10], &mut rng).unwrap();
    for i in [1, 3, 5] {
        for b in m.params_mut().get_mut(i) {
            *b = rng.random_range(-1.0..1.0);
        }
    }
    m
}

#[test]
fn mlp_round_trip_uses_sequential_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mlp.safetensors");
    let m = mlp(5);
    let mom: Vec<f32> = m.params().get(2).iter().map(|v| v * 0.25).collect();
    let extra: [ExtraTensor<'_>; 1] = [("momentum.2.weight", &[16, 32], &mom)];
    checkpoint::save(
        &path,
        &m,
        &extra,
        &meta(&[("layers", "caller's is replaced")]),
    )
    .unwrap();
    let ck = checkpoint::load(&path).unwrap();
    assert_eq!(ck.network, m);
    assert_eq!(ck.network.digest(), m.digest());
    assert_eq!(ck.network.sizes(), [784, 32, 16, 10]);
    assert_eq!(ck.metadata["layers"], "784-32-16-10");
    assert_eq!(ck.extra.len(), 1);
    assert_eq!(bits(&ck.extra["momentum.2.weight"].data), bits(&mom));

    // The reference implementation sees nn.Sequential(Linear, ReLU, Linear,
    // ReLU, Linear)'s state dict.
    let bytes = fs::read(&path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    assert_eq!(
        names,
        [
            "0.bias",
            "0.weight",
            "2.bias",
            "2.weight",
            "4.bias",
            "4.weight",
            "momentum.2.weight"
        ]
    );
    for (i, t) in m.params().tensors().iter().enumerate() {
        let v = st.tensor(&t.name).unwrap();
        assert_eq!(v.dtype(), Dtype::F32);
        assert_eq!(v.shape(), &t.shape[..], "{}", t.name);
        assert_eq!(v.data(), f32_bytes(m.params().get(i)), "{}", t.name);
    }
    // A softmax-named file of the same sizes does not clash: names decide.
    assert!(st.tensor("weight").is_err());
}

#[test]
fn inconsistent_mlp_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.safetensors");
    let t = |name: &'static str, shape: &[usize]| {
        let n: usize = shape.iter().product();
        (name, Dtype::F32, shape.to_vec(), f32_bytes(&vec![0.5; n]))
    };
    type RawTensor = (&'static str, Dtype, Vec<usize>, Vec<u8>);
    // (tensors, the tensor blamed, words of the message)
    let cases: Vec<(Vec<RawTensor>, &str, &str)> = vec![
        (
            vec![
                t("0.weight", &[16, 784]),
                t("0.bias", &[16]),
                t("2.weight", &[10, 15]),
                t("2.bias", &[10]),
            ],
            "2.weight",
            "15 inputs do not match the 16 outputs",
        ),
        (
            vec![
                t("0.weight", &[16, 784]),
                t("0.bias", &[16]),
                t("2.weight", &[10, 16]),
                t("2.bias", &[16]),
            ],
            "2.bias",
            "expected [10]",
        ),
        (
            vec![
                t("0.weight", &[16, 784]),
                t("0.bias", &[16]),
                t("1.weight", &[16, 16]),
                t("2.weight", &[10, 16]),
                t("2.bias", &[10]),
            ],
            "1.weight",
            "not part of the layer sequence 0.weight, 2.weight",
        ),
        (
            vec![
                t("0.weight", &[16, 784, 1]),
                t("0.bias", &[16]),
                t("2.weight", &[10, 16]),
                t("2.bias", &[10]),
            ],
            "0.weight",
            "[outputs, inputs]",
        ),
    ];
    for (tensors, culprit, words) in cases {
        write_raw(&path, &tensors, None);
        let e = checkpoint::load(&path).unwrap_err();
        assert!(
            matches!(&e, CheckpointError::WrongShape { name, .. } if name == culprit),
            "{culprit}: {e}"
        );
        assert!(assert_one_line(&e, &path).contains(words), "{e}");
    }
    // A missing bias.
    write_raw(
        &path,
        &[
            t("0.weight", &[16, 784]),
            t("0.bias", &[16]),
            t("2.weight", &[10, 16]),
        ],
        None,
    );
    let e = checkpoint::load(&path).unwrap_err();
    assert!(
        matches!(&e, CheckpointError::MissingTensor { name, .. } if name == "2.bias"),
        "{e}"
    );
    assert_one_line(&e, &path);
    // The metadata's layer sizes must be the tensors'.
    let good = vec![
        t("0.weight", &[16, 784]),
        t("0.bias", &[16]),
        t("2.weight", &[10, 16]),
        t("2.bias", &[10]),
    ];
    let md = |v: &str| Some(HashMap::from([("layers".to_string(), v.to_string())]));
    write_raw(&path, &good, md("784-16-10"));
    assert_eq!(
        checkpoint::load(&path).unwrap().network.sizes(),
        [784, 16, 10]
    );
    for lie in ["784-32-10", "784-10", "garbage"] {
        write_raw(&path, &good, md(lie));
        let e = checkpoint::load(&path).unwrap_err();
        assert!(
            matches!(&e, CheckpointError::WrongShape { name, .. } if name == "layers"),
            "{lie}: {e}"
        );
        let msg = assert_one_line(&e, &path);
        assert!(msg.contains(lie) && msg.contains("784-16-10"), "{msg}");
    }
}

#[test]
fn python_reads_our_mlp_checkpoints() {
    let Some(exe) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mlp.safetensors");
    let m = mlp(11);
    checkpoint::save(&path, &m, &[], &BTreeMap::new()).unwrap();
    let got = run_script(&exe, "describe", &path);
    let t = &got["tensors"];
    assert_eq!(t.as_object().unwrap().len(), 6);
    for (i, spec) in m.params().tensors().iter().enumerate() {
        let name = spec.name.as_str();
        assert_eq!(t[name]["dtype"], "float32", "{name}");
        assert_eq!(t[name]["shape"], serde_json::json!(spec.shape), "{name}");
        assert_eq!(t[name]["sha256"], sha256_le(m.params().get(i)), "{name}");
    }
    assert_eq!(got["metadata"]["layers"], "784-32-16-10");
}
