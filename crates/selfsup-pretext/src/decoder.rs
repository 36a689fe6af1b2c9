//! The decoder and the reconstruction loss of inpainting (Pathak et al. 2016,
//! "Context Encoders: Feature Learning by Inpainting").
use candle_core::{DType, Result, Tensor};
use candle_nn::{BatchNorm, BatchNormConfig, Linear, Module, ModuleT, VarBuilder};
use selfsup_encoders::torch_default_init;

/// Upsampling stages: each transposed convolution doubles the side.
pub const DECODER_STAGES: usize = 3;
/// Kernel of the transposed convolutions (4, stride 2, padding 1: DCGAN's up-convolution).
const KERNEL: usize = 4;

/// PyTorch's `BatchNorm2d` defaults.
const BN: BatchNormConfig = BatchNormConfig {
    eps: 1e-5,
    remove_mean: true,
    affine: true,
    momentum: 0.1,
};

/// Maps the encoder's pooled feature vector back to an image, as the context
/// encoder's decoder does: a fully connected layer to a `4w x s0 x s0` map
/// (`s0 = ⌈size / 8⌉`; Pathak et al. use a channel-wise fully connected layer),
/// then [`DECODER_STAGES`] up-convolutions (`conv_transpose2d`, kernel 4, stride 2,
/// padding 1) to `2w`, `w` and finally the image channels, with batch norm and ReLU
/// after every layer but the last, and a centre crop to `size x size`. The last
/// layer has no activation: it predicts normalised pixels.
///
/// candle's `conv_transpose2d` backward ignores `output_padding`, so none is used;
/// its upsampling ops have broken backward passes and are not used at all.
///
/// Variables: `fc.weight`; `bn0`..`bn2` (`weight`, `bias`, `running_mean`,
/// `running_var`); `up1.weight`, `up2.weight`, `up3.weight`, `up3.bias`. Layers
/// followed by batch norm have no bias. All start from PyTorch's default init.
#[derive(Clone, Debug)]
pub struct Decoder {
    fc: Linear,
    norms: Vec<BatchNorm>,
    ups: Vec<Tensor>,
    out_bias: Tensor,
    start_channels: usize,
    start_side: usize,
    size: usize,
}

impl Decoder {
    /// A decoder from `feature_dim` features to `channels x size x size` images,
    /// `width` setting its channel counts (`4w`, `2w`, `w`).
    ///
    /// # Errors
    /// If a dimension is zero or `vb` cannot provide a variable.
    pub fn new(
        feature_dim: usize,
        channels: usize,
        size: usize,
        width: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        if feature_dim == 0 || channels == 0 || size == 0 || width == 0 {
            candle_core::bail!(
                "Decoder needs positive feature_dim ({feature_dim}), channels ({channels}), \
                 size ({size}) and width ({width})"
            )
        }
        let start_side = size.div_ceil(1 << DECODER_STAGES);
        let widths = [4 * width, 2 * width, width, channels];
        let start = widths[0] * start_side * start_side;
        let fc_weight = vb.get_with_hints(
            (start, feature_dim),
            "fc.weight",
            torch_default_init(feature_dim),
        )?;
        let norms = widths[..DECODER_STAGES]
            .iter()
            .enumerate()
            .map(|(i, &c)| candle_nn::batch_norm(c, BN, vb.pp(format!("bn{i}"))))
            .collect::<Result<Vec<_>>>()?;
        let ups = widths
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                let init = torch_default_init(w[1] * KERNEL * KERNEL);
                let name = format!("up{}.weight", i + 1);
                vb.get_with_hints((w[0], w[1], KERNEL, KERNEL), &name, init)
            })
            .collect::<Result<Vec<_>>>()?;
        let out_bias = vb.get_with_hints(
            channels,
            &format!("up{DECODER_STAGES}.bias"),
            torch_default_init(width * KERNEL * KERNEL),
        )?;
        Ok(Self {
            fc: Linear::new(fc_weight, None),
            norms,
            ups,
            out_bias,
            start_channels: widths[0],
            start_side,
            size,
        })
    }
}

