//! The engine's only input: a borrowed view of labelled samples.
//!
//! A [`Samples`] is `n` rows of `features` pixels, u8 or f32, row-major,
//! plus one class label per row. It knows nothing of IDX: the mmap loader
//! ([`crate::data::Split::samples`]) builds one over its mapping, and
//! the Python front end builds one over NumPy arrays, both without a copy.
//!
//! u8 pixels are scaled by [`U8_SCALE`] wherever they become f32 (inside
//! the fused kernels' registers, or in [`Samples::row_into_f32`]); f32
//! pixels are used as they are.

use std::borrow::Cow;

use crate::data::pixels::{u8_to_f32, U8_SCALE};

/// A sample seen as an image: `channels` planes of `height × width`,
/// channel-major (C × H × W, PyTorch's layout).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ImageShape {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl ImageShape {
    /// The image a sample of `shape` is: `[H, W]` is one channel (an IDX
    /// file of 3 dimensions, MNIST's 1×28×28), `[C, H, W]` is C channels.
    pub fn of_sample(shape: &[usize]) -> Option<Self> {
        match *shape {
            [height, width] => Some(Self {
                channels: 1,
                height,
                width,
            }),
            [channels, height, width] => Some(Self {
                channels,
                height,
                width,
            }),
            _ => None,
        }
    }

    /// Pixels per channel.
    pub fn plane(&self) -> usize {
        self.height * self.width
    }

    /// Values per sample.
    pub fn len(&self) -> usize {
        self.channels * self.plane()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl std::fmt::Display for ImageShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}x{}", self.channels, self.height, self.width)
    }
}

/// The pixels of every row, row-major.
#[derive(Clone, Debug)]
pub enum Pixels<'a> {
    /// Raw bytes, scaled by [`U8_SCALE`] when used.
    U8(&'a [u8]),
    /// Values used as they are (owned when decoded from big-endian IDX).
    F32(Cow<'a, [f32]>),
}

/// One label per row.
#[derive(Clone, Debug)]
pub enum LabelValues<'a> {
    U8(&'a [u8]),
    U32(Cow<'a, [u32]>),
}

impl LabelValues<'_> {
    fn len(&self) -> usize {
        match self {
            Self::U8(v) => v.len(),
            Self::U32(v) => v.len(),
        }
    }

    #[inline]
    fn get(&self, i: usize) -> u32 {
        match self {
            Self::U8(v) => u32::from(v[i]),
            Self::U32(v) => v[i],
        }
    }
}

/// Why a set of samples was refused. Messages are one line; the caller
/// names the source (a file, an array).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SampleError {
    #[error("{0}")]
    Invalid(String),
}

/// Labelled samples, borrowed. Checked once when built: the lengths agree,
/// every label is below `classes`, every f32 pixel is finite.
#[derive(Clone, Debug)]
pub struct Samples<'a> {
    pixels: Pixels<'a>,
    labels: LabelValues<'a>,
    features: usize,
    classes: usize,
    /// The shape of one sample, e.g. `[28, 28]` (`[features]` if unknown).
    sample_shape: Vec<usize>,
}

impl<'a> Samples<'a> {
    /// Checks and wraps `pixels` (`n × features`) and `labels` (`n`).
    /// `sample_shape` must multiply to `features` (empty: `[features]`).
    pub fn new(
        pixels: Pixels<'a>,
        labels: LabelValues<'a>,
        features: usize,
        classes: usize,
        sample_shape: Vec<usize>,
    ) -> Result<Self, SampleError> {
        let bad = |m: String| Err(SampleError::Invalid(m));
        if features == 0 {
            return bad("samples need at least one feature".into());
        }
        if classes < 2 {
            return bad(format!("{classes} class(es): at least 2 are needed"));
        }
        let values = match &pixels {
            Pixels::U8(p) => p.len(),
            Pixels::F32(p) => p.len(),
        };
        if values % features != 0 {
            return bad(format!(
                "{values} pixel values do not divide into rows of {features} features"
            ));
        }
        let n = values / features;
        if n == 0 {
            return bad("no samples".into());
        }
        if labels.len() != n {
            return bad(format!("{n} samples but {} labels", labels.len()));
        }
        if n > u32::MAX as usize {
            return bad(format!("{n} samples: at most {} are supported", u32::MAX));
        }
        if let Some(i) = (0..n).find(|&i| labels.get(i) as usize >= classes) {
            return bad(format!(
                "label {i} is {}, outside 0..{classes}",
                labels.get(i)
            ));
        }
        if let Pixels::F32(p) = &pixels {
            if let Some(i) = p.iter().position(|v| !v.is_finite()) {
                return bad(format!(
                    "sample {}, feature {} is {}: pixel values must be finite",
                    i / features,
                    i % features,
                    p[i]
                ));
            }
        }
        let sample_shape = if sample_shape.is_empty() {
            vec![features]
        } else {
            sample_shape
        };
        if sample_shape.iter().product::<usize>() != features {
            return bad(format!(
                "sample shape {sample_shape:?} does not hold {features} features"
            ));
        }
        Ok(Self {
            pixels,
            labels,
            features,
            classes,
            sample_shape,
        })
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Pixels per sample (K).
    pub fn features(&self) -> usize {
        self.features
    }

    /// Number of classes (C); every label is below it.
    pub fn classes(&self) -> usize {
        self.classes
    }

    pub fn sample_shape(&self) -> &[usize] {
        &self.sample_shape
    }

    pub fn pixels(&self) -> &Pixels<'a> {
        &self.pixels
    }

