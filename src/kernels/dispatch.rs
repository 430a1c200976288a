//! Which kernel path runs.
//!
//! The CPU's features are detected once and cached ([`KernelPath::best`],
//! [`KernelPath::is_available`]). The path is chosen once per run, by the
//! rule in [`crate::config::kernel_for`], and passed down to every kernel
//! call, which dispatches on it with one `match`. A user (or a test) can
//! force any path with `--kernel` or the `IDX_SOFTMAX_KERNEL`
//! environment variable; forcing a path the CPU lacks is an error, never a
//! crash. Release builds need no `-C target-cpu`: the AVX code is compiled
//! per function with `#[target_feature]` and only called after detection.

use std::fmt;
use std::str::FromStr;
#[cfg(target_arch = "x86_64")]
use std::sync::OnceLock;

/// Environment variable that forces a kernel path.
pub const KERNEL_ENV: &str = "IDX_SOFTMAX_KERNEL";

/// A kernel path for the training step and evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelPath {
    /// General path: gather rows into f32, `matrixmultiply::sgemm` for every
    /// product. Works for every element type and every network (the only
    /// path for MLPs); the reference the fused paths are measured against.
    Gemm,
    /// Fused u8 kernels in portable Rust (any architecture).
    Portable,
    /// Fused u8 kernels with AVX2 + FMA.
    Avx2,
    /// Fused u8 kernels with AVX-512F.
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

    /// Whether this CPU can run the path.
    pub fn is_available(self) -> bool {
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

    /// Whether the path is one of the fused u8 kernels.
    pub fn is_fused(self) -> bool {
        !matches!(self, Self::Gemm)
    }

    /// The fastest path available here (cached after the first call).
    pub fn best() -> Self {
        if Self::Avx512.is_available() {
            Self::Avx512
        } else if Self::Avx2.is_available() {
            Self::Avx2
        } else {
            Self::Portable
        }
    }

    /// Every path this CPU can run.
    pub fn available() -> Vec<Self> {
        Self::ALL.into_iter().filter(|p| p.is_available()).collect()
    }

    /// The path forced by `IDX_SOFTMAX_KERNEL`, if set.
    pub fn from_env() -> Result<Option<Self>, String> {
        match std::env::var(KERNEL_ENV) {
            Ok(v) if !v.is_empty() => v
                .parse::<Self>()
                .map(Some)
                .map_err(|e| format!("{KERNEL_ENV}: {e}")),
            _ => Ok(None),
        }
    }
}

impl fmt::Display for KernelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for KernelPath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let path = Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                format!("unknown kernel path '{s}' (expected gemm, portable, avx2 or avx512)")
            })?;
        if !path.is_available() {
            return Err(format!("kernel path '{s}' is not supported by this CPU"));
        }
        Ok(path)
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
