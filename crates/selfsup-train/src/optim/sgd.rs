use super::{
    detached_grad_and_weight, load_buffers, named_buffers, zero_buffers, Optimizer, Param,
};
use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor};
use std::collections::HashMap;

/// SGD with momentum, optional Nesterov, and weight decay on rank ≥ 2 parameters,
/// with PyTorch's update rule: `b ← μb + (g + λw)`, `w ← w − lr·(g + λw + μb)` (Nesterov) or `w ← w − lr·b`.
pub struct Sgd {
    params: Vec<Param>,
    momentum: Vec<Tensor>,
    mu: f64,
    nesterov: bool,
    weight_decay: f64,
}

impl Sgd {
    /// SGD over `params`.
    ///
    /// # Errors
    /// On tensor errors while allocating buffers.
    pub fn new(
        params: Vec<Param>,
        momentum: f64,
        nesterov: bool,
        weight_decay: f64,
    ) -> Result<Self> {
        let momentum_bufs = zero_buffers(&params)?;
        Ok(Self {
            params,
            momentum: momentum_bufs,
            mu: momentum,
            nesterov,
            weight_decay,
        })
    }
}

impl Optimizer for Sgd {
    fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        for (p, buf) in self.params.iter().zip(self.momentum.iter_mut()) {
            let Some((g, w)) = detached_grad_and_weight(p, grads) else {
                continue;
            };
            let g = if p.decay && self.weight_decay > 0.0 {
                (g + (&w * self.weight_decay)?)?
            } else {
                g
            };
            *buf = ((&*buf * self.mu)? + &g)?;
            let update = if self.nesterov {
                (g + (&*buf * self.mu)?)?
            } else {
                buf.clone()
            };
            p.var.set(&(&w - (update * lr)?)?)?;
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
