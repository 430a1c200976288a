//! The numeric kernels of one training step.
//!
//! # Dimensions and layouts
//!
//! Every kernel uses the same letters:
//!
//! * **B**: rows in the batch (100 by default; the last batch may be short),
//! * **K**: features per sample (784 = 28 × 28 for MNIST),
//! * **C**: classes (10 for MNIST).
//!
//! All matrices are row-major. X (the batch) is B × K; the weights are kept
//! as `wt`, C × K, which is W = wtᵀ of the model `logits = X·W + b` and
//! PyTorch's `nn.Linear.weight` layout; logits and the gradient G are
//! B × C.
//!
//! # Modules
//!
//! * [`fused`]: u8 or f32 rows read in place from the memory map (or the
//!   caller's array), u8 converted in registers (AVX-512, AVX2+FMA,
//!   portable). The default training path.
//! * [`gemm`]: `matrixmultiply::sgemm` on gathered f32 rows: the `gemm`
//!   path, the deeper layers of every path, and the reference the fused
//!   path is measured against.
//! * [`conv`]: the convolutions and the plain 2 × 2 max-pool; [`pool`]:
//!   the max-pool behind a conv's ReLU, as training runs it (argmax kept).
//! * [`softmax_ce`], [`bias`]: the small pieces of a step.
//! * [`dispatch`]: picks the path once, at run time.
//! * [`reference`](mod@reference): naive f64 versions of everything, for tests.

pub mod bias;
pub mod conv;
pub mod dispatch;
pub mod fused;
pub mod gemm;
pub mod pool;
pub mod reference;
pub mod reference_conv;
pub(crate) mod simd;
pub mod softmax_ce;

pub use bias::bias_grad;
pub use dispatch::KernelPath;
