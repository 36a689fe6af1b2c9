//! Batch normalisation over `(N, C, H, W)` maps (Ioffe & Szegedy 2015), optionally
//! followed by a ReLU, with PyTorch's `BatchNorm2d` defaults.
//!
//! On the CPU it runs through `selfsup-kernels`' fused kernels (statistics and
//! normalisation in one pass each way, the ReLU fused in); on CUDA and Metal the
//! kernels fall back to candle's own ops.
use candle_core::{Result, Tensor, Var};
use candle_nn::{Init, VarBuilder};
use selfsup_kernels::{
    batch_norm_eval, batch_norm_train, batch_norm_train_relu, batch_norm_world, relu, MemoryFormat,
};

/// PyTorch's `BatchNorm2d` defaults.
const BN_EPS: f64 = 1e-5;
const BN_MOMENTUM: f64 = 0.1;

/// Per-channel batch norm with learned scale and shift, and running statistics for
/// evaluation. Variables: `weight` (1), `bias` (0), `running_mean` (0) and
/// `running_var` (1), as PyTorch and candle-nn name them.
#[derive(Clone, Debug)]
pub struct BatchNorm2d {
    weight: Tensor,
    bias: Tensor,
    running_mean: Var,
    running_var: Var,
    relu: bool,
}

impl BatchNorm2d {
    /// Batch norm of `channels` channels, its variables under `vb`.
    ///
    /// # Errors
    /// If `vb` cannot provide a variable.
    pub fn new(channels: usize, vb: VarBuilder) -> Result<Self> {
        let stat = |name, init| -> Result<Var> {
            Var::from_tensor(&vb.get_with_hints(channels, name, init)?)
        };
        Ok(Self {
            running_mean: stat("running_mean", Init::Const(0.))?,
            running_var: stat("running_var", Init::Const(1.))?,
            weight: vb.get_with_hints(channels, "weight", Init::Const(1.))?,
            bias: vb.get_with_hints(channels, "bias", Init::Const(0.))?,
            relu: false,
        })
    }

    /// The same layer followed by a ReLU (fused into the kernels in training mode).
    pub fn with_relu(self) -> Self {
        Self { relu: true, ..self }
    }

    /// In training mode the batch statistics normalise and update the running
    /// statistics (momentum 0.1, unbiased variance, as PyTorch); in evaluation mode
    /// the running statistics normalise.
    ///
    /// # Shapes
    /// `(N, C, H, W)` to the same.
    ///
    /// # Errors
    /// If `x` is not 4-D with `C` channels.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        if !train {
            return self.eval(x, MemoryFormat::Nchw);
        }
        let bn = if self.relu {
            batch_norm_train_relu
        } else {
            batch_norm_train
        };
        self.train_with(|weight, bias, eps, _| bn(x, weight, bias, eps))
    }

    /// Evaluation mode on `x` in `format`: the running statistics normalise.
    pub(crate) fn eval(&self, x: &Tensor, format: MemoryFormat) -> Result<Tensor> {
        let out = batch_norm_eval(
            x,
            self.running_mean.as_tensor(),
            self.running_var.as_tensor(),
            &self.weight,
            &self.bias,
            BN_EPS,
            format,
        )?;
        if self.relu {
            relu(&out)
        } else {
            Ok(out)
        }
    }

    /// Training mode through `normalize(weight, bias, eps, relu)`, which returns the
    /// output and the batch's mean and biased variance (batch norm alone, or fused
    /// with the convolution before it); the running statistics follow the batch's.
    pub(crate) fn train_with(
        &self,
        normalize: impl FnOnce(&Tensor, &Tensor, f64, bool) -> Result<(Tensor, Tensor, Tensor)>,
    ) -> Result<Tensor> {
        let (out, mean, var) = normalize(&self.weight, &self.bias, BN_EPS, self.relu)?;
        // Values per channel: every dim but the channels' (C = the statistics' length).
        self.update_running(&mean, &var, out.elem_count() / mean.elem_count().max(1))?;
        Ok(out)
    }

    /// Moves the running statistics towards a batch's `mean` and biased `var`
    /// over `per_channel` values of each channel on this process.
    pub(crate) fn update_running(
        &self,
        mean: &Tensor,
        var: &Tensor,
        per_channel: usize,
    ) -> Result<()> {
        let m = (per_channel * batch_norm_world()) as f64;
        let unbiased = if m > 1.0 { m / (m - 1.0) } else { 1.0 };
        let ema = |running: &Var, batch: Tensor| -> Result<()> {
            running.set(
                &((running.as_tensor().detach() * (1.0 - BN_MOMENTUM))? + (batch * BN_MOMENTUM)?)?,
            )
        };
        ema(&self.running_mean, mean.detach())?;
        ema(&self.running_var, (var.detach() * unbiased)?)
    }

    /// The scale, shift and ReLU flag of a [`ConvBnLayer`](selfsup_kernels::ConvBnLayer).
    pub(crate) fn affine(&self) -> (&Tensor, &Tensor, bool) {
        (&self.weight, &self.bias, self.relu)
    }

    /// The epsilon added to the variance.
    pub(crate) const EPS: f64 = BN_EPS;
}
