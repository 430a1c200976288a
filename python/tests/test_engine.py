"""The package against the CLI and the engine's promises: same bits, same
checkpoints, no copies, the GIL released, the library's errors."""

import json
import pickle
import subprocess
import threading
import time
import tracemalloc

import numpy as np
import pytest

import idx_softmax
from idx_softmax import IdxData, MLPClassifier, SoftmaxRegression, load_idx

# The CLI's default run (`cargo run --release -- --json`) on each kernel
# path: bits are promised per path (tests/common/mod.rs holds the same
# table), and the default run takes the best path this CPU offers (capped by
# IDX_SOFTMAX_KERNEL).
DEFAULT_DIGESTS = {
    "avx512": "66072fba588cb2cc85487f698f4beecd4fb4114db070231ad499ef55bd3af66e",
    "avx2": "cf281c1a6c9bcbfbbc95ecf402af8688573dc928ad07199e476939f113dc8530",
    "portable": "b0651d977e0a76e173df9dc3d002942df3f9559034655319edcb02348808740c",
    "gemm": "813f7e4baf919663a917ae98fd4d17b4e82c51839a61fa6297df89890d4b3dd8",
}


def run_cli(cli, *args):
    out = subprocess.run(
        [str(cli), *map(str, args)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


# ---------------------------------------------------------------- parity


def test_default_fit_gives_the_cli_digest(mnist, cli):
    X, y, Xt, yt = mnist
    clf = SoftmaxRegression().fit(X, y)
    assert clf.weights_digest_ == DEFAULT_DIGESTS[clf.kernel_]
    cli_run = run_cli(cli, "--json")
    assert cli_run["weights_digest"] == clf.weights_digest_
    assert clf.score(Xt, yt) == pytest.approx(cli_run["test_accuracy"], abs=0)
    assert clf.n_iter_ == 1 and clf.kernel_ == cli_run["kernel"]


def test_mlp_and_recipe_match_the_cli(mnist, cli):
    X, y, Xt, yt = mnist
    args = dict(epochs=2, batch_size=200, lr=0.2, momentum=0.9, schedule="cosine")
    clf = MLPClassifier(hidden_layer_sizes=(32,), **args).fit(X, y)
    cli_run = run_cli(
        cli, "--json", "--hidden", 32, "--epochs", 2, "--batch-size", 200,
        "--lr", 0.2, "--momentum", 0.9, "--schedule", "cosine",
    )
    assert clf.weights_digest_ == cli_run["weights_digest"]
    assert clf.score(Xt, yt) == cli_run["test_accuracy"]


def test_threads_do_not_change_the_bits(mnist):
    X, y, _, _ = mnist
    one = SoftmaxRegression(threads=1).fit(X, y)
    two = SoftmaxRegression(threads=2).fit(X, y)
    assert one.weights_digest_ == two.weights_digest_ == DEFAULT_DIGESTS[one.kernel_]


def test_partial_fit_and_warm_start_continue_the_run(mnist):
    X, y, _, _ = mnist
    X, y = X[:6000], y[:6000]
    kw = dict(epochs=3, momentum=0.9, schedule="cosine", lr=0.05)
    whole = SoftmaxRegression(**kw).fit(X, y)
    stepwise = SoftmaxRegression(**kw)
    for _ in range(3):
        stepwise.partial_fit(X, y)
    assert stepwise.weights_digest_ == whole.weights_digest_
    assert stepwise.n_iter_ == 3 and len(stepwise.loss_curve_) == 3
    # warm_start with a constant schedule: two 1-epoch fits are one 2-epoch run
    two = MLPClassifier((16,), epochs=2).fit(X, y)
    warm = MLPClassifier((16,), epochs=1, warm_start=True).fit(X, y).fit(X, y)
    assert warm.weights_digest_ == two.weights_digest_ and warm.n_iter_ == 2


def test_warm_start_keeps_the_resume_rules():
    """warm_start continues the run bit for bit, so it checks what --resume
    checks: a setting changed since the fit is refused, by its name."""
    X = np.random.default_rng(1).random((60, 4), dtype=np.float32)
    y = np.arange(60) % 3
    clf = SoftmaxRegression(warm_start=True, momentum=0.5).fit(X, y)
    before = clf.weights_digest_
    with pytest.raises(ValueError) as e:
        clf.set_params(lr=0.2).fit(X, y)
    msg = str(e.value)
    assert msg.startswith("lr 0.2 does not match the fitted model") and "lr 0.1" in msg, msg
    assert clf.weights_digest_ == before
    clf.set_params(lr=0.1).fit(X, y)
    assert clf.n_iter_ == 2


def test_ctrl_c_stops_a_fit_within_an_epoch(mnist):
    """SIGINT during an epoch raises KeyboardInterrupt within a step or
    two, not at the epoch's end, and leaves the estimator as it was."""
    import os
    import signal

    X, y, _, _ = mnist
    clf = MLPClassifier((16,)).fit(X[:500], y[:500])
    before = clf.weights_digest_
    big = dict(hidden_layer_sizes=(2048,), epochs=3, threads=1)
    # One epoch of this network, timed, to show the interrupt comes early.
    start = time.perf_counter()
    MLPClassifier(**big, ).fit(X[:6000], y[:6000])
    epoch_s = (time.perf_counter() - start) * 10 / 3  # 60000 rows, 1 epoch
    sent = []

    def interrupt():
        time.sleep(0.5)
        sent.append(time.perf_counter())
        os.kill(os.getpid(), signal.SIGINT)

    t = threading.Thread(target=interrupt)
    t.start()
    with pytest.raises(KeyboardInterrupt):
        clf.set_params(**big).fit(X, y)
    waited = time.perf_counter() - sent[0]
    t.join()
    assert waited < min(1.0, epoch_s / 2), (waited, epoch_s)
    assert clf.weights_digest_ == before


# ------------------------------------------------------------ checkpoints


def test_python_save_is_read_by_cli_eval(mnist, cli, tmp_path):
    X, y, Xt, yt = mnist
    for clf in [SoftmaxRegression(), MLPClassifier(hidden_layer_sizes=(32,))]:
        clf.fit(X, y)
        path = tmp_path / f"{type(clf).__name__}.safetensors"
        clf.save(path)
        ev = run_cli(cli, "eval", "--model", path, "--json")
        assert ev["weights_digest"] == clf.weights_digest_
        assert ev["test_accuracy"] == clf.score(Xt, yt)
        assert ev["epochs_done"] == 1


def test_python_save_records_the_data(mnist, cli, tmp_path):
    X, y, Xt, yt = mnist
    # from load_idx: the sample shape and directory of the files
    clf = SoftmaxRegression().fit(X[:5000], y[:5000])
    assert clf._model.sample_shape == [28, 28]
    assert clf._model.data_dir == X.base.data_dir
    # float arrays of square images: recorded as square images
    X32 = X[:5000].astype(np.float32) / np.float32(255)
    flt = MLPClassifier((16,)).fit(X32, y[:5000])
    flt.save(tmp_path / "f.safetensors")
    ev = run_cli(cli, "eval", "--model", tmp_path / "f.safetensors", "--json")
    assert ev["weights_digest"] == flt.weights_digest_
    assert flt._model.sample_shape == [28, 28]
    assert SoftmaxRegression().fit(np.eye(3), [0, 1, 1])._model.sample_shape == [3]


def test_cli_save_is_read_by_python(mnist, cli, tmp_path):
    X, y, Xt, yt = mnist
    cases = [
        (SoftmaxRegression, ["--epochs", 2, "--momentum", 0.9]),
        (MLPClassifier, ["--hidden", 24, "--hidden", 12]),
    ]
    for cls, args in cases:
        path = tmp_path / f"{cls.__name__}.safetensors"
        run = run_cli(cli, "--json", "--save", path, *args)
        clf = cls.load(path)
        assert clf.weights_digest_ == run["weights_digest"]
        assert clf.score(Xt, yt) == run["test_accuracy"]
        ev = run_cli(cli, "eval", "--model", path, "--json")
        assert clf.score(Xt, yt) == ev["test_accuracy"]
        assert list(clf.classes_) == list(range(10))
    mlp = MLPClassifier.load(tmp_path / "MLPClassifier.safetensors")
    assert mlp.hidden_layer_sizes == (24, 12)
    assert [c.shape for c in mlp.coefs_] == [(784, 24), (24, 12), (12, 10)]
    soft = SoftmaxRegression.load(tmp_path / "SoftmaxRegression.safetensors")
    assert soft.get_params()["momentum"] == 0.9 and soft.n_iter_ == 2


def test_resume_of_a_cli_checkpoint_continues_bit_for_bit(mnist, cli, tmp_path):
    X, y, _, _ = mnist
    path = tmp_path / "one.safetensors"
    run_cli(cli, "--json", "--save", path, "--epochs", 1, "--momentum", 0.5)
    two = run_cli(cli, "--json", "--epochs", 2, "--momentum", 0.5)
    clf = SoftmaxRegression.load(path).set_params(epochs=2)
    clf.partial_fit(X, y)
    assert clf.weights_digest_ == two["weights_digest"]


def test_labels_survive_save_load_and_pickle(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5)).astype(np.float32)
    y = np.array(["cat", "dog", "emu"])[(X[:, 0] > 0).astype(int) + (X[:, 1] > 0)]
    clf = MLPClassifier((8,), epochs=5).fit(X, y)
    clf.save(tmp_path / "m.safetensors")
    back = MLPClassifier.load(tmp_path / "m.safetensors")
    assert list(back.classes_) == ["cat", "dog", "emu"]
    # recorded as the CLI's class names too (predict prints them)
    assert idx_softmax._core.load_model(str(tmp_path / "m.safetensors")).class_names == [
        "cat", "dog", "emu"]
    assert np.array_equal(back.predict(X), clf.predict(X))
    again = pickle.loads(pickle.dumps(clf))
    assert np.array_equal(again.predict_proba(X), clf.predict_proba(X))
    odd = SoftmaxRegression(epochs=3).fit(X, np.array([3, 10, 42])[(X[:, 0] > 0).astype(int) * 2])
    assert list(odd.classes_) == [3, 42]
    assert set(odd.predict(X)) <= {3, 42}


def test_load_refuses_the_other_estimator(tmp_path, mnist):
    X, y, _, _ = mnist
    SoftmaxRegression().fit(X[:500], y[:500]).save(tmp_path / "s.safetensors")
    with pytest.raises(ValueError, match="SoftmaxRegression.load"):
        MLPClassifier.load(tmp_path / "s.safetensors")


# -------------------------------------------------------------- zero copy


def test_load_idx_views_the_mapping(mnist):
    X, y, Xt, yt = mnist
    assert X.shape == (60000, 784) and X.dtype == np.uint8
    assert Xt.shape == (10000, 784) and y.dtype == yt.dtype == np.uint8
    for a in (X, y, Xt, yt):
        assert not a.flags["OWNDATA"] and not a.flags["WRITEABLE"]
        assert isinstance(a.base, IdxData)
    assert X.base is y.base is Xt.base
    assert X.base.sample_shape == [28, 28] and X.base.classes == 10
    again = load_idx(idx_softmax.BUNDLED_MNIST)
    assert np.array_equal(again[0][:100], X[:100])


def test_views_keep_the_mapping_alive():
    X = load_idx()[0]
    owner_gone = X[59999].copy()
    import gc

    gc.collect()
    assert np.array_equal(X[59999], owner_gone)


def _peak_during(fn):
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_fit_and_predict_borrow_uint8_and_float32(mnist):
    X, y, Xt, _ = mnist
    mb = 1 << 20
    # X is 47 MB as uint8 (188 MB as float32): a copy would show.
    assert _peak_during(lambda: SoftmaxRegression().fit(X, y)) < 4 * mb
    clf = SoftmaxRegression().fit(X, y)
    assert _peak_during(lambda: clf.predict(Xt)) < 4 * mb
    X32 = np.asarray(X[:20000], dtype=np.float32)  # 63 MB
    assert _peak_during(lambda: SoftmaxRegression().fit(X32, y[:20000])) < 4 * mb
    # float64 is converted, once
    X64 = X32.astype(np.float64)
    peak = _peak_during(lambda: SoftmaxRegression().fit(X64, y[:20000]))
    assert X32.nbytes <= peak < 1.5 * X32.nbytes
    # same values, same bits
    a = SoftmaxRegression().fit(X32, y[:20000]).weights_digest_
    assert SoftmaxRegression().fit(X64, y[:20000]).weights_digest_ == a
    assert SoftmaxRegression().fit(np.asfortranarray(X32), y[:20000]).weights_digest_ == a


def test_parameters_are_views_of_the_model(mnist):
    X, y, _, _ = mnist
    clf = SoftmaxRegression().fit(X[:1000], y[:1000])
    w = clf.coef_
    assert w.shape == (10, 784) and clf.intercept_.shape == (10,)
    assert not w.flags["OWNDATA"] and not w.flags["WRITEABLE"]
    assert np.shares_memory(w, clf.coef_)
    mlp = MLPClassifier((16,)).fit(X[:1000], y[:1000])
    assert [c.shape for c in mlp.coefs_] == [(784, 16), (16, 10)]
    assert [b.shape for b in mlp.intercepts_] == [(16,), (10,)]


def test_pixel_scale_auto_is_the_notebook_scaling(mnist):
    X, y, _, _ = mnist
    X, y = X[:3000], y[:3000]
    # uint8 × (1/255 as f32), as the engine scales in its registers
    scaled = X.astype(np.float32) * np.float32(1 / 255)
    a = MLPClassifier((16,)).fit(X, y)
    b = MLPClassifier((16,)).fit(scaled, y)
    c = MLPClassifier((16,), pixel_scale=1 / 255).fit(X, y)
    # float32 input runs on gemm, uint8 on the fused kernels: same values,
    # rounding apart
    assert b.weights_digest_ == c.weights_digest_
    np.testing.assert_allclose(a.coefs_[0], b.coefs_[0], atol=1e-4)
    assert a.kernel_ != "gemm" and b.kernel_ == "gemm"
    raw = MLPClassifier((16,), pixel_scale=1.0).fit(X, y)
    assert raw.weights_digest_ != a.weights_digest_


# -------------------------------------------------------------------- GIL


def test_the_gil_is_released_during_fit(mnist):
    X, y, _, _ = mnist
    clf = MLPClassifier(hidden_layer_sizes=(512,), threads=1)

    def count_while(work):
        """Iterations a busy Python thread makes while `work` runs."""
        done = threading.Event()
        counts = [0]

        def busy():
            n = 0
            while not done.is_set():
                n += 1
            counts[0] = n

        worker = threading.Thread(target=busy)
        worker.start()
        start = time.perf_counter()
        try:
            work()
        finally:
            seconds = time.perf_counter() - start
            done.set()
            worker.join()
        return counts[0], seconds

    idle, idle_s = count_while(lambda: time.sleep(0.3))
    during, fit_s = count_while(lambda: clf.fit(X, y))
    rate = idle / idle_s
    assert fit_s > 0.2
    # Holding the GIL, the fit would let the loop run only in the switch
    # intervals around it (~1% of a one-second fit); released, the loop runs
    # on the other core most of the time.
    assert during > 0.1 * rate * fit_s, (during, rate, fit_s)


# ----------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "params, message",
    [
        (dict(lr=-1), "lr must be finite and > 0, got -1"),
        (dict(lr=float("nan")), "lr must be finite and > 0, got NaN"),
        (dict(momentum=1.0), "momentum must be in [0, 1), got 1"),
        (dict(nesterov=True), "nesterov needs momentum > 0"),
        (dict(epochs=0), "epochs must be >= 1, got 0"),
        (dict(batch_size=0), "batch_size must be >= 1, got 0"),
        (dict(threads=0), "threads must be in 1..=1024, got 0"),
        (dict(val_split=1.5), "val_split must be in [0, 1), got 1.5"),
        (dict(weight_decay=-0.5), "weight_decay must be finite and >= 0, got -0.5"),
        (dict(schedule="linear"), "linear"),
        (dict(seed=-1), "seed must be an integer in 0..=18446744073709551615, got -1"),
        (dict(seed=2**70), "seed must be an integer"),
        (dict(pixel_scale="raw"), "pixel_scale"),
    ],
)
def test_bad_parameters_raise_the_library_message(params, message):
    X = np.random.default_rng(0).random((20, 3), dtype=np.float32)
    y = np.arange(20) % 2
    with pytest.raises(ValueError) as e:
        SoftmaxRegression(**params).fit(X, y)
    assert message in str(e.value)
    # Python's names, never the CLI's flags.
    assert "--" not in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_hidden_width():
    X = np.zeros((4, 2), np.float32)
    with pytest.raises(ValueError, match="hidden_layer_sizes must be in 1..=1048576, got 0"):
        MLPClassifier(hidden_layer_sizes=(0,)).fit(X, [0, 1, 0, 1])
    # the value the user gave, not a converted one
    with pytest.raises(ValueError, match="hidden_layer_sizes must be in 1..=1048576, got -3"):
        MLPClassifier(hidden_layer_sizes=(16, -3)).fit(X, [0, 1, 0, 1])


