//! What a network is, without its values: [`Architecture`].
//!
//! Every network is the `nn.Sequential` PyTorch would build for it:
//!
//! ```text
//! [Conv2d(C, K×K, same) → ReLU → MaxPool2d(2)] × conv blocks
//! Flatten                                  (only after conv blocks)
//! [Linear → ReLU] × hidden layers
//! Linear → classes                         (softmax cross-entropy follows)
//! ```
//!
//! Softmax regression is no conv block and no hidden layer (the notebook's
//! model); an MLP has hidden layers; a CNN has conv blocks. Parameters are
//! named by the module's index in that `nn.Sequential` (`0.weight`,
//! `3.bias`, …; the ReLUs, pools and the flatten take indices and hold no
//! tensor), except softmax regression's, a single `nn.Linear`: `weight` and
//! `bias`. A checkpoint is then exactly what `load_state_dict` expects.

use std::fmt;
use std::str::FromStr;

pub use crate::data::ImageShape;

use super::NetworkError;

/// Largest accepted layer width (inputs, hidden units, classes, channels).
pub const MAX_WIDTH: usize = 1 << 20;
/// Largest conv kernel side.
pub const MAX_KERNEL: usize = 31;
/// Most channels a conv block may have.
pub const MAX_CHANNELS: usize = 4096;
/// The kernel side of a conv block when none is given (LeNet's).
pub const DEFAULT_KERNEL: usize = 5;
/// Most parameters a network may have (2^34 f32: 64 GiB; training holds a
/// gradient and momentum of the same size).
const MAX_PARAMS: usize = 1 << 34;

/// One convolution block: Conv2d(`channels`, `kernel` × `kernel`, stride 1,
/// 'same' zero padding) → ReLU → MaxPool2d(2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ConvBlock {
    pub channels: usize,
    pub kernel: usize,
}

impl fmt::Display for ConvBlock {
    /// `6x5`: 6 channels, 5×5.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.channels, self.kernel)
    }
}

impl FromStr for ConvBlock {
    type Err = String;
    /// `C` (a 5×5 kernel) or `CxK`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("'{s}' is not C or CxK (channels, and an odd kernel size)");
        let (c, k) = match s.trim().split_once(['x', 'X']) {
            Some((c, k)) => (c, Some(k)),
            None => (s.trim(), None),
        };
        let channels: usize = c.trim().parse().map_err(|_| bad())?;
        let kernel: usize = match k {
            Some(k) => k.trim().parse().map_err(|_| bad())?,
            None => DEFAULT_KERNEL,
        };
        Ok(Self { channels, kernel })
    }
}

impl ConvBlock {
    /// Checks the block's own rule: channels in `1..=MAX_CHANNELS`, an odd
    /// kernel side in `1..=MAX_KERNEL`.
    pub fn check(&self) -> Result<(), String> {
        if !(1..=MAX_CHANNELS).contains(&self.channels) {
            return Err(format!(
                "{} channels is outside 1..={MAX_CHANNELS}",
                self.channels
            ));
        }
        if self.kernel % 2 == 0 || !(1..=MAX_KERNEL).contains(&self.kernel) {
            return Err(format!(
                "kernel size {} is not odd in 1..={MAX_KERNEL} ('same' padding needs a centre pixel)",
                self.kernel
            ));
        }
        Ok(())
    }
}

/// A network's layers and sizes (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Architecture {
    /// Input features per sample.
    pub features: usize,
    /// The input as an image; needed (and checked against `features`) when
    /// there are conv blocks.
    pub image: Option<ImageShape>,
    pub conv: Vec<ConvBlock>,
    pub hidden: Vec<usize>,
    pub classes: usize,
}

impl Architecture {
    /// Softmax regression or an MLP: `[K, H1, …, C]`.
    pub fn mlp(sizes: &[usize]) -> Self {
        let n = sizes.len();
        Self {
            features: sizes.first().copied().unwrap_or(0),
            image: None,
            conv: Vec::new(),
            hidden: if n > 2 {
                sizes[1..n - 1].to_vec()
            } else {
                Vec::new()
            },
            classes: if n >= 2 { sizes[n - 1] } else { 0 },
        }
    }

    /// Whether this is softmax regression: one linear layer.
    pub fn is_linear(&self) -> bool {
        self.conv.is_empty() && self.hidden.is_empty()
    }

