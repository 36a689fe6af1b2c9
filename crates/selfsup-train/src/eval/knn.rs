use super::Features;
use crate::Result;
use candle_core::Device;
use rayon::prelude::*;

/// Weighted kNN top-1 accuracy in percent (Wu et al. 2018, "Unsupervised Feature
/// Learning via Non-Parametric Instance Discrimination"): cosine similarity, the `k`
/// nearest training features vote for their class with weight `exp(sim / t)`.
///
/// # Errors
/// On tensor errors.
#[allow(clippy::too_many_arguments)]
pub fn knn_top1(
    train: &Features,
    train_y: &[u32],
    test: &Features,
    test_y: &[u32],
    classes: usize,
    k: usize,
    t: f32,
    device: &Device,
) -> Result<f64> {
    const CHUNK: usize = 256;
    let normalize = |f: &Features| selfsup_contrastive::l2_normalize(&f.tensor(device)?);
    let train_n = normalize(train)?;
    let train_t = train_n.t()?.contiguous()?;
    let test_n = normalize(test)?;
    let k = k.min(train.len()).max(1);
    let mut correct = 0usize;
    for start in (0..test.len()).step_by(CHUNK) {
        let rows = CHUNK.min(test.len() - start);
        let sims: Vec<Vec<f32>> = test_n.narrow(0, start, rows)?.matmul(&train_t)?.to_vec2()?;
        correct += sims
            .par_iter()
            .enumerate()
            .filter(|(i, row)| vote(row, train_y, classes, k, t) == test_y[start + i])
            .count();
    }
    Ok(100.0 * correct as f64 / test.len().max(1) as f64)
}

/// The class with the largest summed weight among the `k` most similar rows.
fn vote(sims: &[f32], labels: &[u32], classes: usize, k: usize, t: f32) -> u32 {
    let mut idx: Vec<usize> = (0..sims.len()).collect();
    idx.select_nth_unstable_by(k - 1, |&a, &b| sims[b].total_cmp(&sims[a]));
    let mut score = vec![0f32; classes.max(1)];
    for &i in &idx[..k] {
        if let Some(s) = score.get_mut(labels[i] as usize) {
            *s += (sims[i] / t).exp();
        }
    }
    (0..score.len())
        .max_by(|&a, &b| score[a].total_cmp(&score[b]))
        .unwrap_or(0) as u32
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn separable_clusters_are_classified_and_votes_weight_by_similarity() {
        // Two clusters around the axes; test points near each axis.
        let train = Features {
            data: vec![1.0, 0.1, 1.0, -0.1, 0.9, 0.0, 0.1, 1.0, -0.1, 1.0, 0.0, 0.8],
            dim: 2,
        };
        let train_y = [0, 0, 0, 1, 1, 1];
        let test = Features {
            data: vec![1.0, 0.2, 0.2, 1.0, 0.7, 0.6],
            dim: 2,
        };
        let acc = knn_top1(&train, &train_y, &test, &[0, 1, 0], 2, 3, 0.1, &Device::Cpu).unwrap();
        assert!((acc - 100.0).abs() < 1e-9, "{acc}");
        let wrong = knn_top1(&train, &train_y, &test, &[1, 0, 1], 2, 3, 0.1, &Device::Cpu).unwrap();
        assert!(wrong.abs() < 1e-9);
        // With k = all, the closest votes still dominate through exp(sim / t).
        assert_eq!(vote(&[0.99, 0.1, 0.1, 0.1], &[0, 1, 1, 1], 2, 4, 0.1), 0);
        assert_eq!(vote(&[0.99, 0.1, 0.1, 0.1], &[0, 1, 1, 1], 2, 4, 100.0), 1);
    }
}
