"""idx-softmax from Python: the Rust engine (SIMD, multithreaded softmax
regression, ReLU MLPs and CNNs trained by minibatch SGD) as scikit-learn
estimators, zero-copy on NumPy arrays and on memory-mapped IDX files.

>>> from idx_softmax import load_idx, SoftmaxRegression
>>> X_train, y_train, X_test, y_test = load_idx()        # bundled MNIST, mapped
>>> clf = SoftmaxRegression().fit(X_train, y_train)       # the notebook's epoch
>>> round(clf.score(X_test, y_test), 4)
0.9032
"""

from ._core import BUNDLED_MNIST, IdxData, available_cpus
from ._data import load_idx
from ._estimators import ConvClassifier, MLPClassifier, SoftmaxRegression

__version__ = "0.1.0"

__all__ = [
    "load_idx",
    "SoftmaxRegression",
    "MLPClassifier",
    "ConvClassifier",
    "IdxData",
    "available_cpus",
    "BUNDLED_MNIST",
]
