//! CPC's InfoNCE: which latents a prediction is scored against, and which one is right.
use crate::l2_normalize;
use candle_core::{bail, DType, Result, Tensor, D};

/// The InfoNCE scores of one step's predictions and, for each, the index of its
/// positive among the candidates.
#[derive(Clone, Debug)]
pub struct CpcLogits {
    /// `(M, K)`: row `m = (b·(R-k) + i)·C + j` holds the scores of the prediction
    /// `ẑ_{i+k,j}` made from the context at `(b, i, j)` against the `K = group·R·C`
    /// latents of its group of images, candidate `(b', u, v)` (`b'` counted within the
    /// group) in column `(b'·R + u)·C + v`.
    pub logits: Tensor,
    /// `(M,)`, `u32`: the column of the latent at `(b, i + k, j)`.
    pub targets: Tensor,
}

/// The largest group size `≤ max` that divides a batch of `n`, so that the batch falls
/// into equal groups of candidates (1 when `n` is prime and above `max`).
pub fn candidate_group(n: usize, max: usize) -> usize {
    (1..=max.clamp(1, n.max(1)))
        .rev()
        .find(|g| n % g == 0)
        .unwrap_or(1)
}

/// Scores the step-`k` predictions against candidate latents, CPC's InfoNCE
/// (van den Oord et al. 2018, eq. 4; Hénaff et al. 2020, eq. 5). The batch is cut into
/// consecutive groups of `group` images; a prediction's candidates are all latents of
/// its group: the positive, the other patches of its own image and every patch of the
/// other images. Scores are dot products (the paper's bilinear `z·W_k c`) when
/// `temperature` is `None`, and cosine similarities divided by it otherwise.
///
/// # Shapes
/// `latents`: `(N, R, C, D)`; `prediction`: `(N, R - k, C, D)`; see [`CpcLogits`].
///
/// # Errors
/// If the shapes disagree, `k` is not in `1..R`, `group` does not divide N, or the
/// temperature is not positive.
pub fn cpc_logits(
    latents: &Tensor,
    prediction: &Tensor,
    k: usize,
    group: usize,
    temperature: Option<f64>,
) -> Result<CpcLogits> {
    let (n, r, c, d) = latents.dims4()?;
    if k == 0 || k >= r || prediction.dims() != [n, r - k, c, d] {
        bail!(
            "cpc: step {k} predictions of latents {:?} must be {:?}, got {:?}",
            latents.dims(),
            (n, r.saturating_sub(k), c, d),
            prediction.dims()
        )
    }
    if group == 0 || n % group != 0 {
        bail!("cpc: groups of {group} images do not divide a batch of {n}")
    }
    let (z, p) = match temperature {
        None => (latents.clone(), prediction.clone()),
        Some(t) if t.is_finite() && t > 0.0 => {
            (normalize_rows(latents)?, (normalize_rows(prediction)? / t)?)
        }
        Some(t) => bail!("cpc: temperature must be a positive number, got {t}"),
    };
    let groups = n / group;
    let candidates = z.reshape((groups, group * r * c, d))?;
    let queries = p.reshape((groups, group * (r - k) * c, d))?;
    let logits = queries
        .matmul(&candidates.t()?)?
        .reshape((n * (r - k) * c, group * r * c))?;
    let targets: Vec<u32> = (0..n)
        .flat_map(|b| (0..r - k).flat_map(move |i| (0..c).map(move |j| (b, i, j))))
        .map(|(b, i, j)| (((b % group) * r + i + k) * c + j) as u32)
        .collect();
    let m = targets.len();
    Ok(CpcLogits {
        logits,
        targets: Tensor::from_vec(targets, m, latents.device())?,
    })
}

