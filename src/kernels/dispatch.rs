//! Which kernel path runs.
//!
//! The CPU's features are detected once and cached ([`KernelPath::best`],
//! [`KernelPath::is_available`]). The path is chosen once per run, by the
//! rule in [`crate::run::spec::kernel_for`], and passed down to every kernel
//! call, which dispatches on it with one `match`. A user (or a test) can
//! force any path with `--kernel` (a parameter in other front ends);
//! forcing a path the CPU lacks is an error, never a crash. The
//! `IDX_SOFTMAX_KERNEL` environment variable ([`KERNEL_ENV`]) instead
//! stands for a smaller CPU: it caps the paths available, so a whole run,
//! test suite included, behaves as on a CPU without AVX-512 (`avx2`) or
//! without AVX2 (`portable`). Release builds need no `-C target-cpu`: the AVX code is compiled
//! per function with `#[target_feature]` and only called after detection.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

/// Environment variable that caps the kernel paths, as if the CPU had no
/// faster one: `avx2` stands for a CPU without AVX-512, `portable` for one
/// without AVX2 (ARM, say), `gemm` for one without the fused kernels. An
/// empty value counts as unset. Read once per process.
pub const KERNEL_ENV: &str = "IDX_SOFTMAX_KERNEL";

/// A kernel path for the training step and evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelPath {
    /// General path: gather rows into f32, `matrixmultiply::sgemm` for every
    /// product; the reference the fused paths are measured against.
    Gemm,
    /// Fused kernels (u8 or f32 rows in place) in portable Rust (any
    /// architecture).
    Portable,
    /// Fused kernels with AVX2 + FMA.
    Avx2,
    /// Fused kernels with AVX-512F.
    Avx512,
}

impl KernelPath {
    pub const ALL: [KernelPath; 4] = [Self::Gemm, Self::Portable, Self::Avx2, Self::Avx512];

    pub fn name(self) -> &'static str {
        match self {
            Self::Gemm => "gemm",
            Self::Portable => "portable",
            Self::Avx2 => "avx2",
            Self::Avx512 => "avx512",
        }
    }

    /// Whether this CPU can run the path (within the cap of
    /// [`KERNEL_ENV`], if set).
    pub fn is_available(self) -> bool {
        if let Ok(Some(cap)) = env_cap() {
            if self.rank() > cap.rank() {
                return false;
            }
        }
        self.cpu_has()
    }

    /// Speed order of the paths, for the cap.
    fn rank(self) -> u8 {
        match self {
            Self::Gemm => 0,
            Self::Portable => 1,
            Self::Avx2 => 2,
            Self::Avx512 => 3,
        }
    }

    /// Whether the CPU itself has the path's instructions.
    fn cpu_has(self) -> bool {
        match self {
            Self::Gemm | Self::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => cpu().avx2_fma,
            #[cfg(target_arch = "x86_64")]
            Self::Avx512 => cpu().avx512f,
            #[cfg(not(target_arch = "x86_64"))]
            Self::Avx2 | Self::Avx512 => false,
        }
    }

    /// Whether the path is one of the fused kernels (which read u8 or f32
    /// rows in place).
    pub fn is_fused(self) -> bool {
        !matches!(self, Self::Gemm)
    }

    /// The fastest path available here: the default.
    pub fn best() -> Self {
        [Self::Avx512, Self::Avx2, Self::Portable, Self::Gemm]
            .into_iter()
            .find(|p| p.is_available())
            .unwrap_or(Self::Gemm)
    }

    /// Every path this CPU can run.
    pub fn available() -> Vec<Self> {
        Self::ALL.into_iter().filter(|p| p.is_available()).collect()
    }
}

/// The cap [`KERNEL_ENV`] sets, if any; its value when that names no path
/// (front ends report it: [`crate::run::spec::check_kernel_env`]).
pub fn env_cap() -> Result<Option<KernelPath>, &'static str> {
    static CAP: OnceLock<Result<Option<KernelPath>, String>> = OnceLock::new();
    CAP.get_or_init(|| match std::env::var(KERNEL_ENV) {
        Ok(v) if !v.trim().is_empty() => v.trim().parse().map(Some).map_err(|_| v),
        _ => Ok(None),
    })
    .as_ref()
    .map(|c| *c)
    .map_err(String::as_str)
}

impl fmt::Display for KernelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KernelPath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("unknown kernel path '{s}' (expected gemm, portable, avx2 or avx512)")
            })
    }
}

#[cfg(target_arch = "x86_64")]
struct CpuFeatures {
    avx2_fma: bool,
    avx512f: bool,
}

/// Feature detection, done once.
#[cfg(target_arch = "x86_64")]
fn cpu() -> &'static CpuFeatures {
    static CPU: OnceLock<CpuFeatures> = OnceLock::new();
    CPU.get_or_init(|| CpuFeatures {
        avx2_fma: is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
        avx512f: is_x86_feature_detected!("avx512f"),
    })
}