    /// The raw pixel bytes, when the samples are u8.
    pub fn as_u8(&self) -> Option<&'a [u8]> {
        match self.pixels {
            Pixels::U8(p) => Some(p),
            Pixels::F32(_) => None,
        }
    }

    /// The pixel values, when the samples are f32.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.pixels {
            Pixels::U8(_) => None,
            Pixels::F32(p) => Some(p),
        }
    }

    /// The label of sample `i`.
    #[inline]
    pub fn label(&self, i: usize) -> u32 {
        self.labels.get(i)
    }

    /// Asks the CPU to start loading the labels of samples `rows` into
    /// the L2 cache (they are used a step later, when L1 would have dropped
    /// them). A hint only: it changes no result; an index out of range is
    /// ignored.
    ///
    /// A shuffled batch reads its labels at random: over a set of millions
    /// of samples each one is a DRAM access and a page walk, and waiting
    /// on them was a tenth of a softmax epoch over an MNIST8M-sized set.
    pub fn prefetch_labels(&self, rows: &[u32]) {
        use crate::kernels::fused::prefetch_line;
        for &i in rows {
            let at = match &self.labels {
                LabelValues::U8(v) => v.get(i as usize).map(|x| (x as *const u8).cast::<u8>()),
                LabelValues::U32(v) => v.get(i as usize).map(|x| (x as *const u32).cast::<u8>()),
            };
            if let Some(p) = at {
                prefetch_line::<u8, false>(p);
            }
        }
    }

    /// Row `i` as f32: u8 pixels × [`U8_SCALE`], f32 as they are.
    ///
    /// # Panics
    /// If `out.len() != features` or `i` is out of range.
    pub fn row_into_f32(&self, i: usize, out: &mut [f32]) {
        let k = self.features;
        match &self.pixels {
            Pixels::U8(p) => u8_to_f32(&p[i * k..(i + 1) * k], out),
            Pixels::F32(p) => out.copy_from_slice(&p[i * k..(i + 1) * k]),
        }
    }

    /// The scale the network applies to this sample type's raw values.
    pub fn scale(&self) -> f32 {
        match self.pixels {
            Pixels::U8(_) => U8_SCALE,
            Pixels::F32(_) => 1.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_shapes_labels_and_values() {
        let px = [0u8, 255, 10, 20];
        let ok = Samples::new(Pixels::U8(&px), LabelValues::U8(&[0, 1]), 2, 2, vec![]).unwrap();
        assert_eq!(
            (ok.len(), ok.features(), ok.sample_shape()),
            (2, 2, &[2][..])
        );
        let mut row = [0.0; 2];
        ok.row_into_f32(0, &mut row);
        assert_eq!(row, [0.0, 1.0]);
        let e = |r: Result<Samples, SampleError>| r.unwrap_err().to_string();
        assert!(e(Samples::new(
            Pixels::U8(&px),
            LabelValues::U8(&[0, 2]),
            2,
            2,
            vec![]
        ))
        .contains("label 1 is 2"));
        assert!(e(Samples::new(
            Pixels::U8(&px),
            LabelValues::U8(&[0]),
            2,
            2,
            vec![]
        ))
        .contains("2 samples but 1 labels"));
        assert!(e(Samples::new(
            Pixels::U8(&px),
            LabelValues::U8(&[0]),
            3,
            2,
            vec![]
        ))
        .contains("do not divide"));
        let f = [0.0f32, f32::NAN];
        assert!(e(Samples::new(
            Pixels::F32(Cow::Borrowed(&f)),
            LabelValues::U8(&[0]),
            2,
            2,
            vec![]
        ))
        .contains("sample 0, feature 1 is NaN"));
        assert!(e(Samples::new(
            Pixels::U8(&px),
            LabelValues::U8(&[0, 1]),
            2,
            2,
            vec![3]
        ))
        .contains("does not hold"));
    }
}