/// CPC's loss: for each step k the mean cross-entropy of [`cpc_logits`] (the InfoNCE
/// loss), averaged over the steps.
///
/// # Shapes
/// `latents`: `(N, R, C, D)`; `predictions[k - 1]`: `(N, R - k, C, D)` → scalar.
///
/// # Errors
/// As [`cpc_logits`], or if there are no predictions.
pub fn cpc_loss(
    latents: &Tensor,
    predictions: &[Tensor],
    group: usize,
    temperature: Option<f64>,
) -> Result<Tensor> {
    if predictions.is_empty() {
        bail!("cpc: no predictions to score")
    }
    let mut total: Option<Tensor> = None;
    for (k0, p) in predictions.iter().enumerate() {
        let CpcLogits { logits, targets } = cpc_logits(latents, p, k0 + 1, group, temperature)?;
        let positives = logits.gather(&targets.unsqueeze(1)?, 1)?.squeeze(1)?;
        let step = (logsumexp(&logits)? - positives)?.mean_all()?;
        total = Some(match total {
            None => step,
            Some(t) => (t + step)?,
        });
    }
    match total {
        Some(t) => t / predictions.len() as f64,
        None => bail!("cpc: no predictions to score"),
    }
}

/// How many of the predictions of all steps score their positive highest among the
/// candidates of [`cpc_logits`], and how many predictions there are.
///
/// # Errors
/// As [`cpc_logits`].
pub fn cpc_top1(
    latents: &Tensor,
    predictions: &[Tensor],
    group: usize,
    temperature: Option<f64>,
) -> Result<(usize, usize)> {
    let (mut correct, mut count) = (0, 0);
    for (k0, p) in predictions.iter().enumerate() {
        let CpcLogits { logits, targets } = cpc_logits(latents, p, k0 + 1, group, temperature)?;
        let hits = logits.argmax(1)?.eq(&targets)?.to_dtype(DType::U32)?;
        correct += hits.sum_all()?.to_scalar::<u32>()? as usize;
        count += targets.elem_count();
    }
    Ok((correct, count))
}

/// L2-normalises the last dimension.
fn normalize_rows(x: &Tensor) -> Result<Tensor> {
    let d = x.dim(D::Minus1)?;
    l2_normalize(&x.reshape(((), d))?)?.reshape(x.shape())
}

