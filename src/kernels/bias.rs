//! The bias gradient: a column sum of G, in row order. (The update
//! itself is [`crate::optim::Sgd::apply`].)

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
