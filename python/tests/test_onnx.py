"""ONNX export (the CLI's `export` and `to_onnx`): the onnx checker accepts
the file, and onnxruntime reproduces the engine's predictions on the test
set (same argmax, probabilities within 1e-5) for softmax regression, an MLP
and a CNN."""

import json
import subprocess

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from idx_softmax import ConvClassifier, MLPClassifier, SoftmaxRegression

NETWORKS = [
    (SoftmaxRegression, []),
    (MLPClassifier, ["--hidden", "32"]),
    (ConvClassifier, ["--conv", "4x3", "--conv", "6", "--hidden", "16",
                      "--lr", "0.05", "--momentum", "0.9"]),
]


def run_cli(cli, *args):
    out = subprocess.run(
        [str(cli), *map(str, args)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


def ort_outputs(path, x):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in sess.get_inputs()] == ["input"]
    assert [o.name for o in sess.get_outputs()] == ["probabilities", "logits"]
    probs, logits = sess.run(["probabilities", "logits"], {"input": x})
    return probs, logits


@pytest.mark.parametrize("cls, flags", NETWORKS, ids=lambda v: getattr(v, "__name__", ""))
def test_onnxruntime_reproduces_the_engine(cls, flags, mnist, cli, tmp_path):
    X, y, Xt, yt = mnist
    model = tmp_path / "m.safetensors"
    out = tmp_path / "m.onnx"
    run = run_cli(cli, "--json", "--save", model, *flags)
    ev = run_cli(cli, "eval", "--model", model, "--json")
    exp = run_cli(cli, "export", "--model", model, "--onnx", out, "--json")
    assert exp["opset"] == 13 and exp["layers"] == run["layers"]

    m = onnx.load(str(out))
    onnx.checker.check_model(m, full_check=True)
    assert m.opset_import[0].version == 13
    meta = {p.key: p.value for p in m.metadata_props}
    assert json.loads(meta["class_names"]) == [str(c) for c in range(10)]
    assert meta["layers"] == run["layers"]
    assert meta["seed"] == "42" and meta["epochs_done"] == "1"

    x = (Xt.astype(np.float32) / np.float32(255)).astype(np.float32)
    probs, logits = ort_outputs(out, x)
    ours = cls.load(model).predict_proba(Xt)
    assert np.abs(probs - ours).max() <= 1e-5
    assert np.array_equal(probs.argmax(1), ours.argmax(1))
    assert float((logits.argmax(1) == yt).mean()) == ev["test_accuracy"]

    # The estimator writes the same graph: same outputs.
    py_out = tmp_path / "py.onnx"
    cls.load(model).to_onnx(py_out)
    onnx.checker.check_model(onnx.load(str(py_out)), full_check=True)
    p2, _ = ort_outputs(py_out, x[:500])
    assert np.array_equal(p2, probs[:500])


def test_export_refuses_to_overwrite_its_input(cli, tmp_path, mnist):
    model = tmp_path / "m.safetensors"
    run_cli(cli, "--json", "--save", model)
    before = model.read_bytes()
    res = subprocess.run([str(cli), "export", "--model", model, "--onnx", model],
                         capture_output=True, text=True)
    assert res.returncode == 2 and "--onnx" in res.stderr and "--model" in res.stderr
    assert model.read_bytes() == before
    res = subprocess.run([str(cli), "export", "--model", tmp_path / "nope.safetensors",
                          "--onnx", tmp_path / "x.onnx"], capture_output=True, text=True)
    assert res.returncode == 1 and "nope.safetensors" in res.stderr
    assert not (tmp_path / "x.onnx").exists()


def test_string_labels_go_into_the_metadata(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5)).astype(np.float32)
    y = np.array(["cat", "dog", "emu"])[(X[:, 0] > 0).astype(int) + (X[:, 1] > 0)]
    clf = MLPClassifier((8,), epochs=5).fit(X, y)
    clf.to_onnx(tmp_path / "m.onnx")
    m = onnx.load(str(tmp_path / "m.onnx"))
    meta = {p.key: p.value for p in m.metadata_props}
    assert json.loads(meta["class_names"]) == ["cat", "dog", "emu"]
    probs, _ = ort_outputs(tmp_path / "m.onnx", X)
    assert np.abs(probs - clf.predict_proba(X)).max() <= 1e-5
