"""Loading IDX datasets as NumPy views of the memory-mapped files."""

from __future__ import annotations

import os

from . import _core


def load_idx(data_dir=None, cache_dir=None):
    """Loads the four IDX files of a dataset, as the CLI does.

    Returns ``(X_train, y_train, X_test, y_test)``: X is 2-D
    ``(n_samples, n_features)``, uint8 for u8 files, and -- like u8 labels --
    a read-only view of the memory-mapped file (``X.flags["OWNDATA"]`` is
    False; ``X.base`` is the :class:`IdxData` that owns the mapping and keeps
    it alive). Pixels of other element types (big-endian float) and wider
    labels are decoded into new arrays.

    ``data_dir`` defaults to the bundled MNIST. File discovery (raw or
    ``.gz`` names), the gzip cache (``cache_dir``, else
    ``$IDX_SOFTMAX_CACHE_DIR`` or the default places) and the one-line
    errors are the CLI's: ``OSError`` for missing or unreadable files,
    ``ValueError`` for malformed ones.
    """
    data_dir = None if data_dir is None else os.fspath(data_dir)
    cache_dir = None if cache_dir is None else os.fspath(cache_dir)
    X_train, y_train, X_test, y_test, _owner = _core.load_idx(data_dir, cache_dir)
    return X_train, y_train, X_test, y_test