def test_bad_data_raises_value_error():
    X = np.ones((4, 2), np.float32)
    X[2, 1] = np.nan
    with pytest.raises(ValueError, match="sample 2, feature 1 is NaN"):
        SoftmaxRegression().fit(X, [0, 1, 0, 1])
    with pytest.raises(ValueError, match="at least 2 are needed"):
        SoftmaxRegression().fit(np.ones((4, 2)), [1, 1, 1, 1])
    clf = SoftmaxRegression().fit(np.ones((4, 2)), [0, 1, 0, 1])
    with pytest.raises(ValueError, match="is inf"):
        clf.predict(np.array([[1.0, np.inf]]))
    with pytest.raises(ValueError, match="not in classes_"):
        clf.partial_fit(np.ones((2, 2)), [0, 7])
    # a failed fit leaves the fitted estimator as it was
    before = (clf.weights_digest_, list(clf.classes_))
    with pytest.raises(ValueError, match="^lr must be"):
        clf.set_params(lr=-1).fit(np.ones((3, 2)), ["a", "b", "c"])
    assert (clf.weights_digest_, list(clf.classes_)) == before
    assert clf.set_params(lr=0.1).predict(np.ones((1, 2)))[0] in (0, 1)


def test_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such-dir"):
        load_idx(tmp_path / "no-such-dir")
    with pytest.raises(OSError, match="no training images file"):
        load_idx(tmp_path)
    for name in ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]:
        (tmp_path / name).write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 3)
    with pytest.raises(ValueError, match="-ubyte: .*truncated|-ubyte: "):
        load_idx(tmp_path)
    with pytest.raises(OSError, match="missing.safetensors"):
        SoftmaxRegression.load(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ValueError, match="junk.safetensors"):
        SoftmaxRegression.load(tmp_path / "junk.safetensors")
    clf = SoftmaxRegression().fit(np.eye(2), [0, 1])
    with pytest.raises(OSError, match="does not exist|No such file"):
        clf.save(tmp_path / "no" / "dir" / "m.safetensors")


