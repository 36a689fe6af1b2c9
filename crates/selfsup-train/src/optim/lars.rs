use super::{
    detached_grad_and_weight, load_buffers, named_buffers, zero_buffers, Optimizer, Param,
};
use candle_core::backprop::GradStore;
use candle_core::{DType, Result, Tensor};
use std::collections::HashMap;

fn norm(t: &Tensor) -> Result<f64> {
    t.sqr()?
        .sum_all()?
        .sqrt()?
        .to_dtype(DType::F64)?
        .to_scalar::<f64>()
}

/// LARS, layer-wise adaptive rate scaling (You et al. 2017, "Large Batch Training of
/// Convolutional Networks"), as used by SimCLR and BYOL. Rank ≥ 2 parameters get weight
/// decay and the trust ratio `η‖w‖ / ‖g + λw‖`; BN parameters and biases are plain SGD with momentum.
pub struct Lars {
    params: Vec<Param>,
    momentum: Vec<Tensor>,
    mu: f64,
    weight_decay: f64,
    eta: f64,
}

impl Lars {
    /// LARS over `params` with trust coefficient `eta`.
    ///
    /// # Errors
    /// On tensor errors while allocating buffers.
    pub fn new(params: Vec<Param>, momentum: f64, weight_decay: f64, eta: f64) -> Result<Self> {
        let momentum_bufs = zero_buffers(&params)?;
        Ok(Self {
            params,
            momentum: momentum_bufs,
            mu: momentum,
            weight_decay,
            eta,
        })
    }
}

impl Optimizer for Lars {
    fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        for (p, buf) in self.params.iter().zip(self.momentum.iter_mut()) {
            let Some((g, w)) = detached_grad_and_weight(p, grads) else {
                continue;
            };
            let (g, trust) = if p.decay {
                let g = (g + (&w * self.weight_decay)?)?;
                let (wn, gn) = (norm(&w)?, norm(&g)?);
                let trust = if wn > 0.0 && gn > 0.0 {
                    self.eta * wn / gn
                } else {
                    1.0
                };
                (g, trust)
            } else {
                (g, 1.0)
            };
            *buf = ((&*buf * self.mu)? + (g * (lr * trust))?)?;
            p.var.set(&(&w - &*buf)?)?;
        }
        Ok(())
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        named_buffers(&self.params, &self.momentum, "momentum")
    }

    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        load_buffers(&mut self.momentum, state, &self.params, "momentum")
    }
}
