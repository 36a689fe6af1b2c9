use crate::l2_normalize;
use candle_core::{bail, DType, Result, Tensor, D};

/// Row-wise `logsumexp`, stabilised by the (detached) row maximum.
fn logsumexp(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let sum = x.broadcast_sub(&max)?.exp()?.sum_keepdim(D::Minus1)?;
    (sum.log()? + max)?.squeeze(D::Minus1)
}

fn check_temperature(temperature: f64) -> Result<()> {
    if !(temperature.is_finite() && temperature > 0.0) {
        bail!("temperature must be a positive number, got {temperature}")
    }
    Ok(())
}

/// NT-Xent, the normalised temperature-scaled cross-entropy of SimCLR
/// (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations").
///
/// Both views are L2-normalised. Each of the 2N rows is a 2N-way softmax over the
/// other rows (itself excluded): the other view of the same sample is the positive,
/// the 2N-2 other samples are negatives. Returns the mean over all 2N rows, the
/// convention of lightly's `NTXentLoss` without a memory bank.
///
/// # Shapes
/// `z0`, `z1`: (N, D) → scalar.
///
/// # Errors
/// If the shapes differ, N < 2, or the temperature is not positive.
pub fn nt_xent(z0: &Tensor, z1: &Tensor, temperature: f64) -> Result<Tensor> {
    check_temperature(temperature)?;
    if z0.dims() != z1.dims() || z0.rank() != 2 {
        bail!(
            "nt_xent: views must both be (N, D), got {:?} and {:?}",
            z0.dims(),
            z1.dims()
        )
    }
    let n = z0.dim(0)?;
    if n < 2 {
        bail!("nt_xent needs at least 2 samples per batch for negatives, got {n}")
    }
    let z = Tensor::cat(&[l2_normalize(z0)?, l2_normalize(z1)?], 0)?;
    let partner = Tensor::cat(&[z.narrow(0, n, n)?, z.narrow(0, 0, n)?], 0)?;
    let positives = (z.mul(&partner)?.sum(1)? / temperature)?;
    // Mask the self-similarity with a large negative number so it drops out of the softmax.
    let self_mask = (Tensor::eye(2 * n, DType::F32, z.device())? * 1e9)?.to_dtype(z.dtype())?;
    let logits = ((z.matmul(&z.t()?)? / temperature)? - self_mask)?;
    (logsumexp(&logits)? - positives)?.mean_all()
}

/// InfoNCE with explicit negatives (Oord et al. 2018), as used by MoCo (He et al. 2020).
///
/// `q`, `k` and `negatives` are L2-normalised. The logits of row i are
/// `[q_i·k_i | q_i·negativesᵀ] / τ`, the target is 0, and the loss is the mean
/// cross-entropy over the N rows.
///
/// # Shapes
/// `q`, `k`: (N, D); `negatives`: (K, D) → scalar.
///
/// # Errors
/// If the shapes disagree or the temperature is not positive.
pub fn info_nce(q: &Tensor, k: &Tensor, negatives: &Tensor, temperature: f64) -> Result<Tensor> {
    let logits = positive_first_logits("info_nce", q, k, negatives, temperature)?;
    let positives = logits.narrow(1, 0, 1)?.squeeze(1)?;
    (logsumexp(&logits)? - positives)?.mean_all()
}

/// The `(N, 1 + K)` similarity logits `[q_i·k_i | q_i·negativesᵀ] / τ` of L2-normalised
/// inputs, positive first: the shared input of [`info_nce`] and [`crate::nce`].
///
/// # Errors
/// If the shapes disagree or the temperature is not positive; messages start with `what`.
pub(crate) fn positive_first_logits(
    what: &str,
    q: &Tensor,
    k: &Tensor,
    negatives: &Tensor,
    temperature: f64,
) -> Result<Tensor> {
    check_temperature(temperature)?;
    if q.dims() != k.dims()
        || q.rank() != 2
        || negatives.rank() != 2
        || negatives.dim(1)? != q.dim(1)?
    {
        bail!(
            "{what}: expected q, k (N, D) and negatives (K, D), got {:?}, {:?}, {:?}",
            q.dims(),
            k.dims(),
            negatives.dims()
        )
    }
    let (q, k, negatives) = (l2_normalize(q)?, l2_normalize(k)?, l2_normalize(negatives)?);
    let positives = q.mul(&k)?.sum_keepdim(1)?;
    Tensor::cat(&[&positives, &q.matmul(&negatives.t()?)?], 1)? / temperature
}

