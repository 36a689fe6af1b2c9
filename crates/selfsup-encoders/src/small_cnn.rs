//! A small four-layer CNN for 28x28 and 32x32 images.

use candle_core::{bail, Result, Tensor};
use candle_nn::VarBuilder;
use selfsup_kernels::MemoryFormat;

use crate::conv_bn::{train_chain, ConvBn};
use crate::encoder::Encoder;
use crate::init::torch_default_init;

/// Four 3x3 conv–batch-norm–ReLU layers with widths `w, 2w, 4w, 8w` and
/// strides `1, 2, 2, 2`, then global average pooling.
///
/// Every conv has padding 1 and no bias, and starts from PyTorch's default
/// init ([`torch_default_init`](crate::torch_default_init)), as the reference does. The variables are named `conv1.weight`,
/// `bn1.{weight,bias,running_mean,running_var}`, ..., `conv4.weight`, `bn4.*`.
///
/// # Shapes
/// `(N, C, H, W)` to `(N, 8 * width)`.
#[derive(Clone, Debug)]
pub struct SmallCnn {
    layers: Vec<ConvBn>,
    width: usize,
}

impl SmallCnn {
    /// Creates the network for `in_channels`-channel images.
    ///
    /// # Errors
    /// Fails if `in_channels` or `width` is zero, or if `vb` cannot provide a
    /// variable.
    pub fn new(in_channels: usize, width: usize, vb: VarBuilder) -> Result<Self> {
        if in_channels == 0 || width == 0 {
            bail!("small-cnn needs positive in_channels ({in_channels}) and width ({width})")
        }
        let channels = [in_channels, width, 2 * width, 4 * width, 8 * width];
        let layers = (0..4)
            .map(|i| {
                let stride = if i == 0 { 1 } else { 2 };
                let (conv, bn) = (
                    vb.pp(format!("conv{}", i + 1)),
                    vb.pp(format!("bn{}", i + 1)),
                );
                let init = torch_default_init(channels[i] * 9);
                ConvBn::new((channels[i], channels[i + 1]), 3, stride, init, conv, bn)
                    .map(ConvBn::with_relu)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { layers, width })
    }

    /// The base width `w`.
    pub fn width(&self) -> usize {
        self.width
    }
}

impl Encoder for SmallCnn {
    fn forward_map(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let format = MemoryFormat::native(x);
        let mut h = format.from_nchw(x)?;
        if train {
            h = train_chain(&self.layers, &h, format)?;
        } else {
            for layer in &self.layers {
                h = layer.forward_t(&h, false, format)?;
            }
        }
        format.to_nchw(&h)
    }

    fn feature_dim(&self) -> usize {
        8 * self.width
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::seeded_var_builder;
    use crate::test_util::{assert_trainable_grads, random_input, var_names};
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    fn build(width: usize) -> Result<(VarMap, SmallCnn)> {
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
        let net = SmallCnn::new(1, width, vb)?;
        Ok((varmap, net))
    }

    #[test]
    fn shapes_and_names() -> Result<()> {
        let (varmap, net) = build(8)?;
        let y = net.forward_t(&random_input(&[2, 1, 28, 28], 0)?, false)?;
        assert_eq!(y.dims(), &[2, 64]);
        assert_eq!(net.feature_dim(), 64);
        let mut want = Vec::new();
        for i in 1..=4 {
            want.push(format!("conv{i}.weight"));
            for p in ["bias", "running_mean", "running_var", "weight"] {
                want.push(format!("bn{i}.{p}"));
            }
        }
        want.sort();
        assert_eq!(var_names(&varmap)?, want);
        assert!(
            SmallCnn::new(1, 0, candle_nn::VarBuilder::zeros(DType::F32, &Device::Cpu)).is_err()
        );
        Ok(())
    }

    /// Training through the chained op gives what the units one by one give:
    /// the map, every gradient and the running statistics.
    #[test]
    fn the_chained_trunk_matches_its_units_one_by_one() -> Result<()> {
        let ((vm_chain, chained), (vm_units, units)) = (build(4)?, build(4)?);
        let x = random_input(&[3, 1, 28, 28], 2)?;
        let format = MemoryFormat::native(&x);
        let a = chained.forward_map(&x, true)?;
        let mut h = format.from_nchw(&x)?;
        for unit in &units.layers {
            h = unit.forward_t(&h, true, format)?;
        }
        let b = format.to_nchw(&h)?;
        let r = random_input(a.dims(), 3)?;
        let (ga, gb) = (
            (&a * &r)?.sum_all()?.backward()?,
            (&b * &r)?.sum_all()?.backward()?,
        );
        let rel = |p: &Tensor, q: &Tensor| -> Result<f32> {
            let d = (p - q)?.abs()?.max_all()?.to_scalar::<f32>()?;
            Ok(d / q.abs()?.max_all()?.to_scalar::<f32>()?.max(1e-6))
        };
        assert!(rel(&a, &b)? < 1e-4);
        let (va, vb) = (
            vm_chain.data().lock().unwrap(),
            vm_units.data().lock().unwrap(),
        );
        for (name, var) in va.iter() {
            let other = &vb[name];
            if name.ends_with("running_mean") || name.ends_with("running_var") {
                assert!(rel(var.as_tensor(), other.as_tensor())? < 1e-4, "{name}");
            } else {
                let (Some(p), Some(q)) = (ga.get(var), gb.get(other)) else {
                    panic!("no gradient for {name}")
                };
                assert!(rel(p, q)? < 1e-4, "gradient of {name}");
            }
        }
        Ok(())
    }

    #[test]
    fn every_trainable_variable_gets_a_gradient() -> Result<()> {
        let (varmap, net) = build(4)?;
        let y = net.forward_t(&random_input(&[4, 1, 28, 28], 1)?, true)?;
        assert_eq!(assert_trainable_grads(&varmap, &y)?, 12);
        Ok(())
    }
}
