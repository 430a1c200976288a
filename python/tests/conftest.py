import os
import pathlib
import shutil
import subprocess

# scikit-learn's array-API check (with NumPy inputs) runs only when SciPy's
# array API support is switched on, before SciPy is first imported.
os.environ.setdefault("SCIPY_ARRAY_API", "1")

import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def cli():
    """The CLI binary, built from this checkout (a no-op when up to date)."""
    cargo = shutil.which("cargo")
    if cargo is None:
        pytest.fail("cargo is needed for the CLI parity tests")
    subprocess.run(
        [cargo, "build", "--release", "--locked", "--quiet"], cwd=REPO, check=True
    )
    target = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    if not target.is_absolute():
        target = REPO / target
    exe = target / "release" / "idx-softmax"
    assert exe.exists(), exe
    return exe


@pytest.fixture(scope="session")
def mnist():
    from idx_softmax import load_idx

    return load_idx()