def test_verbose_reports_each_epoch(capsys, mnist):
    X, y, _, _ = mnist
    SoftmaxRegression(epochs=2, verbose=1).fit(X[:2000], y[:2000])
    out = capsys.readouterr()
    text = out.out + out.err
    assert "epoch 1/2" in text and "epoch 2/2" in text and "train loss" in text


# ----------------------------------------------- untrusted input, round 3


def _write_idx(path, array, gz=False):
    """`array` (uint8) as an IDX file, gzip-compressed when `gz`."""
    import gzip

    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    data = b"\x00\x00\x08" + bytes([array.ndim]) + dims + array.tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)


def _tiny_dataset(directory, seed=0):
    rng = np.random.default_rng(seed)
    for split, n in (("train", 60), ("t10k", 20)):
        _write_idx(directory / f"{split}-images-idx3-ubyte",
                   rng.integers(0, 256, (n, 4, 4), dtype=np.uint8))
        _write_idx(directory / f"{split}-labels-idx1-ubyte",
                   rng.integers(0, 3, n, dtype=np.uint8))


def test_save_never_overwrites_the_data_it_reads(tmp_path):
    _tiny_dataset(tmp_path)
    images = tmp_path / "train-images-idx3-ubyte"
    before = images.read_bytes()
    X, y, Xt, yt = load_idx(tmp_path)
    clf = SoftmaxRegression(epochs=1).fit(X, y)
    with pytest.raises(OSError, match="an input this process reads"):
        clf.save(images)
    assert images.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
         "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"])
    clf.save(tmp_path / "m.safetensors")


