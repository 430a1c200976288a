//! All of a network's parameters in one flat f32 buffer, with named views.
//!
//! As in llm.c, every tensor is a range of one f32 buffer: the optimiser
//! update, its momentum buffer (a second buffer of the same layout), the
//! digest, the finiteness check and checkpoint I/O are each one loop over
//! the buffer or over [`ParamStore::tensors`], whatever the network.
//!
//! The buffer starts on a 64-byte cache line ([`AlignedBuf`]): with 784
//! features a weight row is 49 lines long, so every row of W starts on a
//! line too, and the fused kernels' 64-byte AVX-512 loads of W never
//! straddle two lines (from `Vec<f32>`'s 16-byte alignment, three loads
//! in four did).

use std::ops::Range;

use sha2::{Digest, Sha256};

/// A named tensor's place in the buffer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    /// The checkpoint name, e.g. `weight` or `0.weight`.
    pub name: String,
    /// Row-major dimensions, e.g. `[out, in]` for a weight.
    pub shape: Vec<usize>,
    /// Where its elements start in the buffer.
    pub offset: usize,
}

impl TensorSpec {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its elements' range in the buffer.
    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.len()
    }
}

/// The parameters: one buffer, tensors laid out in order, no gaps.
#[derive(Clone, Debug, PartialEq)]
pub struct ParamStore {
    data: AlignedBuf,
    tensors: Vec<TensorSpec>,
}

/// A cache line of f32.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Line([f32; 16]);

/// A zero-initialised f32 buffer whose first element starts a 64-byte
/// cache line; it derefs to `[f32]`.
#[derive(Clone)]
pub struct AlignedBuf {
    lines: Vec<Line>,
    len: usize,
}

impl AlignedBuf {
    /// `len` zeros.
    pub fn zeros(len: usize) -> Self {
        Self {
            lines: vec![Line([0.0; 16]); len.div_ceil(16)],
            len,
        }
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        // SAFETY: `lines` holds `len.div_ceil(16)` lines of 16 initialised
        // f32 each, contiguous (`repr(C)`, size 64 = 16 f32, no padding), so
        // its first `len` f32 are valid for reads for the borrow's life.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast(), self.len) }
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [f32] {
        // SAFETY: as in `deref`, borrowed mutably through `&mut self`.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast(), self.len) }
    }
}

impl PartialEq for AlignedBuf {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

impl ParamStore {
    /// A zeroed store with the given `(name, shape)` tensors, in order.
    pub fn zeros(specs: &[(String, Vec<usize>)]) -> Self {
        let mut offset = 0;
        let tensors: Vec<TensorSpec> = specs
            .iter()
            .map(|(name, shape)| {
                let t = TensorSpec {
                    name: name.clone(),
                    shape: shape.clone(),
                    offset,
                };
                offset += t.len();
                t
            })
            .collect();
        Self {
            data: AlignedBuf::zeros(offset),
            tensors,
        }
    }

    pub fn tensors(&self) -> &[TensorSpec] {
        &self.tensors
    }

    /// The whole buffer, tensors in order.
    pub fn data(&self) -> &[f32] {
        &self.data
    }

    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// Total number of parameters.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Tensor `i`'s elements.
    pub fn get(&self, i: usize) -> &[f32] {
        &self.data[self.tensors[i].range()]
    }

    pub fn get_mut(&mut self, i: usize) -> &mut [f32] {
        let r = self.tensors[i].range();
        &mut self.data[r]
    }

    /// The index of the tensor called `name`.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.tensors.iter().position(|t| t.name == name)
    }

    /// Hex SHA-256 of every tensor in order, as little-endian f32: equal
    /// digests mean bitwise-equal parameters. For softmax regression
    /// (`weight` then `bias`) this is the digest earlier versions printed.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for v in self.data.iter() {
            h.update(v.to_le_bytes());
        }
        format!("{:x}", h.finalize())
    }

    /// Whether every parameter is finite.
    pub fn is_finite(&self) -> bool {
        self.data.iter().all(|v| v.is_finite())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_starts_on_a_cache_line_and_holds_its_length() {
        for n in [0, 1, 15, 16, 17, 7850, 203_530] {
            let mut s = ParamStore::zeros(&[("w".into(), vec![n])]);
            assert_eq!(s.data().len(), n);
            assert_eq!(s.data().as_ptr() as usize % 64, 0, "{n}");
            assert!(s.data().iter().all(|&v| v == 0.0));
            s.data_mut()
                .iter_mut()
                .enumerate()
                .for_each(|(i, v)| *v = i as f32);
            let c = s.clone();
            assert_eq!(c.data().as_ptr() as usize % 64, 0, "{n}: clone");
            assert_eq!(c, s);
            assert_eq!(c.digest(), s.digest());
        }
    }
}
