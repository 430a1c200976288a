//! Makes a set of realistic images from MNIST test digits, for trying
//! `predict` as a user would and for measuring how well the preprocessing
//! recovers MNIST's framing.
//!
//! ```sh
//! cargo run --release --example make_real_world_set -- OUT_DIR [PER_KIND] [SEED]
//! ```
//!
//! Writes `PER_KIND` (default 100) images of each kind (see
//! `real_world/gen.rs`) made from the same randomly chosen test digits,
//! and `OUT_DIR/manifest.csv` (`file,label,kind,index`). The same seed
//! (default 1) gives the same files.

#[path = "real_world/gen.rs"]
mod gen;

use std::path::PathBuf;

use idx_softmax::data::{Dataset, LoadOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out = PathBuf::from(args.next().ok_or(
        "usage: make_real_world_set OUT_DIR [PER_KIND] [SEED] (MNIST from $IDX_SOFTMAX_DATA_DIR or the bundled copy)",
    )?);
    let per_kind: usize = args.next().map_or(Ok(100), |s| s.parse())?;
    let seed: u64 = args.next().map_or(Ok(1), |s| s.parse())?;
    let dir = std::env::var_os("IDX_SOFTMAX_DATA_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(idx_softmax::data::BUNDLED_MNIST));
    let data = Dataset::load(&dir, &LoadOptions::default())?;
    let pixels = data
        .test
        .images
        .as_u8()
        .ok_or("the test images must be u8 28x28")?;
    if data.test.images.sample_shape() != [28, 28] {
        return Err("the test images must be 28x28".into());
    }
    let labels: Vec<u8> = data.test.labels.iter().map(|l| l as u8).collect();
    std::fs::create_dir_all(&out)?;
    let items = gen::generate(pixels, &labels, &out, per_kind, seed)?;
    println!(
        "wrote {} images ({} kinds x {per_kind}) and manifest.csv to {}",
        items.len(),
        gen::KINDS.len(),
        out.display()
    );
    Ok(())
}
