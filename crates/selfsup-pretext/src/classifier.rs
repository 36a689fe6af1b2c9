//! The classifier head shared by the classification pretext tasks.
use candle_core::{DType, Result, Tensor, D};
use candle_nn::{Linear, Module, VarBuilder};
use selfsup_encoders::torch_linear;

/// Linear, ReLU, Linear: the MLP that maps (possibly concatenated) encoder
/// features to pretext-class logits. Doersch et al. 2015 and Noroozi & Favaro 2016
/// both put fully connected layers after the shared trunk; with `hidden = 0` it
/// is a single linear layer (Gidaris et al. 2018 report that a linear
/// rotation classifier on the last block suffices).
///
/// Variables: `fc1.{weight,bias}` and, with a hidden layer, `fc2.{weight,bias}`;
/// both start from PyTorch's `nn.Linear` init, U(±1/√in).
#[derive(Clone, Debug)]
pub struct MlpHead {
    layers: Vec<Linear>,
}

impl MlpHead {
    /// A head from `input_dim` through `hidden` (0 for none) to `classes` logits.
    ///
    /// # Errors
    /// If a dimension is zero or `vb` cannot provide a variable.
    pub fn new(input_dim: usize, hidden: usize, classes: usize, vb: VarBuilder) -> Result<Self> {
        if input_dim == 0 || classes == 0 {
            candle_core::bail!(
                "MlpHead needs positive input_dim ({input_dim}) and classes ({classes})"
            )
        }
        let dims = if hidden == 0 {
            vec![input_dim, classes]
        } else {
            vec![input_dim, hidden, classes]
        };
        let layers = dims
            .windows(2)
            .enumerate()
            .map(|(i, d)| torch_linear(d[0], d[1], vb.pp(format!("fc{}", i + 1))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers })
    }
}

impl Module for MlpHead {
    /// # Shapes
    /// `(N, input_dim)` to `(N, classes)`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            if i > 0 {
                h = h.relu()?;
            }
            h = layer.forward(&h)?;
        }
        Ok(h)
    }
}

/// The loss and the top-1 count of one batch of pretext predictions.
#[derive(Clone, Debug)]
pub struct Classified {
    /// Mean cross-entropy, a scalar.
    pub loss: Tensor,
    /// Rows whose arg-max logit is the target.
    pub correct: usize,
    /// Rows scored.
    pub total: usize,
}

/// Cross-entropy of `logits` against `targets` and the number of correct top-1 predictions.
///
/// # Shapes
/// `logits` `(N, K)`, `targets` `(N,)` with values in `0..K` (any integer dtype).
///
/// # Errors
/// If the shapes disagree or a target is out of range.
pub fn classify(logits: &Tensor, targets: &Tensor) -> Result<Classified> {
    let (n, k) = logits.dims2()?;
    let targets = targets.to_dtype(DType::U32)?.flatten_all()?;
    if targets.dim(0)? != n {
        candle_core::bail!("{n} rows of logits but {} targets", targets.dim(0)?)
    }
    let host = targets.to_vec1::<u32>()?;
    if let Some(bad) = host.iter().find(|&&t| t as usize >= k) {
        candle_core::bail!("target {bad} is out of range for {k} classes")
    }
    let loss = candle_nn::loss::cross_entropy(logits, &targets)?;
    let predicted = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
    let correct = predicted.iter().zip(&host).filter(|(p, t)| p == t).count();
    Ok(Classified {
        loss,
        correct,
        total: n,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use candle_core::Device;
    use candle_nn::VarMap;

    #[test]
    fn loss_and_count_match_hand_values() {
        let dev = Device::Cpu;
        let logits = Tensor::new(&[[2f32, 0.0, 0.0], [0.0, 0.0, 1.0]], &dev).unwrap();
        let targets = Tensor::new(&[0u32, 1], &dev).unwrap();
        let c = classify(&logits, &targets).unwrap();
        // Row 0: -log(e²/(e²+2)); row 1: -log(1/(2+e)).
        let e = std::f64::consts::E;
        let expected = (-(e * e / (e * e + 2.0)).ln() + (2.0 + e).ln()) / 2.0;
        let got = f64::from(c.loss.to_scalar::<f32>().unwrap());
        assert!((got - expected).abs() < 1e-5, "{got} vs {expected}");
        assert_eq!((c.correct, c.total), (1, 2));
        let out_of_range = Tensor::new(&[0u32, 3], &dev).unwrap();
        assert!(classify(&logits, &out_of_range).is_err());
    }

    #[test]
    fn head_shapes_and_gradients() {
        let dev = Device::Cpu;
        for hidden in [0, 16] {
            let vm = VarMap::new();
            let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
            let head = MlpHead::new(8, hidden, 4, vb).unwrap();
            let x = Tensor::randn(0f32, 1.0, (5, 8), &dev).unwrap();
            let y = head.forward(&x).unwrap();
            assert_eq!(y.dims(), &[5, 4]);
            let t = Tensor::new(&[0u32, 1, 2, 3, 0], &dev).unwrap();
            let grads = classify(&y, &t).unwrap().loss.backward().unwrap();
            for var in vm.all_vars() {
                let g = grads.get(&var).unwrap().abs().unwrap().sum_all().unwrap();
                assert!(g.to_scalar::<f32>().unwrap() > 0.0);
            }
        }
        assert!(MlpHead::new(
            0,
            4,
            4,
            VarBuilder::from_varmap(&VarMap::new(), DType::F32, &dev)
        )
        .is_err());
    }
}
