//! SGD as PyTorch's `torch.optim.SGD` defines it (dampening 0), with a
//! learning-rate schedule.
//!
//! For each parameter p with gradient g, at step t:
//!
//! ```text
//! g ← g + weight_decay · p
//! buf ← momentum · buf + g            (buf starts at 0, so buf₁ = g₁)
//! d ← g + momentum · buf  if nesterov, else buf     (d = g without momentum)
//! p ← p − lr(t) · d
//! ```
//!
//! With no momentum and no weight decay this is the notebook's plain SGD,
//! `p ← p − lr · g`, computed with exactly that arithmetic.

use std::f64::consts::PI;
use std::fmt;
use std::str::FromStr;

/// How the learning rate changes over training.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Schedule {
    /// `lr` throughout.
    Constant,
    /// `lr · gamma^⌊epoch / every⌋` (epoch counted from 0), like
    /// PyTorch's `StepLR(step_size=every, gamma)`.
    Step { every: usize, gamma: f32 },
    /// Cosine annealing from `lr` to 0 over all steps of the run, updated
    /// every step, like `CosineAnnealingLR(T_max=total steps, eta_min=0)`
    /// stepped per batch.
    Cosine,
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Schedule::Constant => f.write_str("constant"),
            Schedule::Step { every, gamma } => write!(f, "step:{every}:{gamma}"),
            Schedule::Cosine => f.write_str("cosine"),
        }
    }
}

impl FromStr for Schedule {
    type Err = String;
    /// `constant`, `cosine`, or `step:EVERY:GAMMA` (e.g. `step:2:0.5`).
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "constant" => return Ok(Schedule::Constant),
            "cosine" => return Ok(Schedule::Cosine),
            _ => {}
        }
        let bad =
            || format!("'{s}': expected constant, cosine or step:EVERY:GAMMA (e.g. step:2:0.5)");
        let rest = s.strip_prefix("step:").ok_or_else(bad)?;
        let (every, gamma) = rest.split_once(':').ok_or_else(bad)?;
        let every: usize = every.parse().map_err(|_| bad())?;
        let gamma: f32 = gamma.parse().map_err(|_| bad())?;
        if every == 0 || !(gamma.is_finite() && gamma > 0.0) {
            return Err(format!("'{s}': EVERY must be ≥ 1 and GAMMA finite and > 0"));
        }
        Ok(Schedule::Step { every, gamma })
    }
}

/// The optimiser's hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sgd {
    pub lr: f32,
    pub momentum: f32,
    pub nesterov: bool,
    pub weight_decay: f32,
    pub schedule: Schedule,
}

impl Sgd {
    /// The notebook's optimiser: plain SGD at `lr`.
    pub fn plain(lr: f32) -> Self {
        Self {
            lr,
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
            schedule: Schedule::Constant,
        }
    }

    /// Whether momentum buffers are needed.
    pub fn has_momentum(&self) -> bool {
        self.momentum != 0.0
    }

    /// The learning rate for global step `step` (0-based) of a run of
    /// `total_steps`, in epoch `epoch` (0-based).
    pub fn lr_at(&self, epoch: usize, step: usize, total_steps: usize) -> f32 {
        match self.schedule {
            Schedule::Constant => self.lr,
            Schedule::Step { every, gamma } => self.lr * gamma.powi((epoch / every) as i32),
            Schedule::Cosine => {
                let t = step as f64 / total_steps.max(1) as f64;
                (self.lr as f64 * 0.5 * (1.0 + (PI * t).cos())) as f32
            }
        }
    }

    /// Updates `params` in place from the raw gradient `raw`, whose true
    /// value is `grad_scale · raw` (the fused kernels sum unscaled u8
    /// pixels; 1/255 arrives here). `buf` is the momentum buffer (same
    /// length as `params`; ignored and may be empty without momentum).
    ///
    /// Each element is updated independently, so callers may split the
    /// parameters across threads without changing any bit.
    pub fn apply(
        &self,
        lr: f32,
        params: &mut [f32],
        raw: &[f32],
        grad_scale: f32,
        buf: &mut [f32],
    ) {
        assert_eq!(params.len(), raw.len(), "Sgd::apply: length mismatch");
        if self.has_momentum() {
            assert_eq!(
                buf.len(),
                params.len(),
                "Sgd::apply: momentum buffer length"
            );
        }
        // With momentum or decay (three streams per element), the same
        // element-wise arithmetic compiled for AVX-512 where the CPU has it:
        // no reduction, no fused multiply-add, so every ISA gives the same
        // bits. It made a 784-256-10 momentum epoch 5.6% faster; the plain
        // update stays inline, where the call cost 3% of a softmax epoch
        // (perf/ab_compare.py, 2 threads).
        #[cfg(target_arch = "x86_64")]
        if (self.has_momentum() || self.weight_decay != 0.0)
            && std::arch::is_x86_feature_detected!("avx512f")
        {
            // SAFETY: AVX-512F was detected just above.
            unsafe { apply_avx512(self, lr, params, raw, grad_scale, buf) };
            return;
        }
        apply_body(self, lr, params, raw, grad_scale, buf);
    }
}

