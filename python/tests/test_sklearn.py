"""scikit-learn's own estimator checks, on the default estimators."""

import numpy as np
import pytest
from sklearn.datasets import make_blobs
from sklearn.preprocessing import StandardScaler
from sklearn.utils import shuffle
from sklearn.utils.estimator_checks import parametrize_with_checks

from idx_softmax import MLPClassifier, SoftmaxRegression


@parametrize_with_checks([SoftmaxRegression(), MLPClassifier()])
def test_sklearn_check(estimator, check):
    check(estimator)


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
