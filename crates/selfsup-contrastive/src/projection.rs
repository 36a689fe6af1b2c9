use candle_core::{Result, Tensor};
use candle_nn::{Linear, Module, ModuleT, VarBuilder};
use selfsup_encoders::{torch_linear, BatchNorm2d};

/// The SimCLR projection head (Chen et al. 2020): Linear, BatchNorm, ReLU, Linear.
///
/// Variables: `fc1.{weight,bias}`, `bn1.{weight,bias,running_mean,running_var}`, `fc2.{weight,bias}`.
/// The linear layers start from PyTorch's `nn.Linear` init, U(±1/√in) for weight and bias.
/// The batch norm (with its ReLU) runs through the encoders' fused [`BatchNorm2d`], so that
/// it is synchronised across processes where the run asks for it.
#[derive(Clone, Debug)]
pub struct ProjectionHead {
    fc1: Linear,
    bn1: BatchNorm2d,
    fc2: Linear,
}

impl ProjectionHead {
    /// A head mapping `input_dim` features through `hidden_dim` to `output_dim`.
    ///
    /// # Errors
    /// If the variable builder cannot provide the weights.
    pub fn new(
        input_dim: usize,
        hidden_dim: usize,
        output_dim: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        Ok(Self {
            fc1: torch_linear(input_dim, hidden_dim, vb.pp("fc1"))?,
            bn1: BatchNorm2d::new(hidden_dim, vb.pp("bn1"))?.with_relu(),
            fc2: torch_linear(hidden_dim, output_dim, vb.pp("fc2"))?,
        })
    }
}

impl ModuleT for ProjectionHead {
    /// # Shapes
    /// (N, input_dim) → (N, output_dim).
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let h = self.fc1.forward(x)?;
        let h = h.reshape((h.dim(0)?, h.dim(1)?, 1, 1))?;
        self.fc2
            .forward(&self.bn1.forward_t(&h, train)?.flatten_from(1)?)
    }
}
