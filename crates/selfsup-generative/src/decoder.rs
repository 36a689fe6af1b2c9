//! The up-convolution decoder shared by the context encoder (Pathak et al. 2016),
//! the autoencoders, next-frame prediction and the GAN generators (Radford et al.
//! 2016, whose generator it follows).
use candle_core::{Result, Tensor};
use candle_nn::{Linear, Module, ModuleT, VarBuilder};
use selfsup_encoders::{torch_default_init, BatchNorm2d};
use selfsup_kernels::conv_transpose2d;

/// Upsampling stages: each transposed convolution doubles the side.
pub const DECODER_STAGES: usize = 3;
/// Kernel of the transposed convolutions (4, stride 2, padding 1: DCGAN's up-convolution).
const KERNEL: usize = 4;

/// Maps the encoder's pooled feature vector back to an image, as the context
/// encoder's decoder does: a fully connected layer to a `4w x s0 x s0` map
/// (`s0 = ⌈size / 8⌉`; Pathak et al. use a channel-wise fully connected layer),
/// then [`DECODER_STAGES`] up-convolutions (`conv_transpose2d`, kernel 4, stride 2,
/// padding 1) to `2w`, `w` and finally the image channels, with batch norm and ReLU
/// after every layer but the last, and a centre crop to `size x size`. The last
/// layer has no activation: it predicts normalised pixels.
///
/// [`Decoder::with_output_range`] bounds the output instead, DCGAN's `tanh` scaled to
/// each channel's range of valid values, as a generator needs.
///
/// On the CPU the up-convolutions and the batch norm (with its ReLU) run through
/// `selfsup-kernels`. candle's `conv_transpose2d` backward ignores `output_padding`,
/// so none is used; its upsampling ops have broken backward passes and are not used.
///
/// Variables: `fc.weight`; `bn0`..`bn2` (`weight`, `bias`, `running_mean`,
/// `running_var`); `up1.weight`, `up2.weight`, `up3.weight`, `up3.bias`. Layers
/// followed by batch norm have no bias. All start from PyTorch's default init.
#[derive(Clone, Debug)]
pub struct Decoder {
    fc: Linear,
    norms: Vec<BatchNorm2d>,
    ups: Vec<Tensor>,
    out_bias: Tensor,
    start_channels: usize,
    start_side: usize,
    size: usize,
    /// `(lo, hi − lo)`, each `(1, C, 1, 1)`, when the output is bounded.
    range: Option<(Tensor, Tensor)>,
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
            .map(|(i, &c)| Ok(BatchNorm2d::new(c, vb.pp(format!("bn{i}")))?.with_relu()))
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
            range: None,
        })
    }

    /// Bounds channel `c` of the output to `(lo[c], hi[c])` with
    /// `lo + (hi − lo)·(tanh(h) + 1)/2`: DCGAN's `tanh` output layer, for images
    /// normalised per channel (`lo`, `hi` are the normalised values of black and white).
    ///
    /// # Errors
    /// If `lo` and `hi` do not have one value per channel or a range is empty.
    pub fn with_output_range(mut self, lo: &[f32], hi: &[f32]) -> Result<Self> {
        let channels = self.out_bias.dim(0)?;
        if lo.len() != channels || hi.len() != channels || lo.iter().zip(hi).any(|(l, h)| l >= h) {
            candle_core::bail!(
                "Decoder output range needs {channels} increasing (lo, hi) pairs, got {lo:?} and {hi:?}"
            )
        }
        let span: Vec<f32> = lo.iter().zip(hi).map(|(l, h)| h - l).collect();
        let (dtype, device) = (self.out_bias.dtype(), self.out_bias.device());
        let plane = |v: &[f32]| {
            Tensor::new(v, device)?
                .to_dtype(dtype)?
                .reshape((1, (), 1, 1))
        };
        self.range = Some((plane(lo)?, plane(&span)?));
        Ok(self)
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
                h = norm.forward_t(&h, train)?;
            }
            h = conv_transpose2d(&h, up, 2, 1)?;
        }
        let h = h.broadcast_add(&self.out_bias.reshape((1, (), 1, 1))?)?;
        let offset = (h.dim(2)? - self.size) / 2;
        let h = h
            .narrow(2, offset, self.size)?
            .narrow(3, offset, self.size)?;
        match &self.range {
            None => Ok(h),
            Some((lo, span)) => {
                let unit = h.tanh()?.affine(0.5, 0.5)?;
                unit.broadcast_mul(span)?.broadcast_add(lo)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use candle_core::{DType, Device, Var};
    use candle_nn::VarMap;

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
        for (channels, size) in [(1, 28), (3, 32), (3, 96), (3, 9)] {
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

    #[test]
    fn output_range_bounds_every_channel() {
        let dev = Device::Cpu;
        let vb = VarBuilder::from_varmap(&VarMap::new(), DType::F32, &dev);
        let dec = Decoder::new(6, 2, 8, 2, vb).unwrap();
        let bounded = dec
            .clone()
            .with_output_range(&[-1.0, 0.0], &[2.0, 0.5])
            .unwrap();
        let x = (Tensor::randn(0f32, 1.0, (4, 6), &dev).unwrap() * 100.0).unwrap();
        let y = bounded.forward_t(&x, false).unwrap();
        for (c, (lo, hi)) in [(-1f32, 2f32), (0.0, 0.5)].into_iter().enumerate() {
            let v = y.narrow(1, c, 1).unwrap().flatten_all().unwrap();
            let v = v.to_vec1::<f32>().unwrap();
            assert!(
                v.iter().all(|p| (lo..=hi).contains(p)),
                "channel {c}: {v:?}"
            );
        }
        assert!(dec.clone().with_output_range(&[0.0], &[1.0]).is_err());
        assert!(dec.with_output_range(&[0.0, 1.0], &[1.0, 1.0]).is_err());
    }

    /// Every variable's gradient through linear, batch norm, `conv_transpose2d`, the
    /// crop, the bounded output and a masked squared error matches a central finite
    /// difference.
    #[test]
    fn gradients_match_finite_differences() {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F64, &dev);
        let (n, dim, channels, size) = (3, 5, 2, 13);
        let dec = Decoder::new(dim, channels, size, 2, vb)
            .unwrap()
            .with_output_range(&[-1.0, -0.5], &[1.0, 2.0])
            .unwrap();
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
        let mask: Vec<f64> = (0..n * size * size)
            .map(|i| f64::from(i % 7 != 2))
            .collect();
        let mask = Tensor::from_vec(mask, (n, 1, size, size), &dev).unwrap();
        let loss = || {
            let y = dec.forward_t(&x, true).unwrap();
            let sq = (y - &target).unwrap().sqr().unwrap();
            sq.broadcast_mul(&mask).unwrap().sum_all().unwrap()
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
