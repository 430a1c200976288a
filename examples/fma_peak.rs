//! The machine's floor for an epoch: the peak f32 FMA rate of one core and
//! of every core at once, measured, not assumed.
//!
//! ```text
//! cargo run --release --example fma_peak -- [SECONDS] [FLOP]
//! cargo run --release --example fma_peak -- 0.3 1.88e9
//! ```
//!
//! Each thread runs 12 independent chains of packed FMAs on registers (no
//! memory), which is enough to fill two pipes of 4-cycle latency, with
//! 256-bit (AVX2 + FMA) and then 512-bit (AVX-512F) vectors, for SECONDS
//! (default 0.3) per round, 15 rounds; the best round counts (a shared
//! machine only ever slows it down). The floor of a workload of FLOP
//! floating-point operations (default 1.88e9: one softmax-regression epoch
//! on MNIST, forward and weight gradient, 2 · 2 · 60000 · 784 · 10) is FLOP
//! divided by the all-core peak. It also prints the clock this implies if
//! the core does two 256-bit FMAs a cycle (Zen 3, Zen 4, Intel's big
//! cores): peak per core / 32 flop per cycle.
//!
//! The figure perf/README.md's targets are checked against. (`perf stat -e
//! cycles` reports "not supported" in the development VM, so the clock
//! cannot be read there.)
//!
//! Then, for the elastic smoothing's choice of instructions
//! (`src/data/augment.rs`), the same chains with 512-bit vectors as a
//! separate multiply and add (the deformation kernels' arithmetic, which
//! keeps every path's bits equal), and in 16-bit integers: `vpmaddwd` +
//! `vpaddd` (AVX-512 BW) and `vpdpwssd` (AVX-512 VNNI), two int16 products
//! summed into each 32-bit lane. Their "GFLOP/s" count a multiply-add as
//! two operations, so every line compares multiply-adds a second.