/// Row-wise `logsumexp`, stabilised by the (detached) row maximum.
fn logsumexp(x: &Tensor) -> Result<Tensor> {
    let max = x.max_keepdim(D::Minus1)?.detach();
    let sum = x.broadcast_sub(&max)?.exp()?.sum_keepdim(D::Minus1)?;
    (sum.log()? + max)?.squeeze(D::Minus1)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::cpc::tests::input;
    use candle_core::{IndexOp, Var};

    /// For every prediction (image b, row i, column j, step k) the target must be the
    /// column of the latent at (b, i + k, j), and that column's score must be the
    /// prediction's product with exactly that latent.
    #[test]
    fn targets_point_at_the_latent_k_rows_below() {
        let (n, r, c, d) = (4, 4, 3, 5);
        let z = input(&[n, r, c, d], 1);
        for group in [1, 2, 4] {
            for k in 1..r {
                let p = input(&[n, r - k, c, d], 10 + k as u64);
                let out = cpc_logits(&z, &p, k, group, None).unwrap();
                assert_eq!(out.logits.dims(), &[n * (r - k) * c, group * r * c]);
                let targets = out.targets.to_vec1::<u32>().unwrap();
                let logits = out.logits.to_vec2::<f32>().unwrap();
                let mut m = 0;
                for b in 0..n {
                    for i in 0..r - k {
                        for j in 0..c {
                            let t = targets[m] as usize;
                            let (bg, rest) = (t / (r * c), t % (r * c));
                            assert_eq!(b - b % group + bg, b, "image of target {m}");
                            assert_eq!((rest / c, rest % c), (i + k, j), "cell of target {m}");
                            let want = (p.i((b, i, j)).unwrap() * z.i((b, i + k, j)).unwrap())
                                .unwrap()
                                .sum_all()
                                .unwrap()
                                .to_scalar::<f32>()
                                .unwrap();
                            assert!((logits[m][t] - want).abs() < 1e-5, "score of target {m}");
                            m += 1;
                        }
                    }
                }
                assert_eq!(m, targets.len());
            }
        }
    }

    /// Candidates are exactly the latents of the prediction's own group of images.
    #[test]
    fn candidates_are_the_latents_of_the_group() {
        let (n, r, c, d) = (4, 3, 2, 3);
        let z = input(&[n, r, c, d], 2);
        let p = input(&[n, r - 1, c, d], 3);
        let out = cpc_logits(&z, &p, 1, 2, None).unwrap();
        let logits = out.logits.to_vec2::<f32>().unwrap();
        // Prediction (b = 3, i = 1, j = 0) is row (3·2 + 1)·2 = 14; its group holds
        // images 2 and 3, so column (1·3 + 0)·2 + 1 is the latent (3, 0, 1).
        let want = (p.i((3, 1, 0)).unwrap() * z.i((3, 0, 1)).unwrap())
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((logits[14][7] - want).abs() < 1e-5);
    }

    #[test]
    fn a_perfect_predictor_has_near_zero_loss_and_full_top1() {
        let (n, r, c, d) = (3, 4, 2, 64);
        let z = input(&[n, r, c, d], 1);
        let perfect: Vec<Tensor> = (1..=2)
            .map(|k| (z.narrow(1, k, r - k).unwrap() * 30.0).unwrap())
            .collect();
        let loss = cpc_loss(&z, &perfect, 3, None).unwrap();
        assert!(loss.to_scalar::<f32>().unwrap() < 1e-3, "{loss}");
        let cosine = cpc_loss(&z, &perfect, 3, Some(0.02)).unwrap();
        assert!(cosine.to_scalar::<f32>().unwrap() < 1e-3, "{cosine}");
        assert_eq!(
            cpc_top1(&z, &perfect, 3, None).unwrap(),
            (n * (3 + 2) * c, n * 5 * c)
        );
        // Predicting the row one too far is wrong everywhere.
        let shifted: Vec<Tensor> = vec![z.narrow(1, 0, r - 1).unwrap()];
        let (hits, count) = cpc_top1(&z, &shifted, 1, Some(0.1)).unwrap();
        assert_eq!((hits, count), (0, n * 3 * c));
        let wrong = cpc_loss(&z, &shifted, 1, Some(0.1)).unwrap();
        assert!(wrong.to_scalar::<f32>().unwrap() > 1.0);
    }

    #[test]
    fn gradients_reach_latents_and_predictions() {
        let z = Var::from_tensor(&input(&[2, 3, 2, 4], 4)).unwrap();
        let p = Var::from_tensor(&input(&[2, 2, 2, 4], 5)).unwrap();
        let loss = cpc_loss(z.as_tensor(), &[p.as_tensor().clone()], 2, Some(0.5)).unwrap();
        let grads = loss.backward().unwrap();
        for v in [&z, &p] {
            let g = grads.get(v.as_tensor()).expect("gradient");
            let s = g
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(s.is_finite() && s > 0.0);
        }
    }

    #[test]
    fn bad_inputs_are_errors_and_groups_divide_the_batch() {
        let z = input(&[4, 3, 2, 4], 6);
        let p = input(&[4, 2, 2, 4], 7);
        assert!(cpc_logits(&z, &p, 2, 1, None).is_err());
        assert!(cpc_logits(&z, &p, 1, 3, None).is_err());
        assert!(cpc_logits(&z, &p, 1, 2, Some(0.0)).is_err());
        assert!(cpc_loss(&z, &[], 1, None).is_err());
        assert_eq!(candidate_group(256, 16), 16);
        assert_eq!(candidate_group(12, 8), 6);
        assert_eq!(candidate_group(7, 4), 1);
        assert_eq!(candidate_group(3, 16), 3);
    }
}
