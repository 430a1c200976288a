"""scikit-learn's own estimator checks, on the default estimators (and on
a small ConvClassifier, with the checks whose data cannot be images listed
and proved to fail for that reason alone)."""

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.preprocessing import StandardScaler
from sklearn.utils import shuffle
from sklearn.utils.estimator_checks import parametrize_with_checks

from idx_softmax import ConvClassifier, MLPClassifier, SoftmaxRegression

# A ConvClassifier small enough for the checks' tiny data sets.
SMALL_CNN = dict(conv_channels=(2,), kernel_size=3, hidden_layer_sizes=(16,))

# The checks that fit on data of 1, 2, 3, 5 or 10 features: not a square
# image, so ConvClassifier refuses them with its image_shape ValueError (as
# the estimator's contract says it must). Nothing else is wrong with them:
# test_the_listed_checks_fail_only_on_the_image_shape proves it.
NOT_IMAGES = [
    "check_fit_score_takes_y", "check_estimators_overwrite_params",
    "check_dont_overwrite_parameters", "check_estimators_fit_returns_self",
    "check_readonly_memmap_input", "check_estimators_dtypes", "check_dtype_object",
    "check_pipeline_consistency", "check_estimators_nan_inf", "check_estimators_pickle",
    "check_array_api_input", "check_f_contiguous_array_estimator",
    "check_classifier_data_not_an_array", "check_classifiers_one_label",
    "check_classifiers_classes", "check_estimators_partial_fit_n_features",
    "check_classifiers_train", "check_supervised_y_2d", "check_decision_proba_consistency",
    "check_methods_sample_order_invariance", "check_methods_subset_invariance",
    "check_fit2d_1sample", "check_fit2d_1feature", "check_dict_unchanged",
    "check_fit_idempotent", "check_fit_check_is_fitted", "check_n_features_in",
    "check_fit2d_predict1d",
]


def _expected_failures(estimator):
    if isinstance(estimator, ConvClassifier):
        return {
            name: "its data (1 to 10 features) is not a square image: "
                  "ConvClassifier refuses it with an image_shape ValueError"
            for name in NOT_IMAGES
        }
    return {}


@parametrize_with_checks(
    [SoftmaxRegression(), MLPClassifier(), ConvClassifier(**SMALL_CNN)],
    expected_failed_checks=_expected_failures,
)
def test_sklearn_check(estimator, check):
    check(estimator)


def test_the_listed_checks_fail_only_on_the_image_shape():
    """Every check listed in NOT_IMAGES fails on ConvClassifier, and with
    the image_shape refusal, not something else; every other check passes
    (test_sklearn_check runs them)."""
    from sklearn.utils.estimator_checks import check_estimator

    results = check_estimator(ConvClassifier(**SMALL_CNN), on_fail=None)
    def chain(e):
        """The messages of e and of the errors it was raised from."""
        while e is not None:
            yield str(e)
            e = e.__cause__ or e.__context__

    failed = {}
    for r in results:
        if r["status"] == "failed":
            failed.setdefault(r["check_name"], []).append(" <- ".join(chain(r["exception"])))
    assert sorted(failed) == sorted(NOT_IMAGES)
    for name, errors in failed.items():
        for e in errors:
            assert "image_shape: X has" in e and "not a square image" in e, (name, e)


def test_softmax_fits_the_checks_data_given_epochs():
    """SoftmaxRegression's poor_score tag is about its one-epoch default
    budget only: with more epochs it clears check_classifiers_train's bar on
    that check's own data."""
    X, y = make_blobs(n_samples=300, random_state=0)
    X, y = shuffle(X, y, random_state=7)
    X = StandardScaler().fit_transform(X)
    for Xp, yp in [(X[y != 2], y[y != 2]), (X, y)]:
        clf = SoftmaxRegression(epochs=10).fit(Xp, yp)
        assert clf.score(Xp, yp) > 0.83


def test_tags():
    assert SoftmaxRegression().__sklearn_tags__().classifier_tags.poor_score
    assert not MLPClassifier().__sklearn_tags__().classifier_tags.poor_score