    /// The image after each conv block (each pools by 2, rounding down).
    pub fn conv_shapes(&self) -> Vec<ImageShape> {
        let mut shapes = Vec::with_capacity(self.conv.len());
        if let Some(mut s) = self.image {
            for b in &self.conv {
                s = ImageShape {
                    channels: b.channels,
                    height: s.height / 2,
                    width: s.width / 2,
                };
                shapes.push(s);
            }
        }
        shapes
    }

    /// The widths of the linear layers' inputs and outputs: `[F, H1, …,
    /// C]`, F the flattened features after the conv blocks (the input
    /// features without).
    pub fn linear_sizes(&self) -> Vec<usize> {
        let flat = match self.conv_shapes().last() {
            Some(s) => s.len(),
            None => self.features,
        };
        let mut s = Vec::with_capacity(self.hidden.len() + 2);
        s.push(flat);
        s.extend_from_slice(&self.hidden);
        s.push(self.classes);
        s
    }

    /// Checks every size: widths in `1..=MAX_WIDTH`, at least 2 classes,
    /// each conv block's rule, an image that matches the features and
    /// survives its pools, and a parameter count that fits in memory
    /// arithmetic.
    pub fn check(&self) -> Result<(), NetworkError> {
        let err = |m: String| Err(NetworkError(m));
        let widths = std::iter::once(&self.features)
            .chain(&self.hidden)
            .chain(std::iter::once(&self.classes));
        for &w in widths {
            if w == 0 || w > MAX_WIDTH {
                return err(format!("layer width {w} is outside 1..={MAX_WIDTH}"));
            }
        }
        if self.classes < 2 {
            return err("a classifier needs at least 2 classes".into());
        }
        if !self.conv.is_empty() {
            let Some(image) = self.image else {
                return err("conv layers need 2-D or 3-D samples (height x width, or channels x height x width)".into());
            };
            if image.len() != self.features {
                return err(format!(
                    "an image of {image} does not hold {} features",
                    self.features
                ));
            }
            let mut s = image;
            for (i, b) in self.conv.iter().enumerate() {
                b.check()
                    .map_err(|m| NetworkError(format!("conv block {}: {m}", i + 1)))?;
                if s.height < 2 || s.width < 2 {
                    return err(format!(
                        "conv block {} pools a {}x{} image to nothing; use fewer conv blocks",
                        i + 1,
                        s.height,
                        s.width
                    ));
                }
                s = ImageShape {
                    channels: b.channels,
                    height: s.height / 2,
                    width: s.width / 2,
                };
            }
        }
        let total = self
            .tensor_specs()
            .iter()
            .try_fold(0usize, |acc, (_, shape)| {
                acc.checked_add(shape.iter().try_fold(1usize, |p, &d| p.checked_mul(d))?)
            });
        if total.is_none_or(|t| t > MAX_PARAMS) {
            return err(format!(
                "a network {} has too many parameters",
                self.describe()
            ));
        }
        Ok(())
    }

    /// The parameter tensors' names and shapes, in buffer order (see the
    /// module documentation for the names).
    pub fn tensor_specs(&self) -> Vec<(String, Vec<usize>)> {
        let mut specs = Vec::new();
        if self.is_linear() {
            specs.push(("weight".to_owned(), vec![self.classes, self.features]));
            specs.push(("bias".to_owned(), vec![self.classes]));
            return specs;
        }
        let mut index = 0;
        let mut c_in = self.image.map_or(1, |i| i.channels);
        for b in &self.conv {
            specs.push((
                format!("{index}.weight"),
                vec![b.channels, c_in, b.kernel, b.kernel],
            ));
            specs.push((format!("{index}.bias"), vec![b.channels]));
            c_in = b.channels;
            index += 3; // Conv2d, ReLU, MaxPool2d
        }
        if !self.conv.is_empty() {
            index += 1; // Flatten
        }
        let sizes = self.linear_sizes();
        for w in sizes.windows(2) {
            specs.push((format!("{index}.weight"), vec![w[1], w[0]]));
            specs.push((format!("{index}.bias"), vec![w[1]]));
            index += 2; // Linear, ReLU
        }
        specs
    }

    /// `784-256-10`; with conv blocks `1x28x28-conv6x5-conv16x5-784-120-84-10`
    /// (the image, the blocks, then the linear layers' sizes from the
    /// flattened features on).
    pub fn describe(&self) -> String {
        let linear = sizes_string(&self.linear_sizes());
        match (self.conv.is_empty(), self.image) {
            (false, Some(image)) => {
                let blocks: Vec<String> = self.conv.iter().map(|b| format!("conv{b}")).collect();
                format!("{image}-{}-{linear}", blocks.join("-"))
            }
            _ => linear,
        }
    }

