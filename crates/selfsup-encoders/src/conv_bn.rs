//! The conv + batch-norm (+ ReLU) unit that every backbone here is made of.
//!
//! On the CPU all run through `selfsup-kernels` (im2col + gemm convolution, fused
//! batch norm with the ReLU fused in, each with its own backward), channels last
//! (`(N, H, W, C)`, the kernels' native order; the encoders convert at their input
//! and output), and in training a run of units is one chained op; on CUDA and Metal
//! the kernels fall back to candle's own ops, channels first.

use crate::batch_norm::BatchNorm2d;
use candle_core::{Result, Tensor};
use candle_nn::{Init, VarBuilder};
use selfsup_kernels::{
    conv2d_in, conv_bn_chain_train, conv_bn_train, BatchStats, ConvBnLayer, MemoryFormat,
};

/// A square `kernel` convolution without bias (padding `kernel / 2`) followed
/// by batch-norm and, when built [`with_relu`](Self::with_relu), a ReLU.
#[derive(Clone, Debug)]
pub(crate) struct ConvBn {
    weight: Tensor,
    stride: usize,
    padding: usize,
    bn: BatchNorm2d,
}

impl ConvBn {
    /// Creates the conv's `weight` (initialised by `conv_init`) under `conv_vb` and the
    /// batch-norm's `weight` (1), `bias` (0), `running_mean` (0) and `running_var` (1)
    /// under `bn_vb`.
    pub(crate) fn new(
        (cin, cout): (usize, usize),
        kernel: usize,
        stride: usize,
        conv_init: Init,
        conv_vb: VarBuilder,
        bn_vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            weight: conv_vb.get_with_hints((cout, cin, kernel, kernel), "weight", conv_init)?,
            stride,
            padding: kernel / 2,
            bn: BatchNorm2d::new(cout, bn_vb)?,
        })
    }

    /// The same unit followed by a ReLU, fused into the batch-norm kernels in
    /// training mode (no variables change).
    pub(crate) fn with_relu(self) -> Self {
        Self {
            bn: self.bn.with_relu(),
            ..self
        }
    }

    /// `(N, cin, H, W)` to `(N, cout, H / stride, W / stride)` (rounded up), both
    /// in `format`. In training mode the batch statistics normalise and update the
    /// running statistics (momentum 0.1, unbiased variance, as PyTorch).
    pub(crate) fn forward_t(
        &self,
        x: &Tensor,
        train: bool,
        format: MemoryFormat,
    ) -> Result<Tensor> {
        if !train {
            let y = conv2d_in(x, &self.weight, self.stride, self.padding, format)?;
            return self.bn.eval(&y, format);
        }
        let geometry = (self.stride, self.padding);
        self.bn.train_with(|weight, bias, eps, relu| {
            conv_bn_train(x, &self.weight, weight, bias, geometry, eps, relu, format)
        })
    }

    /// This unit as a layer of a chain.
    fn layer(&self) -> ConvBnLayer<'_> {
        let (weight, bias, relu) = self.bn.affine();
        ConvBnLayer {
            kernel: &self.weight,
            weight,
            bias,
            stride: self.stride,
            padding: self.padding,
            relu,
        }
    }
}

/// `units` one after the other in training mode, as one chained op (see
/// [`conv_bn_chain_train`]); each unit's running statistics follow its batch's.
pub(crate) fn train_chain(units: &[ConvBn], x: &Tensor, format: MemoryFormat) -> Result<Tensor> {
    let layers: Vec<ConvBnLayer<'_>> = units.iter().map(ConvBn::layer).collect();
    let (y, stats) = conv_bn_chain_train(x, &layers, BatchNorm2d::EPS, format)?;
    for (
        unit,
        BatchStats {
            mean,
            var,
            per_channel,
        },
    ) in units.iter().zip(stats)
    {
        unit.bn.update_running(&mean, &var, per_channel)?;
    }
    Ok(y)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use candle_core::{DType, Device, Module, ModuleT, Var};
    use candle_nn::{BatchNormConfig, Conv2dConfig, VarMap};

    const BN_EPS: f64 = 1e-5;
    const BN_MOMENTUM: f64 = 0.1;

    fn max_rel_diff(a: &Tensor, b: &Tensor) -> f32 {
        let d = (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        let s = b
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
            .max(1e-6);
        d / s
    }

    /// The fast path agrees with candle-nn's conv + BatchNorm (+ candle's ReLU with
    /// `relu`), in both memory formats: outputs, input gradients and running statistics.
    fn check_against_candle_nn(relu: bool) {
        for format in [MemoryFormat::Nchw, MemoryFormat::Nhwc] {
            check_in(relu, format);
        }
    }

    fn check_in(relu: bool, format: MemoryFormat) {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let vb = crate::seeded_var_builder(&vm, 5, DType::F32, &dev);
        let ours = ConvBn::new(
            (3, 5),
            3,
            2,
            candle_nn::init::DEFAULT_KAIMING_NORMAL,
            vb.pp("conv"),
            vb.pp("bn"),
        )
        .unwrap();
        let ours = if relu { ours.with_relu() } else { ours };
        // candle-nn modules over copies of the same variables.
        let vm_ref = VarMap::new();
        for (name, var) in vm.data().lock().unwrap().iter() {
            vm_ref.data().lock().unwrap().insert(
                name.clone(),
                Var::from_tensor(&var.as_tensor().copy().unwrap()).unwrap(),
            );
        }
        let vb_ref = VarBuilder::from_varmap(&vm_ref, DType::F32, &dev);
        let cfg = Conv2dConfig {
            padding: 1,
            stride: 2,
            ..Default::default()
        };
        let conv = candle_nn::conv2d_no_bias(3, 5, 3, cfg, vb_ref.pp("conv")).unwrap();
        let bn_cfg = BatchNormConfig {
            eps: BN_EPS,
            remove_mean: true,
            affine: true,
            momentum: BN_MOMENTUM,
        };
        let bn = candle_nn::batch_norm(5, bn_cfg, vb_ref.pp("bn")).unwrap();
        let x = Var::randn(0f32, 1.0, (4, 3, 9, 7), &dev).unwrap();
        let r = Tensor::randn(0f32, 1.0, (4, 5, 5, 4), &dev).unwrap();
        for train in [true, true, false] {
            let a = ours
                .forward_t(&format.from_nchw(&x).unwrap(), train, format)
                .unwrap();
            let a = format.to_nchw(&a).unwrap();
            let b = bn.forward_t(&conv.forward(&x).unwrap(), train).unwrap();
            let b = if relu { b.relu().unwrap() } else { b };
            assert!(
                max_rel_diff(&a, &b) < 1e-4,
                "relu={relu} train={train} {format:?}"
            );
            let grad = |y: &Tensor| {
                let g = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
                g.get(&x).unwrap().clone()
            };
            let (ga, gb) = (grad(&a), grad(&b));
            assert!(
                max_rel_diff(&ga, &gb) < 1e-4,
                "grad relu={relu} train={train} {format:?}"
            );
        }
        for stat in ["bn.running_mean", "bn.running_var"] {
            let get = |vm: &VarMap| vm.data().lock().unwrap()[stat].as_tensor().copy().unwrap();
            let diff = max_rel_diff(&get(&vm), &get(&vm_ref));
            assert!(diff < 1e-4, "{stat} {format:?}");
        }
    }

    #[test]
    fn matches_candle_nn_conv_and_batch_norm() {
        check_against_candle_nn(false);
    }

    #[test]
    fn with_relu_matches_candle_nn_conv_batch_norm_and_relu() {
        check_against_candle_nn(true);
    }
}
