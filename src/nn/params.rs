//! All of a network's parameters in one flat f32 buffer, with named views.
//!
//! As in llm.c, every tensor is a range of one `Vec<f32>`: the optimiser
//! update, its momentum buffer (a second buffer of the same layout), the
//! digest, the finiteness check and checkpoint I/O are each one loop over
//! the buffer or over [`ParamStore::tensors`], whatever the network.

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
    data: Vec<f32>,
    tensors: Vec<TensorSpec>,
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
            data: vec![0.0; offset],
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
        for v in &self.data {
            h.update(v.to_le_bytes());
        }
        format!("{:x}", h.finalize())
    }

    /// Whether every parameter is finite.
    pub fn is_finite(&self) -> bool {
        self.data.iter().all(|v| v.is_finite())
    }
}