#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::*;
    use std::time::Instant;

    /// Independent chains per loop iteration: enough to fill two pipes of
    /// 4-cycle latency.
    const CHAINS: usize = 12;

    /// Runs `iters` iterations of 12 chains of 256-bit FMAs; returns a sum
    /// so nothing is optimised away.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn fma256(iters: u64) -> f32 {
        let mut acc = [_mm256_set1_ps(0.0); CHAINS];
        let a = _mm256_set1_ps(0.999_999);
        let b = _mm256_set1_ps(1e-7);
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm256_fmadd_ps(*x, a, b);
            }
        }
        let mut out = [0f32; 8];
        let mut s = acc[0];
        for x in &acc[1..] {
            s = _mm256_add_ps(s, *x);
        }
        // SAFETY: `out` holds 8 f32.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), s) };
        out.iter().sum()
    }

    /// The sum of the chains' lanes, after the timed loop (so that the
    /// chains are live and none is optimised away).
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    unsafe fn sum_ps512(acc: &[__m512; CHAINS]) -> f32 {
        let mut s = acc[0];
        for x in &acc[1..] {
            s = _mm512_add_ps(s, *x);
        }
        _mm512_reduce_add_ps(s)
    }

    /// As [`sum_ps512`], for int32 lanes (wrapping), as f32.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    unsafe fn sum_epi32_512(acc: &[__m512i; CHAINS]) -> f32 {
        let mut s = acc[0];
        for x in &acc[1..] {
            s = _mm512_add_epi32(s, *x);
        }
        _mm512_reduce_add_epi32(s) as f32
    }

    /// As [`fma256`] with 512-bit vectors.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    unsafe fn fma512(iters: u64) -> f32 {
        let mut acc = [_mm512_set1_ps(0.0); CHAINS];
        let a = _mm512_set1_ps(0.999_999);
        let b = _mm512_set1_ps(1e-7);
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm512_fmadd_ps(*x, a, b);
            }
        }
        // SAFETY: this function has AVX-512F.
        unsafe { sum_ps512(&acc) }
    }

    /// As [`fma512`], each FMA a multiply and a separate add: a chain of
    /// multiplies and a chain of adds, 12 of each.
    ///
    /// # Safety
    /// The CPU has AVX-512F.
    #[target_feature(enable = "avx512f")]
    unsafe fn mul_add512(iters: u64) -> f32 {
        let mut acc = [_mm512_set1_ps(0.0); CHAINS];
        let mut prod = [_mm512_set1_ps(1.0); CHAINS];
        // Opaque 1.0: the products stay normal and cannot be folded away.
        let a = _mm512_set1_ps(std::hint::black_box(1.0));
        for _ in 0..iters {
            for (x, p) in acc.iter_mut().zip(prod.iter_mut()) {
                *p = _mm512_mul_ps(*p, a);
                *x = _mm512_add_ps(*x, *p);
            }
        }
        // SAFETY: this function has AVX-512F.
        unsafe { sum_ps512(&acc) }
    }

    /// 12 chains of `x += madd(x, a)` on int16 pairs (`vpmaddwd` then
    /// `vpaddd`; wrapping, the values do not matter).
    ///
    /// # Safety
    /// The CPU has AVX-512F and BW.
    #[target_feature(enable = "avx512f,avx512bw")]
    unsafe fn madd_i16_512(iters: u64) -> f32 {
        let mut acc: [__m512i; CHAINS] = std::array::from_fn(|i| _mm512_set1_epi32(i as i32));
        let a = _mm512_set1_epi32(std::hint::black_box(0x0003_0005));
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm512_add_epi32(*x, _mm512_madd_epi16(*x, a));
            }
        }
        // SAFETY: this function has AVX-512F.
        unsafe { sum_epi32_512(&acc) }
    }

    /// As [`madd_i16_512`] with the fused `vpdpwssd`.
    ///
    /// # Safety
    /// The CPU has AVX-512F and VNNI.
    #[target_feature(enable = "avx512f,avx512vnni")]
    unsafe fn dpwssd512(iters: u64) -> f32 {
        let mut acc: [__m512i; CHAINS] = std::array::from_fn(|i| _mm512_set1_epi32(i as i32));
        let a = _mm512_set1_epi32(std::hint::black_box(0x0003_0005));
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm512_dpwssd_epi32(*x, *x, a);
            }
        }
        // SAFETY: this function has AVX-512F.
        unsafe { sum_epi32_512(&acc) }
    }

    /// GFLOP/s of one thread running `f` for about `seconds`.
    fn rate(f: unsafe fn(u64) -> f32, lanes: usize, seconds: f64) -> f64 {
        // Calibrate the iteration count on a short run.
        let mut iters = 1_000u64;
        loop {
            let t = Instant::now();
            // SAFETY: the caller checked the ISA of `f`.
            std::hint::black_box(unsafe { f(iters) });
            let dt = t.elapsed().as_secs_f64();
            if dt > 0.01 {
                iters = ((iters as f64) * seconds / dt).max(1.0) as u64;
                break;
            }
            iters *= 4;
        }
        let t = Instant::now();
        // SAFETY: as above.
        std::hint::black_box(unsafe { f(iters) });
        let dt = t.elapsed().as_secs_f64();
        (iters * (CHAINS * lanes * 2) as u64) as f64 / dt / 1e9
    }

    /// A measured kernel: its name, the loop, its multiply-adds per chain
    /// step, and whether it is a floor (an FMA rate).
    type Variant = (&'static str, unsafe fn(u64) -> f32, usize, bool);

    pub fn main(seconds: f64, flop: f64) {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let mut variants: Vec<Variant> = Vec::new();
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            variants.push(("avx2 (256-bit)", fma256, 8, true));
        }
        if is_x86_feature_detected!("avx512f") {
            variants.push(("avx512 (512-bit)", fma512, 16, true));
            variants.push(("avx512 mul + add, no FMA", mul_add512, 16, false));
        }
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
            variants.push((
                "avx512bw vpmaddwd + vpaddd (int16)",
                madd_i16_512,
                32,
                false,
            ));
        }
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512vnni") {
            variants.push(("avx512vnni vpdpwssd (int16)", dpwssd512, 32, false));
        }
        if variants.is_empty() {
            println!("no AVX2+FMA on this CPU: nothing to measure");
            return;
        }
        println!("{cpus} CPU(s); best of 15 rounds of {seconds} s per figure");
        for (name, f, lanes, floor) in variants {
            let mut one = 0f64;
            let mut all = 0f64;
            for _ in 0..15 {
                one = one.max(rate(f, lanes, seconds));
                let total: f64 = std::thread::scope(|s| {
                    let hs: Vec<_> = (0..cpus)
                        .map(|_| s.spawn(move || rate(f, lanes, seconds)))
                        .collect();
                    hs.into_iter().map(|h| h.join().unwrap()).sum()
                });
                all = all.max(total);
            }
            if floor {
                println!(
                    "{name}: 1 core {one:.1} GFLOP/s (= {:.2} GHz at 32 flop/cycle), \
                     {cpus} cores {all:.1} GFLOP/s; floor of {flop:.3e} flop: \
                     1 core {:.2} ms, {cpus} cores {:.2} ms",
                    one / 32.0,
                    flop / one / 1e6,
                    flop / all / 1e6
                );
            } else {
                println!("{name}: 1 core {one:.1} GFLOP/s, {cpus} cores {all:.1} GFLOP/s");
            }
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds: f64 = args.get(1).map_or(0.3, |s| s.parse().expect("SECONDS"));
    let flop: f64 = args.get(2).map_or(1.88e9, |s| s.parse().expect("FLOP"));
    #[cfg(target_arch = "x86_64")]
    x86::main(seconds, flop);
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (seconds, flop);
        println!("x86-64 only");
    }
}
