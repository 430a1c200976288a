//! Times candidate register-block shapes of the fused AVX-512 / AVX2
//! kernels (see `idx_softmax::kernels::fused::tuning`), the measurement the
//! block shapes in `src/kernels/fused.rs` were chosen by.
//!
//! ```text
//! cargo run --release --features tuning --example tune_blocks
//! ```

fn main() {
    #[cfg(target_arch = "x86_64")]
    {
        idx_softmax::kernels::fused::tuning::forward_blocks();
        idx_softmax::kernels::fused::tuning::gradient_blocks();
    }
    #[cfg(not(target_arch = "x86_64"))]
    println!("the tuned kernels are x86-64 only");
}
