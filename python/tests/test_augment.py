"""Augmentation behind the estimators: the same deformations as the CLI's
--augment, bit for bit, at any thread count, and the same rules for the
parameters (named in the error, as scikit-learn users spell them)."""

import json
import subprocess

import numpy as np
import pytest

from idx_softmax import ConvClassifier, MLPClassifier, SoftmaxRegression


def run_cli(cli, *args):
    out = subprocess.run(
        [str(cli), *map(str, args)], capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def subset(mnist):
    X, y, Xt, yt = mnist
    return X[:6000], y[:6000], Xt[:2000], yt[:2000]


def test_parameters_default_to_the_librarys():
    p = SoftmaxRegression().get_params()
    assert p["augment"] == "none"
    for name in ("max_shift", "rotate", "scale", "shear", "translate", "sigma", "alpha"):
        assert p[name] is None


@pytest.mark.parametrize(
    "kind, params, flags",
    [
        ("shift", dict(max_shift=3), ["--max-shift", 3]),
        ("affine", dict(rotate=10.0, shear=0.2), ["--rotate", 10, "--shear", 0.2]),
        ("elastic", dict(sigma=5.0, alpha=30.0), ["--sigma", 5, "--alpha", 30]),
    ],
)
def test_fit_matches_the_cli_bit_for_bit(mnist, cli, kind, params, flags):
    X, y, Xt, yt = mnist
    clf = MLPClassifier(hidden_layer_sizes=(32,), augment=kind, **params).fit(X, y)
    run = run_cli(cli, "--json", "--hidden", 32, "--augment", kind, *flags)
    assert clf.weights_digest_ == run["weights_digest"]
    assert clf.score(Xt, yt) == run["test_accuracy"]
    # One epoch on deformed digits still learns them (0.87 for a 3-pixel shift).
    assert run["test_accuracy"] > 0.85


def test_augmentation_changes_the_training_and_not_its_determinism(subset):
    X, y, Xt, yt = subset
    plain = SoftmaxRegression(threads=1).fit(X, y)
    digests = {
        SoftmaxRegression(augment="elastic", threads=t).fit(X, y).weights_digest_
        for t in (1, 2, 3)
    }
    assert len(digests) == 1
    assert plain.weights_digest_ not in digests


def test_a_shift_of_zero_pixels_is_no_augmentation(subset):
    # The deformation is drawn from its own stream of (seed, epoch, sample):
    # a zero shift copies each image, so the run is the plain one, bit for bit.
    X, y, _, _ = subset
    plain = SoftmaxRegression().fit(X, y)
    zero = SoftmaxRegression(augment="shift", max_shift=0).fit(X, y)
    assert zero.weights_digest_ == plain.weights_digest_


def test_conv_networks_augment_too(subset):
    X, y, Xt, yt = subset
    clf = ConvClassifier(
        conv_channels=(4,), kernel_size=3, hidden_layer_sizes=(16,),
        augment="affine", lr=0.05, momentum=0.9,
    ).fit(X, y)
    assert clf.score(Xt, yt) > 0.6  # 0.72 measured; chance is 0.1


@pytest.mark.parametrize(
    "params, named",
    [
        (dict(augment="wobble"), "augment"),
        (dict(augment="elastic", sigma=-1.0), "sigma"),
        (dict(augment="affine", rotate=float("nan")), "rotate"),
        (dict(augment="shift", max_shift=-2), "max_shift"),
        (dict(augment="shift", max_shift=1.5), "max_shift"),
        # A parameter of another kind is refused, not silently ignored.
        (dict(augment="shift", alpha=10.0), "alpha"),
        (dict(sigma=3.0), "sigma"),
    ],
)
def test_bad_parameters_name_themselves(subset, params, named):
    X, y, _, _ = subset
    # A value of the wrong type is a TypeError, as in scikit-learn.
    with pytest.raises((ValueError, TypeError), match=named):
        SoftmaxRegression(**params).fit(X, y)


def test_augmentation_needs_images():
    rng = np.random.default_rng(0)
    X = rng.random((50, 7))
    y = rng.integers(0, 3, 50)
    with pytest.raises(ValueError, match="augment"):
        SoftmaxRegression(augment="shift").fit(X, y)
