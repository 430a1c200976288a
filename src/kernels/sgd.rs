//! The bias gradient and the SGD update.

/// `db[c] = Σ_b g[b][c]`, summed in row order. `g` is B × C.
pub fn bias_grad(g: &[f32], db: &mut [f32]) {
    let c = db.len();
    db.fill(0.0);
    for row in g.chunks_exact(c) {
        for (d, &v) in db.iter_mut().zip(row) {
            *d += v;
        }
    }
}

/// Plain SGD: `param -= lr · grad`.
///
/// # Panics
/// If the lengths differ.
pub fn update(param: &mut [f32], grad: &[f32], lr: f32) {
    assert_eq!(param.len(), grad.len(), "sgd::update: length mismatch");
    for (p, &g) in param.iter_mut().zip(grad) {
        *p -= lr * g;
    }
}