/// Deterministic test input `x[i, j] = sin(0.37 * (i * d + j) + phase)`, reproduced in
/// the Python of the loss tests.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn test_input(n: usize, d: usize, phase: f32) -> Tensor {
    let v: Vec<f32> = (0..n * d)
        .map(|t| (0.37 * t as f32 + phase).sin())
        .collect();
    Tensor::from_vec(v, (n, d), &candle_core::Device::Cpu).unwrap()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::test_input as input;
    use super::*;
    use candle_core::Var;

    fn close(a: f32, b: f32) {
        assert!(((a - b) / b).abs() < 1e-5, "{a} vs reference {b}");
    }

    // Reference values from PyTorch 2.15 and lightly's NTXentLoss definition
    // (the lightly formula is written out so the script needs only torch):
    //
    // import torch, torch.nn.functional as F
    // def inp(n, d, phase): return torch.sin(0.37 * torch.arange(n * d, dtype=torch.float32) + phase).reshape(n, d)
    // def nt_xent(z0, z1, t):
    //     n = z0.shape[0]; z = F.normalize(torch.cat([z0, z1]), dim=1)
    //     logits = z @ z.T / t; logits.fill_diagonal_(float('-inf'))
    //     target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)])
    //     return F.cross_entropy(logits, target)
    // def info_nce(q, k, neg, t):
    //     q, k, neg = (F.normalize(x, dim=1) for x in (q, k, neg))
    //     logits = torch.cat([(q * k).sum(1, keepdim=True), q @ neg.T], 1) / t
    //     return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long))
    // print(nt_xent(inp(4, 3, 0.), inp(4, 3, 1.), 0.5).item())
    // print(nt_xent(inp(8, 16, 0.3), inp(8, 16, 0.5), 0.1).item())
    // print(info_nce(inp(4, 5, 0.), inp(4, 5, 0.2), inp(7, 5, 2.), 0.07).item())
    // print(info_nce(inp(3, 8, 1.), inp(3, 8, 1.5), inp(16, 8, -1.), 0.2).item())
    const NT_XENT_REF: [f32; 2] = [1.836_023_1, 1.276_710_6];
    const INFO_NCE_REF: [f32; 2] = [0.774_465_3, 1.938_302_2];

    #[test]
    fn nt_xent_matches_pytorch() {
        let a = nt_xent(&input(4, 3, 0.), &input(4, 3, 1.), 0.5).unwrap();
        close(a.to_scalar::<f32>().unwrap(), NT_XENT_REF[0]);
        let b = nt_xent(&input(8, 16, 0.3), &input(8, 16, 0.5), 0.1).unwrap();
        close(b.to_scalar::<f32>().unwrap(), NT_XENT_REF[1]);
    }

    #[test]
    fn info_nce_matches_pytorch() {
        let a = info_nce(&input(4, 5, 0.), &input(4, 5, 0.2), &input(7, 5, 2.), 0.07).unwrap();
        close(a.to_scalar::<f32>().unwrap(), INFO_NCE_REF[0]);
        let b = info_nce(&input(3, 8, 1.), &input(3, 8, 1.5), &input(16, 8, -1.), 0.2).unwrap();
        close(b.to_scalar::<f32>().unwrap(), INFO_NCE_REF[1]);
    }

    #[test]
    fn identical_views_give_lower_loss_and_gradients_flow() {
        let z0 = Var::from_tensor(&input(6, 4, 0.)).unwrap();
        let same = nt_xent(z0.as_tensor(), &input(6, 4, 0.), 0.5).unwrap();
        let other = nt_xent(z0.as_tensor(), &input(6, 4, 2.5), 0.5).unwrap();
        assert!(same.to_scalar::<f32>().unwrap() < other.to_scalar::<f32>().unwrap());
        let g = other.backward().unwrap();
        let grad = g.get(z0.as_tensor()).expect("gradient for z0");
        let total = grad
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(total.is_finite() && total > 0.0);
    }

    #[test]
    fn bad_settings_are_errors() {
        let x = input(4, 3, 0.);
        assert!(nt_xent(&x, &x, 0.0).is_err());
        assert!(nt_xent(&x, &x, -1.0).is_err());
        assert!(nt_xent(&input(1, 3, 0.), &input(1, 3, 0.), 0.5).is_err());
        assert!(nt_xent(&x, &input(4, 5, 0.), 0.5).is_err());
        assert!(info_nce(&x, &x, &input(5, 4, 0.), 0.5).is_err());
    }
}
