//! Noise-contrastive estimation against a memory bank, as in NPID (Wu et al. 2018,
//! "Unsupervised Feature Learning via Non-Parametric Instance Discrimination", eq. 4–7).
use crate::loss::positive_first_logits;
use candle_core::{bail, DType, Result, Tensor};

fn check_data_size(n_data: usize) -> Result<()> {
    if n_data == 0 {
        bail!("nce: the dataset size must be at least 1")
    }
    Ok(())
}

/// NPID's estimate of the normaliser, `ln Z` with `Z ≈ N · mean(exp(s))` over every
/// logit `s` of the batch (positive and negatives). NPID computes it once, on the first
/// batch, and keeps it fixed.
///
/// # Shapes
/// `q`, `k`: (B, D); `negatives`: (K, D).
///
/// # Errors
/// As [`nce`].
pub fn nce_log_normaliser(
    q: &Tensor,
    k: &Tensor,
    negatives: &Tensor,
    temperature: f64,
    n_data: usize,
) -> Result<f64> {
    check_data_size(n_data)?;
    let logits = positive_first_logits("nce", q, k, negatives, temperature)?.detach();
    let values = logits
        .flatten_all()?
        .to_dtype(DType::F64)?
        .to_vec1::<f64>()?;
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = values.iter().map(|s| (s - max).exp()).sum();
    Ok(max + (sum / values.len() as f64).ln() + (n_data as f64).ln())
}

/// The NCE loss of NPID: with `P(i|v) = exp(s_i − ln Z)` and noise `K/N`,
/// `h = P / (P + K/N)`, the loss is `−[ln h(pos) + Σ_neg ln(1 − h(neg))]`, averaged
/// over the batch (the sum over negatives is not averaged, as in NPID's code).
/// `q`, `k` and `negatives` are L2-normalised first; `s = q·x / τ`.
///
/// # Shapes
/// `q`, `k` (the positives, e.g. the bank slots of the batch): (B, D);
/// `negatives`: (K, D) → scalar.
///
/// # Errors
/// If the shapes disagree, the temperature is not positive, `n_data` is 0 or `log_z`
/// is not finite.
pub fn nce(
    q: &Tensor,
    k: &Tensor,
    negatives: &Tensor,
    temperature: f64,
    log_z: f64,
    n_data: usize,
) -> Result<Tensor> {
    check_data_size(n_data)?;
    if !log_z.is_finite() {
        bail!("nce: the log normaliser must be finite, got {log_z}")
    }
    let log_p = (positive_first_logits("nce", q, k, negatives, temperature)? - log_z)?;
    let noise = negatives.dim(0)? as f64 / n_data as f64;
    // ln(P + noise) appears in both terms: −ln h = ln(P + noise) − ln P and
    // −ln(1 − h) = ln(P + noise) − ln noise.
    let log_p_plus_noise = (log_p.exp()? + noise)?.log()?;
    let (b, cols) = log_p.dims2()?;
    let positive = (log_p_plus_noise.narrow(1, 0, 1)? - log_p.narrow(1, 0, 1)?)?.sum_all()?;
    let negative = (log_p_plus_noise.narrow(1, 1, cols - 1)? - noise.ln())?.sum_all()?;
    (positive + negative)? / b as f64
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::loss::test_input as input;
    use candle_core::Var;

    // Reference: lemniscate.pytorch's NCEAverage (Z = N·mean(exp(s)) on the first batch)
    // and NCECriterion, in float64, with the inputs of loss.rs's tests:
    //
    // def logits(q,k,neg,t):
    //     q,k,neg=(F.normalize(x,dim=1) for x in (q,k,neg))
    //     return torch.cat([(q*k).sum(1,keepdim=True), q@neg.T],1)/t
    // def log_z(q,k,neg,t,n): return math.log(torch.exp(logits(q,k,neg,t).double()).mean().item()*n)
    // def nce(q,k,neg,t,lz,n):
    //     x=torch.exp(logits(q,k,neg,t).double()-lz); K=neg.shape[0]; Pn=1.0/n
    //     lnPmt=torch.log(x[:,0]/(x[:,0]+K*Pn)); lnPon=torch.log(K*Pn/(x[:,1:]+K*Pn))
    //     return (-(lnPmt.sum()+lnPon.sum())/q.shape[0]).item()
    // (inp(4,5,0.), inp(4,5,0.2), inp(7,5,2.), τ 0.07, N 100) → ln Z 17.226575, loss 1.602984
    // (inp(3,8,1.), inp(3,8,1.5), inp(16,8,-1.), τ 0.2, N 60000) → ln Z 14.495665, loss 2.851272
    #[test]
    fn matches_npid_reference() {
        let cases = [
            (
                (4, 5, 0.0, 0.2, 7, 2.0),
                0.07,
                100,
                17.226_575_409_921_153,
                1.602_984_2,
            ),
            (
                (3, 8, 1.0, 1.5, 16, -1.0),
                0.2,
                60000,
                14.495_664_734_006_144,
                2.851_272,
            ),
        ];
        for ((n, d, pq, pk, k, pn), t, data, z_ref, loss_ref) in cases {
            let (q, key, neg) = (input(n, d, pq), input(n, d, pk), input(k, d, pn));
            let log_z = nce_log_normaliser(&q, &key, &neg, t, data).unwrap();
            assert!((log_z - z_ref).abs() < 1e-5, "ln Z {log_z} vs {z_ref}");
            let loss = nce(&q, &key, &neg, t, z_ref, data)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(
                ((loss - loss_ref) / loss_ref).abs() < 1e-4,
                "loss {loss} vs {loss_ref}"
            );
        }
    }

    #[test]
    fn gradients_reach_the_query_and_bad_input_is_an_error() {
        let q = Var::from_tensor(&input(4, 5, 0.)).unwrap();
        let (k, neg) = (input(4, 5, 0.2), input(7, 5, 2.));
        let loss = nce(q.as_tensor(), &k, &neg, 0.07, 17.0, 100).unwrap();
        let g = loss.backward().unwrap();
        let total = g
            .get(q.as_tensor())
            .unwrap()
            .abs()
            .unwrap()
            .sum_all()
            .unwrap();
        let total = total.to_scalar::<f32>().unwrap();
        assert!(total.is_finite() && total > 0.0);
        assert!(nce(q.as_tensor(), &k, &neg, 0.07, f64::NAN, 100).is_err());
        assert!(nce(q.as_tensor(), &k, &neg, 0.07, 17.0, 0).is_err());
        assert!(nce(q.as_tensor(), &k, &neg, 0.0, 17.0, 100).is_err());
        assert!(nce(q.as_tensor(), &input(3, 5, 0.), &neg, 0.07, 17.0, 100).is_err());
    }
}
