//! The two products of the training step through `matrixmultiply::sgemm`.
//!
//! Letters as in [`crate::kernels`]: X is B × K (rows of the batch, f32),
//! `wt` is C × K (the weight matrix W = wtᵀ is K × C), G and the logits are
//! B × C. matrixmultiply takes arbitrary row and column strides, so the
//! transposes below cost nothing: they are just swapped strides.
//!
//! matrixmultiply's own threading feature stays off: parallelism belongs to
//! the training loop, which splits the work into fixed blocks so the result
//! does not depend on the thread count.

/// `logits = X · W + bias` (B × C), with W given as `wt` (C × K).
///
/// # Panics
/// If a slice length disagrees with B, K and C.
pub fn forward(x: &[f32], wt: &[f32], bias: &[f32], logits: &mut [f32], b: usize, k: usize) {
    let c = bias.len();
    // Checked products: a wrapped size must not pass for a small one.
    assert_eq!(Some(x.len()), b.checked_mul(k), "x must be B × K");
    assert_eq!(Some(wt.len()), c.checked_mul(k), "wt must be C × K");
    assert_eq!(Some(logits.len()), b.checked_mul(c), "logits must be B × C");
    for row in logits.chunks_exact_mut(c.max(1)) {
        row.copy_from_slice(bias);
    }
    if b == 0 || c == 0 {
        return;
    }
    // SAFETY: m = B, k = K, n = C. A = X with strides (K, 1) spans exactly
    // B·K elements; B-matrix = W (K × C) read from wt with strides (1, K),
    // spanning C·K elements; C-matrix = logits with strides (C, 1), B·C
    // elements. All lengths were asserted above, and logits does not alias
    // the inputs (it is a distinct &mut).
    unsafe {
        matrixmultiply::sgemm(
            b,
            k,
            c,
            1.0,
            x.as_ptr(),
            k as isize,
            1,
            wt.as_ptr(),
            1,
            k as isize,
            1.0,
            logits.as_mut_ptr(),
            c as isize,
            1,
        );
    }
}

/// `dwt = Gᵀ · X` (C × K): the weight gradient, laid out like `wt`.
/// `dwt` is overwritten.
///
/// # Panics
/// If a slice length disagrees with B, K and C.
pub fn weight_grad(x: &[f32], g: &[f32], dwt: &mut [f32], b: usize, k: usize, c: usize) {
    // Checked products: a wrapped size must not pass for a small one.
    assert_eq!(Some(x.len()), b.checked_mul(k), "x must be B × K");
    assert_eq!(Some(g.len()), b.checked_mul(c), "g must be B × C");
    assert_eq!(Some(dwt.len()), c.checked_mul(k), "dwt must be C × K");
    if b == 0 {
        dwt.fill(0.0);
        return;
    }
    // SAFETY: m = C, k = B, n = K. A = Gᵀ read from g with strides (1, C),
    // C·B elements; B-matrix = X with strides (K, 1), B·K elements;
    // C-matrix = dwt with strides (K, 1), C·K elements. beta = 0 means dwt
    // is only written. Lengths asserted above; dwt is a distinct &mut.
    unsafe {
        matrixmultiply::sgemm(
            c,
            b,
            k,
            1.0,
            g.as_ptr(),
            1,
            c as isize,
            x.as_ptr(),
            k as isize,
            1,
            0.0,
            dwt.as_mut_ptr(),
            k as isize,
            1,
        );
    }
}

/// `dw = Gᵀ · X[:, col0 .. col0 + width]` (C × width): one column block of
/// the weight gradient. X is B × K (row stride K), G is B × C. `dw` is
/// overwritten.
///
/// # Panics
/// If a slice length disagrees with the dimensions, or the block leaves X.
#[allow(clippy::too_many_arguments)]
pub fn weight_grad_cols(
    x: &[f32],
    k: usize,
    g: &[f32],
    c: usize,
    b: usize,
    col0: usize,
    width: usize,
    dw: &mut [f32],
) {
    assert_eq!(Some(x.len()), b.checked_mul(k), "x must be B × K");
    assert_eq!(Some(g.len()), b.checked_mul(c), "g must be B × C");
    assert_eq!(Some(dw.len()), c.checked_mul(width), "dw must be C × width");
    assert!(
        col0.checked_add(width).is_some_and(|end| end <= k),
        "column block outside X"
    );
    if b == 0 || width == 0 || c == 0 {
        dw.fill(0.0);
        return;
    }
    // SAFETY: m = C, k = B, n = width. A = Gᵀ read from g with strides
    // (1, C): C·B elements; B-matrix = the columns col0.. of X with strides
    // (K, 1), starting at x[col0]: its last element is x[(B-1)·K + col0 +
    // width - 1] < B·K (asserted above); C-matrix = dw, strides (width, 1),
    // C·width elements, a distinct &mut; beta = 0, so dw is only written.
    unsafe {
        matrixmultiply::sgemm(
            c,
            b,
            width,
            1.0,
            g.as_ptr(),
            1,
            c as isize,
            x.as_ptr().add(col0),
            k as isize,
            1,
            0.0,
            dw.as_mut_ptr(),
            width as isize,
            1,
        );
    }
}

/// `dx = G · wt` (B × K): the gradient with respect to a layer's input,
/// with the weight given as `wt` (C × K). `dx` is overwritten.
///
/// # Panics
/// If a slice length disagrees with B, K and C.
pub fn input_grad(g: &[f32], wt: &[f32], dx: &mut [f32], b: usize, c: usize, k: usize) {
    assert_eq!(Some(g.len()), b.checked_mul(c), "g must be B × C");
    assert_eq!(Some(wt.len()), c.checked_mul(k), "wt must be C × K");
    assert_eq!(Some(dx.len()), b.checked_mul(k), "dx must be B × K");
    if b == 0 || c == 0 || k == 0 {
        dx.fill(0.0);
        return;
    }
    // SAFETY: m = B, k = C, n = K. A = G with strides (C, 1), B·C
    // elements; B-matrix = wt with strides (K, 1), C·K elements; C-matrix =
    // dx with strides (K, 1), B·K elements, a distinct &mut; beta = 0.
    unsafe {
        matrixmultiply::sgemm(
            b,
            c,
            k,
            1.0,
            g.as_ptr(),
            c as isize,
            1,
            wt.as_ptr(),
            k as isize,
            1,
            0.0,
            dx.as_mut_ptr(),
            k as isize,
            1,
        );
    }
}
