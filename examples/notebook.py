# %% [markdown]
# # MNIST softmax regression, the notebook's cells on idx-softmax
#
# The seed notebook: MNIST as float tensors scaled to [0, 1], a 784→10
# linear layer with `W = randn(784, 10) / sqrt(784)` and `b = 0`, softmax
# cross-entropy, plain SGD with lr 0.1 on minibatches of 100 reshuffled every
# epoch, one epoch under a tqdm bar, then the test accuracy. Here each cell
# is the same step on the `idx_softmax` package (`pip install ./python`):
# the data stays memory-mapped, the uint8 → [0, 1] scaling happens inside
# the engine's kernels, and the bits are the CLI's.
#
# Run it as a script (`python examples/notebook.py`) or cell by cell
# (`# %%` cells, as in VS Code or Jupytext).

# %% Load MNIST (the bundled copy): NumPy views of the mapped IDX files
import numpy as np

from idx_softmax import SoftmaxRegression, load_idx

X_train, y_train, X_test, y_test = load_idx()
print("train", X_train.shape, X_train.dtype, "test", X_test.shape)
print("zero-copy view of the mapped file:", not X_train.flags["OWNDATA"])

# %% One image and its label, as the notebook shows them
image = X_train[0].reshape(28, 28)
print("label", y_train[0])
print("\n".join("".join(" .:-=+*#%@"[int(p) * 10 // 256] for p in row) for row in image[4:24]))

# %% The model: 784 → 10 softmax regression, the notebook's settings
model = SoftmaxRegression(
    epochs=1,          # one pass over the training set
    batch_size=100,    # minibatches of 100, reshuffled every epoch
    lr=0.1,            # plain SGD
    seed=42,           # W = randn(784, 10) / sqrt(784), b = 0, from this seed
    pixel_scale="auto",  # uint8 × 1/255, as the notebook's `/ 255.`
    verbose=1,         # per-epoch line; a tqdm bar when tqdm is installed
)

# %% Train (the GIL is released: the notebook stays responsive)
model.fit(X_train, y_train)
print("weights sha256", model.weights_digest_)

# %% Evaluate
accuracy = model.score(X_test, y_test)
print(f"Test accuracy: {accuracy:.4f}")
assert accuracy >= 0.90, accuracy

# %% Predictions and probabilities for the first test images
proba = model.predict_proba(X_test[:5])
print("predicted", model.predict(X_test[:5]), "true", y_test[:5])
print("max probability", np.round(proba.max(axis=1), 3))
