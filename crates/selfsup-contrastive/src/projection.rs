use candle_core::{Result, Tensor};
use candle_nn::{batch_norm, BatchNorm, BatchNormConfig, Linear, Module, ModuleT, VarBuilder};
use selfsup_encoders::torch_linear;

/// The SimCLR projection head (Chen et al. 2020): Linear, BatchNorm, ReLU, Linear.
///
/// Variables: `fc1.{weight,bias}`, `bn1.{weight,bias,running_mean,running_var}`, `fc2.{weight,bias}`.
/// The linear layers start from PyTorch's `nn.Linear` init, U(±1/√in) for weight and bias.
#[derive(Clone, Debug)]
pub struct ProjectionHead {
    fc1: Linear,
    bn1: BatchNorm,
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
            bn1: batch_norm(hidden_dim, BatchNormConfig::default(), vb.pp("bn1"))?,
            fc2: torch_linear(hidden_dim, output_dim, vb.pp("fc2"))?,
        })
    }
}

impl ModuleT for ProjectionHead {
    /// # Shapes
    /// (N, input_dim) → (N, output_dim).
    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let h = self.bn1.forward_t(&self.fc1.forward(x)?, train)?.relu()?;
        self.fc2.forward(&h)
    }
}
