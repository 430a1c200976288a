//! Finite differences of the full mean loss with respect to W and b, in
//! f64, against the analytic gradient (p − y)/B that the kernels compute.

use idx_softmax::kernels::reference;
use rand::{Rng, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

#[test]
fn analytic_gradient_matches_finite_differences() {
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(7);
    let (b, k, c) = (6, 5, 4);
    let x: Vec<f64> = (0..b * k).map(|_| rng.random_range(0.0..1.0)).collect();
    let labels: Vec<usize> = (0..b).map(|_| rng.random_range(0..c)).collect();
    let wt: Vec<f64> = (0..c * k).map(|_| rng.random_range(-1.0..1.0)).collect();
    let bias: Vec<f64> = (0..c).map(|_| rng.random_range(-1.0..1.0)).collect();

    let logits = reference::forward(&x, &wt, &bias, b, k);
    let (_, g) = reference::softmax_ce(&logits, &labels, c);
    let dwt = reference::weight_grad(&x, &g, b, k, c);
    let db = reference::bias_grad(&g, c);

    let h = 1e-6;
    for i in 0..wt.len() {
        let (mut plus, mut minus) = (wt.clone(), wt.clone());
        plus[i] += h;
        minus[i] -= h;
        let fd = (reference::mean_loss(&x, &labels, &plus, &bias, k)
            - reference::mean_loss(&x, &labels, &minus, &bias, k))
            / (2.0 * h);
        assert!(
            (fd - dwt[i]).abs() < 1e-7,
            "dW[{i}]: finite difference {fd}, analytic {}",
            dwt[i]
        );
    }
    for j in 0..c {
        let (mut plus, mut minus) = (bias.clone(), bias.clone());
        plus[j] += h;
        minus[j] -= h;
        let fd = (reference::mean_loss(&x, &labels, &wt, &plus, k)
            - reference::mean_loss(&x, &labels, &wt, &minus, k))
            / (2.0 * h);
        assert!(
            (fd - db[j]).abs() < 1e-7,
            "db[{j}]: finite difference {fd}, analytic {}",
            db[j]
        );
    }
}
