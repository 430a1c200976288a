"""ConvClassifier: the CLI's CNNs behind the scikit-learn API, checked
against the CLI, against a NumPy forward pass of the saved checkpoint, and
against its own rules for image shapes."""

import json
import pickle
import subprocess

import numpy as np
import pytest

from idx_softmax import ConvClassifier, MLPClassifier

SMALL = dict(conv_channels=(4,), kernel_size=3, hidden_layer_sizes=(16,))


def run_cli(cli, *args):
    out = subprocess.run(
        [str(cli), *map(str, args)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def test_defaults_are_lenet5s_shape():
    p = ConvClassifier().get_params()
    assert p["conv_channels"] == (6, 16) and p["kernel_size"] == 5
    assert p["hidden_layer_sizes"] == (120, 84) and p["image_shape"] is None


def test_fit_matches_the_cli_bit_for_bit(mnist, cli):
    X, y, Xt, yt = mnist
    clf = ConvClassifier(**SMALL, lr=0.05, momentum=0.9).fit(X, y)
    run = run_cli(
        cli, "--json", "--conv", "4x3", "--hidden", 16, "--lr", 0.05,
        "--momentum", 0.9,
    )
    assert run["layers"] == "1x28x28-conv4x3-784-16-10"
    assert clf.weights_digest_ == run["weights_digest"]
    assert clf.score(Xt, yt) == run["test_accuracy"]
    assert run["test_accuracy"] > 0.95


def _numpy_forward(tensors, x, image):
    """The nn.Sequential forward pass in NumPy (float64): conv blocks
    (im2col + matmul, 'same' padding), ReLU, 2x2 max pools, flatten, then
    the linear layers. ``tensors`` maps checkpoint names to arrays."""
    c, h, w = image
    a = x.reshape(-1, c, h, w).astype(np.float64)
    names = sorted({k.split(".")[0] for k in tensors if k[0].isdigit()}, key=int)
    layers = [(tensors[f"{i}.weight"], tensors[f"{i}.bias"]) for i in names]
    for wt, b in layers:
        if wt.ndim == 4:
            co, ci, k, _ = wt.shape
            p = k // 2
            n, _, hh, ww = a.shape
            padded = np.pad(a, ((0, 0), (0, 0), (p, p), (p, p)))
            cols = np.lib.stride_tricks.sliding_window_view(padded, (k, k), axis=(2, 3))
            # cols: n, ci, hh, ww, k, k
            out = np.einsum("nchwij,ocij->nohw", cols, wt, optimize=True) + b[None, :, None, None]
            out = np.maximum(out, 0)
            hh2, ww2 = hh // 2, ww // 2
            out = out[:, :, : 2 * hh2, : 2 * ww2].reshape(n, co, hh2, 2, ww2, 2)
            a = out.max(axis=(3, 5))
        else:
            a = a.reshape(a.shape[0], -1) @ wt.T + b
            if wt is not layers[-1][0]:
                a = np.maximum(a, 0)
    return a


def test_a_saved_cnn_predicts_the_same_in_numpy(mnist, cli, tmp_path):
    """The checkpoint is nn.Sequential's state_dict: a forward pass written
    from scratch in NumPy over its tensors reproduces eval's accuracy."""
    from safetensors.numpy import load_file

    X, y, Xt, yt = mnist
    path = tmp_path / "cnn.safetensors"
    run_cli(cli, "--json", "--save", path, "--conv", "6", "--conv", "16x3",
            "--hidden", 32, "--lr", 0.05, "--momentum", 0.9)
    ev = run_cli(cli, "eval", "--model", path, "--json")
    tensors = load_file(str(path))
    assert tensors["0.weight"].shape == (6, 1, 5, 5)
    assert tensors["3.weight"].shape == (16, 6, 3, 3)
    assert tensors["7.weight"].shape == (32, 784)
    assert tensors["9.weight"].shape == (10, 32)
    logits = np.concatenate([
        _numpy_forward(tensors, Xt[i:i + 500] / 255.0, (1, 28, 28))
        for i in range(0, len(Xt), 500)
    ])
    acc = float((logits.argmax(axis=1) == yt).mean())
    assert acc == pytest.approx(ev["test_accuracy"], abs=2e-4), (acc, ev["test_accuracy"])
    assert ev["test_accuracy"] > 0.95
    # The estimator reads the CLI's checkpoint too, and predicts the same.
    clf = ConvClassifier.load(path)
    assert clf.get_params()["conv_channels"] == (6, 16)
    assert clf.get_params()["kernel_size"] == (5, 3)
    assert clf.score(Xt, yt) == ev["test_accuracy"]
    with pytest.raises(ValueError, match="ConvClassifier.load"):
        MLPClassifier.load(path)


def test_image_shape_rules(mnist):
    X, y, _, _ = mnist
    flat = np.asarray(X[:200], dtype=np.float32)  # no recorded shape: 784 -> 28x28
    clf = ConvClassifier(**SMALL).fit(flat, y[:200])
    assert clf._model.sample_shape == [28, 28]
    odd = np.ones((20, 30), np.float32)
    with pytest.raises(ValueError, match="image_shape: X has 30 features"):
        ConvClassifier(**SMALL).fit(odd, np.arange(20) % 2)
    # an explicit shape: 30 = 1 x 5 x 6, or 2 x 3 x 5
    ConvClassifier(conv_channels=2, kernel_size=3, hidden_layer_sizes=(),
                   image_shape=(5, 6)).fit(odd, np.arange(20) % 2)
    with pytest.raises(ValueError, match=r"image_shape \(4, 4\) does not hold the 30"):
        ConvClassifier(**SMALL, image_shape=(4, 4)).fit(odd, np.arange(20) % 2)
    with pytest.raises(ValueError, match="kernel_size must be an odd kernel size in 1..=31, got 4"):
        ConvClassifier(conv_channels=2, kernel_size=4).fit(flat, y[:200])
    with pytest.raises(ValueError, match="conv_channels must be in 1..=4096 channels, got -2"):
        ConvClassifier(conv_channels=(-2,)).fit(flat, y[:200])
    with pytest.raises(ValueError, match="pools a 1x1 image to nothing"):
        ConvClassifier(conv_channels=(2, 2, 2), kernel_size=3, image_shape=(5, 6)).fit(
            odd, np.arange(20) % 2)


def test_save_load_pickle_partial_fit(mnist, tmp_path):
    X, y, Xt, yt = mnist
    X, y = X[:3000], y[:3000]
    whole = ConvClassifier(**SMALL, epochs=2).fit(X, y)
    stepwise = ConvClassifier(**SMALL, epochs=2)
    stepwise.partial_fit(X, y).partial_fit(X, y)
    assert stepwise.weights_digest_ == whole.weights_digest_
    whole.save(tmp_path / "c.safetensors")
    back = ConvClassifier.load(tmp_path / "c.safetensors")
    assert np.array_equal(back.predict_proba(Xt[:500]), whole.predict_proba(Xt[:500]))
    again = pickle.loads(pickle.dumps(whole))
    assert again.weights_digest_ == whole.weights_digest_
    assert np.array_equal(again.predict(Xt[:500]), whole.predict(Xt[:500]))
    shapes = [a.shape for a in whole.coefs_]
    assert shapes == [(4, 1, 3, 3), (784, 16), (16, 10)]
    assert not whole.coefs_[0].flags["WRITEABLE"]


def test_threads_do_not_change_the_bits(mnist):
    X, y, _, _ = mnist
    X, y = X[:1000], y[:1000]
    digests = {ConvClassifier(**SMALL, threads=t).fit(X, y).weights_digest_ for t in (1, 2, 3)}
    assert len(digests) == 1