    /// The conv blocks as a record keeps them: `6x5,16x5` (empty for none).
    pub fn conv_string(&self) -> String {
        conv_string(&self.conv)
    }
}

/// `6x5,16x5` for conv blocks (empty for none).
pub fn conv_string(conv: &[ConvBlock]) -> String {
    conv.iter()
        .map(|b| b.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The inverse of [`conv_string`].
pub fn parse_conv(s: &str) -> Option<Vec<ConvBlock>> {
    if s.trim().is_empty() {
        return Some(Vec::new());
    }
    s.split(',').map(|b| b.parse().ok()).collect()
}

/// `[784, 256, 10]` → "784-256-10".
pub fn sizes_string(sizes: &[usize]) -> String {
    sizes
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join("-")
}

/// The inverse of [`sizes_string`].
pub fn parse_sizes(s: &str) -> Option<Vec<usize>> {
    let v: Option<Vec<usize>> = s.split('-').map(|d| d.trim().parse().ok()).collect();
    v.filter(|v| v.len() >= 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lenet() -> Architecture {
        Architecture {
            features: 784,
            image: Some(ImageShape {
                channels: 1,
                height: 28,
                width: 28,
            }),
            conv: vec![
                ConvBlock {
                    channels: 6,
                    kernel: 5,
                },
                ConvBlock {
                    channels: 16,
                    kernel: 5,
                },
            ],
            hidden: vec![120, 84],
            classes: 10,
        }
    }

    #[test]
    fn names_follow_nn_sequential() {
        let a = lenet();
        a.check().unwrap();
        let names: Vec<(String, Vec<usize>)> = a.tensor_specs();
        let want = [
            ("0.weight", vec![6, 1, 5, 5]),
            ("0.bias", vec![6]),
            ("3.weight", vec![16, 6, 5, 5]),
            ("3.bias", vec![16]),
            ("7.weight", vec![120, 784]),
            ("7.bias", vec![120]),
            ("9.weight", vec![84, 120]),
            ("9.bias", vec![84]),
            ("11.weight", vec![10, 84]),
            ("11.bias", vec![10]),
        ];
        assert_eq!(names.len(), want.len());
        for ((n, s), (wn, ws)) in names.iter().zip(want) {
            assert_eq!((n.as_str(), s), (wn, &ws));
        }
        assert_eq!(a.describe(), "1x28x28-conv6x5-conv16x5-784-120-84-10");
        assert_eq!(a.linear_sizes(), [784, 120, 84, 10]);
        let mlp = Architecture::mlp(&[784, 256, 10]);
        assert_eq!(mlp.describe(), "784-256-10");
        assert_eq!(mlp.tensor_specs()[2].0, "2.weight");
        assert_eq!(Architecture::mlp(&[784, 10]).tensor_specs()[0].0, "weight");
    }

    #[test]
    fn odd_sizes_floor_and_bad_ones_are_refused() {
        let mut a = lenet();
        a.image = Some(ImageShape {
            channels: 1,
            height: 15,
            width: 15,
        });
        a.features = 225;
        a.check().unwrap();
        // 15 → 7 → 3: 16 × 3 × 3.
        assert_eq!(a.linear_sizes()[0], 144);
        a.conv[1].kernel = 4;
        assert!(a.check().unwrap_err().0.contains("conv block 2"));
        let mut deep = lenet();
        deep.conv = vec![
            ConvBlock {
                channels: 2,
                kernel: 3
            };
            6
        ];
        assert!(deep.check().unwrap_err().0.contains("to nothing"));
        let mut flat = lenet();
        flat.image = None;
        assert!(flat.check().is_err());
        assert_eq!(
            "6".parse::<ConvBlock>(),
            Ok(ConvBlock {
                channels: 6,
                kernel: 5
            })
        );
        assert_eq!(
            "16x3".parse::<ConvBlock>(),
            Ok(ConvBlock {
                channels: 16,
                kernel: 3
            })
        );
        assert!("x".parse::<ConvBlock>().is_err());
        assert_eq!(parse_conv("6x5,16x5").unwrap(), lenet().conv);
        assert_eq!(conv_string(&lenet().conv), "6x5,16x5");
    }
}