/// [`Sgd::apply`]'s update compiled with AVX-512F: a safe
/// `#[target_feature]` fn (its only requirement is the ISA; callers need
/// `unsafe` to vouch for it).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn apply_avx512(
    sgd: &Sgd,
    lr: f32,
    params: &mut [f32],
    raw: &[f32],
    grad_scale: f32,
    buf: &mut [f32],
) {
    apply_body(sgd, lr, params, raw, grad_scale, buf);
}

/// The update of [`Sgd::apply`] (lengths already checked).
#[inline(always)]
fn apply_body(
    sgd: &Sgd,
    lr: f32,
    params: &mut [f32],
    raw: &[f32],
    grad_scale: f32,
    buf: &mut [f32],
) {
    if !sgd.has_momentum() && sgd.weight_decay == 0.0 {
        // The notebook's update, with the scale folded into the step.
        let step = lr * grad_scale;
        for (p, &r) in params.iter_mut().zip(raw) {
            *p -= step * r;
        }
        return;
    }
    let (m, wd) = (sgd.momentum, sgd.weight_decay);
    if !sgd.has_momentum() {
        for (p, &r) in params.iter_mut().zip(raw) {
            let g = grad_scale * r + wd * *p;
            *p -= lr * g;
        }
        return;
    }
    let nesterov = sgd.nesterov;
    for ((p, &r), b) in params.iter_mut().zip(raw).zip(buf.iter_mut()) {
        let g = grad_scale * r + wd * *p;
        *b = m * *b + g;
        let d = if nesterov { g + m * *b } else { *b };
        *p -= lr * d;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules() {
        let mut sgd = Sgd::plain(0.4);
        assert_eq!(sgd.lr_at(5, 100, 1000), 0.4);
        sgd.schedule = "step:2:0.5".parse().unwrap();
        assert_eq!(
            [0, 1, 2, 3, 4].map(|e| sgd.lr_at(e, 0, 1)),
            [0.4, 0.4, 0.2, 0.2, 0.1]
        );
        sgd.schedule = Schedule::Cosine;
        assert_eq!(sgd.lr_at(0, 0, 10), 0.4);
        assert!((sgd.lr_at(0, 5, 10) - 0.2).abs() < 1e-7);
        assert!(sgd.lr_at(0, 10, 10).abs() < 1e-7);
        assert!("step:0:0.5".parse::<Schedule>().is_err());
        assert!("linear".parse::<Schedule>().is_err());
    }

    /// PyTorch's SGD by hand, in f64, for three steps.
    #[test]
    fn momentum_nesterov_and_weight_decay_follow_pytorch() {
        for nesterov in [false, true] {
            let sgd = Sgd {
                lr: 0.1,
                momentum: 0.9,
                nesterov,
                weight_decay: 0.01,
                schedule: Schedule::Constant,
            };
            let (mut p, mut buf) = ([1.0f32, -2.0], [0.0f32; 2]);
            let (mut pr, mut br) = ([1.0f64, -2.0], [0.0f64; 2]);
            for grads in [[0.5f32, 0.25], [-1.0, 2.0], [0.0, 0.125]] {
                sgd.apply(0.1, &mut p, &grads, 1.0, &mut buf);
                for i in 0..2 {
                    let g = grads[i] as f64 + 0.01 * pr[i];
                    br[i] = 0.9 * br[i] + g;
                    let d = if nesterov { g + 0.9 * br[i] } else { br[i] };
                    pr[i] -= 0.1 * d;
                }
            }
            for i in 0..2 {
                assert!(
                    (p[i] as f64 - pr[i]).abs() < 1e-6,
                    "nesterov={nesterov}: {p:?} vs {pr:?}"
                );
            }
        }
    }

    #[test]
    fn validation() {
        use crate::run::spec::check_sgd;
        assert!(check_sgd(&Sgd::plain(0.1)).is_ok());
        for bad in [
            Sgd {
                momentum: 1.0,
                ..Sgd::plain(0.1)
            },
            Sgd {
                nesterov: true,
                ..Sgd::plain(0.1)
            },
            Sgd {
                weight_decay: -1.0,
                ..Sgd::plain(0.1)
            },
            Sgd::plain(f32::NAN),
        ] {
            assert!(check_sgd(&bad).is_err(), "{bad:?}");
        }
    }
}
