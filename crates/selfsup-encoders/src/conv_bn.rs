//! The conv + batch-norm pair that every backbone here is made of.

use candle_core::{Result, Tensor};
use candle_nn::{BatchNorm, BatchNormConfig, Conv2d, Conv2dConfig, Module, ModuleT, VarBuilder};

/// The batch-norm settings of PyTorch's `BatchNorm2d` defaults.
const BN: BatchNormConfig = BatchNormConfig {
    eps: 1e-5,
    remove_mean: true,
    affine: true,
    momentum: 0.1,
};

/// A square `kernel` convolution without bias (padding `kernel / 2`) followed
/// by batch-norm; no activation.
#[derive(Clone, Debug)]
pub(crate) struct ConvBn {
    conv: Conv2d,
    bn: BatchNorm,
}

impl ConvBn {
    /// Creates the conv's `weight` under `conv_vb` and the batch-norm's
    /// `weight`, `bias`, `running_mean` and `running_var` under `bn_vb`.
    pub(crate) fn new(
        (cin, cout): (usize, usize),
        kernel: usize,
        stride: usize,
        conv_vb: VarBuilder,
        bn_vb: VarBuilder,
    ) -> Result<Self> {
        let cfg = Conv2dConfig {
            padding: kernel / 2,
            stride,
            ..Default::default()
        };
        Ok(Self {
            conv: candle_nn::conv2d_no_bias(cin, cout, kernel, cfg, conv_vb)?,
            bn: candle_nn::batch_norm(cout, BN, bn_vb)?,
        })
    }

    /// `(N, cin, H, W)` to `(N, cout, H / stride, W / stride)` (rounded up).
    pub(crate) fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        self.bn.forward_t(&self.conv.forward(x)?, train)
    }
}
