//! Naive f64 references for the convolution and pooling kernels of
//! [`super::conv`], for the tests.
//!
//! Written for obviousness, not speed: the textbook sums as direct nested
//! loops over every index, f64 accumulation, bounds tested inline (no
//! padded copies, no packing, no transposed weights). Layouts as in
//! [`super::conv`]: samples are C × H × W row-major, the weight is
//! `[c_out][c_in][k][k]`.

use super::conv::{ConvGeom, PoolGeom};

/// The input pixel `(y + dy, x + dx)` of channel plane `plane` (H × W), or
/// 0 outside the image: the zero padding of a 'same' convolution.
fn at(plane: &[f64], h: usize, w: usize, y: usize, dy: isize, x: usize, dx: isize) -> f64 {
    let yy = y as isize + dy;
    let xx = x as isize + dx;
    if yy < 0 || xx < 0 || yy >= h as isize || xx >= w as isize {
        0.0
    } else {
        plane[yy as usize * w + xx as usize]
    }
}

/// `out[s][co][y][x] = bias[co] + Σ_{ci,kh,kw} weight[co][ci][kh][kw] ·
/// inp[s][ci][y + kh − p][x + kw − p]` (zero outside the image), p = (k−1)/2.
pub fn conv2d_forward(
    inp: &[f64],
    weight: &[f64],
    bias: &[f64],
    n: usize,
    g: ConvGeom,
) -> Vec<f64> {
    let (h, w, k, p) = (g.h, g.w, g.k, g.pad() as isize);
    let mut out = vec![0.0; n * g.out_len()];
    for s in 0..n {
        for co in 0..g.c_out {
            for y in 0..h {
                for x in 0..w {
                    let mut sum = bias[co];
                    for ci in 0..g.c_in {
                        let plane = &inp[(s * g.c_in + ci) * h * w..][..h * w];
                        for kh in 0..k {
                            for kw in 0..k {
                                let wt = weight[((co * g.c_in + ci) * k + kh) * k + kw];
                                let dy = kh as isize - p;
                                let dx = kw as isize - p;
                                sum += wt * at(plane, h, w, y, dy, x, dx);
                            }
                        }
                    }
                    out[((s * g.c_out + co) * h + y) * w + x] = sum;
                }
            }
        }
    }
    out
}

/// The gradient of `Σ out · d_out` with respect to the input: every output
/// pixel sends `weight · d_out` back to each input pixel it read (the
/// adjoint of [`conv2d_forward`], written as that scatter).
pub fn conv2d_backward_input(d_out: &[f64], weight: &[f64], n: usize, g: ConvGeom) -> Vec<f64> {
    let (h, w, k, p) = (g.h, g.w, g.k, g.pad() as isize);
    let mut d_inp = vec![0.0; n * g.in_len()];
    for s in 0..n {
        for co in 0..g.c_out {
            for y in 0..h {
                for x in 0..w {
                    let d = d_out[((s * g.c_out + co) * h + y) * w + x];
                    for ci in 0..g.c_in {
                        for kh in 0..k {
                            for kw in 0..k {
                                let yy = y as isize + kh as isize - p;
                                let xx = x as isize + kw as isize - p;
                                if yy < 0 || xx < 0 || yy >= h as isize || xx >= w as isize {
                                    continue;
                                }
                                let wt = weight[((co * g.c_in + ci) * k + kh) * k + kw];
                                d_inp[((s * g.c_in + ci) * h + yy as usize) * w + xx as usize] +=
                                    wt * d;
                            }
                        }
                    }
                }
            }
        }
    }
    d_inp
}

/// The gradients of `Σ out · d_out` with respect to the weight (all
/// `[c_out][c_in][k][k]` of it) and the bias, summed over the n samples.
pub fn conv2d_weight_grad(
    d_out: &[f64],
    inp: &[f64],
    n: usize,
    g: ConvGeom,
) -> (Vec<f64>, Vec<f64>) {
    let (h, w, k, p) = (g.h, g.w, g.k, g.pad() as isize);
    let mut dw = vec![0.0; g.weight_len()];
    let mut db = vec![0.0; g.c_out];
    for co in 0..g.c_out {
        for ci in 0..g.c_in {
            for kh in 0..k {
                for kw in 0..k {
                    let mut sum = 0.0;
                    for s in 0..n {
                        let plane = &inp[(s * g.c_in + ci) * h * w..][..h * w];
                        for y in 0..h {
                            for x in 0..w {
                                let d = d_out[((s * g.c_out + co) * h + y) * w + x];
                                let dy = kh as isize - p;
                                let dx = kw as isize - p;
                                sum += d * at(plane, h, w, y, dy, x, dx);
                            }
                        }
                    }
                    dw[((co * g.c_in + ci) * k + kh) * k + kw] = sum;
                }
            }
        }
        for s in 0..n {
            for i in 0..h * w {
                db[co] += d_out[(s * g.c_out + co) * h * w + i];
            }
        }
    }
    (dw, db)
}

/// The position (0..4, row-major in the window) of the maximum of the 2 × 2
/// window at output pixel (oy, ox) of one plane: the first maximum wins a
/// tie, and a NaN wins over any number (the last NaN if several), as in
/// PyTorch's CPU `max_pool2d`.
pub fn maxpool2_argmax(plane: &[f64], w: usize, oy: usize, ox: usize) -> usize {
    let mut best = 0;
    let mut m = plane[2 * oy * w + 2 * ox];
    for i in 1..4 {
        let v = plane[(2 * oy + i / 2) * w + 2 * ox + i % 2];
        if v > m || v.is_nan() {
            m = v;
            best = i;
        }
    }
    best
}

/// `out[s][c][oy][ox] = max of inp[s][c][2oy..2oy+2][2ox..2ox+2]`, with the
/// output H/2 × W/2 (a last odd row or column is dropped).
pub fn maxpool2_forward(inp: &[f64], n: usize, g: PoolGeom) -> Vec<f64> {
    let (oh, ow) = (g.out_h(), g.out_w());
    let mut out = vec![0.0; n * g.out_len()];
    for pl in 0..n * g.c {
        let plane = &inp[pl * g.h * g.w..][..g.h * g.w];
        for oy in 0..oh {
            for ox in 0..ow {
                let i = maxpool2_argmax(plane, g.w, oy, ox);
                out[(pl * oh + oy) * ow + ox] = plane[(2 * oy + i / 2) * g.w + 2 * ox + i % 2];
            }
        }
    }
    out
}

/// The gradient of `Σ out · d_out` with respect to the input: each output's
/// gradient goes to the input pixel its maximum came from; every other input
/// pixel (including a dropped last row or column) gets 0.
pub fn maxpool2_backward(d_out: &[f64], inp: &[f64], n: usize, g: PoolGeom) -> Vec<f64> {
    let (oh, ow) = (g.out_h(), g.out_w());
    let mut d_inp = vec![0.0; n * g.in_len()];
    for pl in 0..n * g.c {
        let plane = &inp[pl * g.h * g.w..][..g.h * g.w];
        for oy in 0..oh {
            for ox in 0..ow {
                let i = maxpool2_argmax(plane, g.w, oy, ox);
                d_inp[pl * g.h * g.w + (2 * oy + i / 2) * g.w + 2 * ox + i % 2] =
                    d_out[(pl * oh + oy) * ow + ox];
            }
        }
    }
    d_inp
}