impl ModuleT for Decoder {
    /// In training mode batch norm uses the batch statistics and updates its
    /// running statistics.
    ///
    /// # Shapes
    /// `(N, feature_dim)` to `(N, channels, size, size)`.
    fn forward_t(&self, features: &Tensor, train: bool) -> Result<Tensor> {
        let n = features.dim(0)?;
        let s = self.start_side;
        let mut h = self
            .fc
            .forward(features)?
            .reshape((n, self.start_channels, s, s))?;
        for (i, up) in self.ups.iter().enumerate() {
            if let Some(norm) = self.norms.get(i) {
                h = norm.forward_t(&h, train)?.relu()?;
            }
            h = h.conv_transpose2d(up, 1, 0, 2, 1)?;
        }
        let h = h.broadcast_add(&self.out_bias.reshape((1, (), 1, 1))?)?;
        let offset = (h.dim(2)? - self.size) / 2;
        h.narrow(2, offset, self.size)?.narrow(3, offset, self.size)
    }
}

/// The context encoder's reconstruction loss (Pathak et al. 2016, eq. 1 with the
/// overlap weighting of their code): a weighted mean of squared errors, with weight
/// 1 on hidden pixels (`mask`), `overlap_weight` on the overlap border (`border`)
/// and 0 elsewhere, normalised by the total weight, so that it is the mean squared
/// error per weighted element:
/// `Σ w (pred − target)² / Σ w` over all elements, `w = mask + overlap_weight · border`.
///
/// # Shapes
/// `pred` and `target` `(N, C, H, W)`; `mask` and `border` `(N, C, H, W)` or
/// `(N, 1, H, W)` (shared by the channels), 0 or 1. The loss is a scalar.
///
/// # Errors
/// If the shapes disagree or the total weight is zero (nothing to reconstruct).
pub fn inpainting_loss(
    pred: &Tensor,
    target: &Tensor,
    mask: &Tensor,
    border: &Tensor,
    overlap_weight: f64,
) -> Result<Tensor> {
    let weight = (mask + (border * overlap_weight)?)?
        .broadcast_as(pred.shape())?
        .to_dtype(pred.dtype())?;
    let total = weight.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
    if total <= 0.0 {
        candle_core::bail!("inpainting_loss: the mask and its border have zero total weight")
    }
    let sq = (pred - target)?.sqr()?;
    (sq * weight)?.sum_all()? / total
}