def test_two_versions_of_a_data_file_are_refused(tmp_path):
    _tiny_dataset(tmp_path)
    other = np.zeros((60, 4, 4), dtype=np.uint8)
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", other, gz=True)
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte and .*"
                       r"train-images-idx3-ubyte\.gz are both the training images"):
        load_idx(tmp_path)


def test_messages_quote_the_value_given(monkeypatch):
    X, y = np.eye(2), [0, 1]
    with pytest.raises(ValueError, match="lr must be finite and > 0, got 1e-50"):
        SoftmaxRegression(lr=1e-50).fit(X, y)
    with pytest.raises(ValueError, match=r"momentum must be in \[0, 1\), got 0.9999999999"):
        SoftmaxRegression(momentum=0.9999999999).fit(X, y)
    # A string is not taken for a boolean.
    with pytest.raises(TypeError, match="nesterov must be True or False, got 'false'"):
        SoftmaxRegression(momentum=0.9, nesterov="false").fit(X, y)
    assert SoftmaxRegression(momentum=0.9, nesterov=np.True_).fit(X, y).n_iter_ == 1
    # The library's own boolean variable, by the CLI's rule.
    monkeypatch.setenv("IDX_SOFTMAX_NO_PIN", "maybe")
    with pytest.raises(ValueError, match="IDX_SOFTMAX_NO_PIN='maybe' is not a boolean"):
        SoftmaxRegression().fit(X, y)
    for value in ("1", "off", "YES", ""):
        monkeypatch.setenv("IDX_SOFTMAX_NO_PIN", value)
        SoftmaxRegression().fit(X, y)
