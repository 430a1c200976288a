//! Time of the per-sample deformations on one core: every kind deforms the
//! first N MNIST training images, REPS times (each repetition a new epoch),
//! interleaved so that machine noise hits every kind alike; prints the best
//! and the median ns per sample of each kind.
//!
//! ```text
//! cargo run --release --example augment_bench -- [KINDS] [REPS] [N] [KERNEL]
//! cargo run --release --example augment_bench -- none,shift,affine,elastic 7 60000
//! cargo run --release --example augment_bench -- elastic 5 60000 avx2
//! ```
//!
//! KINDS may include `field`: the elastic displacement fields alone (noise
//! and smoothing, no resampling).
//!
//! `augment_bench dump FILE N` instead writes, for the first N training
//! images with the default elastic augmentation (seed 42, epoch 0), one
//! record each: the 2·784 uniforms of the sample's stream in stream order
//! (f32), the fields dx and dy (784 f32 each, row-major) and the deformed
//! image (784 u8), all little-endian, for `perf/augment_compare.py` to check
//! against SciPy.
//!
//! Times are this thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), so that
//! other processes on the machine do not inflate them; `wall_s` is given
//! too. `perf/augment_compare.py` runs it next to SciPy. One line per kind:
//! `kind=elastic path=… n=… reps=… best_s=… median_s=… wall_s=… best_wall_s=… ns_per_sample=… checksum=…`
//! (`best_s`, `median_s`: CPU time; `wall_s`, `best_wall_s`: wall time of
//! the loop; `ns_per_sample` from the median CPU time).

use std::path::Path;
use std::time::Instant;

use idx_softmax::data::augment::{self, Augment, AugmentKind, Augmenter};
use idx_softmax::data::{Dataset, LoadOptions};
use idx_softmax::kernels::KernelPath;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("dump") {
        let path = args.get(2).expect("dump FILE N");
        let n: usize = args.get(3).map_or(16, |s| s.parse().expect("N"));
        dump(path, n);
        return;
    }
    let names: Vec<String> = args
        .get(1)
        .map_or("none,shift,affine,elastic", |s| s.as_str())
        .split(',')
        .map(str::to_string)
        .collect();
    let kinds: Vec<AugmentKind> = names
        .iter()
        .map(|s| {
            if s == "field" {
                AugmentKind::Elastic
            } else {
                s.parse().expect("KINDS")
            }
        })
        .collect();
    let reps: usize = args.get(2).map_or(7, |s| s.parse().expect("REPS"));
    let n_arg: usize = args.get(3).map_or(60_000, |s| s.parse().expect("N"));
    let path: KernelPath = args
        .get(4)
        .map_or(KernelPath::best(), |s| s.parse().expect("KERNEL"));

    let data = Dataset::load(
        Path::new(idx_softmax::data::BUNDLED_MNIST),
        &LoadOptions::default(),
    )
    .expect("MNIST");
    let train = data.train.samples(data.classes).expect("train samples");
    let pixels = train.as_u8().expect("u8 pixels");
    let shape = augment::shape_of(train.sample_shape()).expect("shape");
    let k = shape.len();
    let n = n_arg.min(train.len());

    let augmenters: Vec<Augmenter> = kinds
        .iter()
        .map(|&kind| Augmenter::with_path(Augment::defaults(kind), shape, path).expect("augmenter"))
        .collect();
    let mut out = vec![0u8; k];
    let mut times = vec![Vec::new(); kinds.len()];
    let mut walls = vec![Vec::new(); kinds.len()];
    let mut checksums = vec![0u64; kinds.len()];
    for rep in 0..reps {
        for (a, aug) in augmenters.iter().enumerate() {
            let mut scratch = aug.scratch();
            let mut sum = 0u64;
            let field_only = names[a] == "field";
            let (t, cpu) = (Instant::now(), thread_cpu_s());
            for i in 0..n {
                if field_only {
                    let (dx, _) = aug
                        .elastic_field(42, rep as u64, i as u64, &mut scratch)
                        .unwrap();
                    sum = sum.wrapping_add(dx[i % k].to_bits() as u64);
                    continue;
                }
                aug.apply(
                    42,
                    rep as u64,
                    i as u64,
                    &pixels[i * k..(i + 1) * k],
                    &mut out,
                    &mut scratch,
                );
                sum = sum.wrapping_add(u64::from(out[i % k]));
            }
            times[a].push(thread_cpu_s() - cpu);
            walls[a].push(t.elapsed().as_secs_f64());
            checksums[a] = checksums[a].wrapping_add(sum);
        }
    }
    for (a, name) in names.iter().enumerate() {
        let mut t = times[a].clone();
        t.sort_by(f64::total_cmp);
        let mut w = walls[a].clone();
        w.sort_by(f64::total_cmp);
        let median = t[t.len() / 2];
        println!(
            "kind={name} path={path} n={n} reps={reps} best_s={:.6} median_s={median:.6} wall_s={:.6} best_wall_s={:.6} ns_per_sample={:.1} checksum={}",
            t[0],
            w[w.len() / 2],
            w[0],
            median / n as f64 * 1e9,
            checksums[a]
        );
    }
}

/// See the module docs.
fn dump(path: &str, n: usize) {
    use idx_softmax::data::augment::{elastic_uniforms, sample_key};
    use std::io::Write;
    let data = Dataset::load(
        Path::new(idx_softmax::data::BUNDLED_MNIST),
        &LoadOptions::default(),
    )
    .expect("MNIST");
    let train = data.train.samples(data.classes).expect("train samples");
    let pixels = train.as_u8().expect("u8 pixels");
    let shape = augment::shape_of(train.sample_shape()).expect("shape");
    let k = shape.len();
    let aug = Augmenter::new(Augment::defaults(AugmentKind::Elastic), shape).expect("augmenter");
    let mut scratch = aug.scratch();
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let mut out = vec![0u8; k];
    for i in 0..n.min(train.len()) {
        let u = elastic_uniforms(sample_key(42, 0, i as u64), 2 * k);
        let (dx, dy) = aug.elastic_field(42, 0, i as u64, &mut scratch).unwrap();
        let (dx, dy) = (dx.to_vec(), dy.to_vec());
        aug.apply(
            42,
            0,
            i as u64,
            &pixels[i * k..(i + 1) * k],
            &mut out,
            &mut scratch,
        );
        for v in u.iter().chain(&dx).chain(&dy) {
            file.write_all(&v.to_le_bytes()).expect("write");
        }
        file.write_all(&out).expect("write");
    }
    file.flush().expect("flush");
}

/// This thread's CPU time in seconds.
fn thread_cpu_s() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a
    // constant every Linux supports.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}