/// The summed squared error over hidden elements and their count: the numerator and
/// denominator of the masked-region MSE that inpainting reports on held-out images.
///
/// # Shapes
/// `pred` and `target` `(N, C, H, W)`; `mask` `(N, C, H, W)` or `(N, 1, H, W)`, 0 or 1.
///
/// # Errors
/// If the shapes disagree.
pub fn masked_squared_error(pred: &Tensor, target: &Tensor, mask: &Tensor) -> Result<(f64, usize)> {
    let mask = mask.broadcast_as(pred.shape())?.to_dtype(DType::F64)?;
    let sq = (pred - target)?.sqr()?.to_dtype(DType::F64)?;
    let sum = (sq * &mask)?.sum_all()?.to_scalar::<f64>()?;
    let count = mask.sum_all()?.to_scalar::<f64>()?.round() as usize;
    Ok((sum, count))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use candle_core::{Device, Var};
    use candle_nn::VarMap;

    #[test]
    fn loss_and_masked_error_match_hand_values() {
        let dev = Device::Cpu;
        // Two channels, one row of two pixels; pixel 0 hidden, pixel 1 on the border.
        let pred = Tensor::new(&[[[[1f32, 2.0]], [[3.0, 4.0]]]], &dev).unwrap();
        let target = Tensor::new(&[[[[0f32, 0.0]], [[1.0, 1.0]]]], &dev).unwrap();
        let mask = Tensor::new(&[[[[1f32, 0.0]]]], &dev).unwrap();
        let border = Tensor::new(&[[[[0f32, 1.0]]]], &dev).unwrap();
        // Squared errors: channel 0: 1, 4; channel 1: 4, 9.
        // Weighted: 1·1 + 10·4 + 1·4 + 10·9 = 135 over weight 1 + 10 + 1 + 10 = 22.
        let loss = inpainting_loss(&pred, &target, &mask, &border, 10.0).unwrap();
        assert!((loss.to_scalar::<f32>().unwrap() - 135.0 / 22.0).abs() < 1e-5);
        let plain = inpainting_loss(&pred, &target, &mask, &border, 0.0).unwrap();
        assert!((plain.to_scalar::<f32>().unwrap() - 2.5).abs() < 1e-6);
        assert_eq!(
            masked_squared_error(&pred, &target, &mask).unwrap(),
            (5.0, 2)
        );
        let none = mask.zeros_like().unwrap();
        assert!(inpainting_loss(&pred, &target, &none, &none, 10.0).is_err());
    }

    /// Deterministic values in [-0.5, 0.5) (candle's CPU generator cannot be seeded).
    fn fill(var: &Var, seed: u64) {
        let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let n = var.elem_count();
        let vals: Vec<f64> = (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 11) as f64 / (1u64 << 53) as f64 - 0.5
            })
            .collect();
        let t = Tensor::from_vec(vals, var.shape(), var.device()).unwrap();
        var.set(&t).unwrap();
    }

    #[test]
    fn output_shape_follows_the_image_size() {
        let dev = Device::Cpu;
        for (channels, size) in [(1, 28), (3, 32), (3, 9)] {
            let vm = VarMap::new();
            let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
            let dec = Decoder::new(6, channels, size, 2, vb).unwrap();
            let x = Tensor::zeros((3, 6), DType::F32, &dev).unwrap();
            let y = dec.forward_t(&x, false).unwrap();
            assert_eq!(y.dims(), &[3, channels, size, size]);
        }
        let vb = VarBuilder::from_varmap(&VarMap::new(), DType::F32, &dev);
        assert!(Decoder::new(6, 1, 0, 2, vb).is_err());
    }

    /// Every variable's gradient through linear, batch norm, `conv_transpose2d`, the
    /// crop and the weighted loss matches a central finite difference.
    #[test]
    fn gradients_match_finite_differences() {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F64, &dev);
        let (n, dim, channels, size) = (3, 5, 2, 13);
        let dec = Decoder::new(dim, channels, size, 2, vb).unwrap();
        let vars: Vec<(String, Var)> = {
            let data = vm.data().lock().unwrap();
            let mut v: Vec<_> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v
        };
        for (i, (name, var)) in vars.iter().enumerate() {
            if !name.contains("running") {
                fill(var, i as u64 + 1);
            }
        }
        let rand = |shape: &[usize], seed: u64| {
            let v = Var::zeros(shape, DType::F64, &dev).unwrap();
            fill(&v, seed);
            v.as_tensor().detach()
        };
        let x = rand(&[n, dim], 100);
        let target = rand(&[n, channels, size, size], 101);
        let mut mask = vec![0f64; n * size * size];
        let mut border = vec![0f64; n * size * size];
        for (i, (m, b)) in mask.iter_mut().zip(border.iter_mut()).enumerate() {
            match i % 7 {
                0 | 3 => *m = 1.0,
                5 => *b = 1.0,
                _ => {}
            }
        }
        let mask = Tensor::from_vec(mask, (n, 1, size, size), &dev).unwrap();
        let border = Tensor::from_vec(border, (n, 1, size, size), &dev).unwrap();
        let loss = || {
            let y = dec.forward_t(&x, true).unwrap();
            inpainting_loss(&y, &target, &mask, &border, 10.0).unwrap()
        };
        let grads = loss().backward().unwrap();
        let eps = 1e-6;
        for (name, var) in vars.iter().filter(|(k, _)| !k.contains("running")) {
            let g = grads.get(var.as_tensor()).unwrap();
            let g = g.flatten_all().unwrap().to_vec1::<f64>().unwrap();
            let base = var
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f64>()
                .unwrap();
            for idx in [0, base.len() / 2, base.len() - 1] {
                let at = |delta: f64| {
                    let mut v = base.clone();
                    v[idx] += delta;
                    var.set(&Tensor::from_vec(v, var.shape(), &dev).unwrap())
                        .unwrap();
                    loss().to_scalar::<f64>().unwrap()
                };
                let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
                var.set(&Tensor::from_vec(base.clone(), var.shape(), &dev).unwrap())
                    .unwrap();
                let diff = (numeric - g[idx]).abs();
                assert!(
                    diff <= 1e-6 + 1e-4 * numeric.abs(),
                    "{name}[{idx}]: autograd {} vs finite difference {numeric}",
                    g[idx]
                );
            }
            assert!(g.iter().any(|v| *v != 0.0), "{name}: zero gradient");
        }
    }
}
