use super::{
    detached_grad_and_weight, load_buffers, named_buffers, zero_buffers, Optimizer, Param,
};
use candle_core::backprop::GradStore;
use candle_core::{Device, Result, Tensor};
use std::collections::HashMap;

/// AdamW (Loshchilov & Hutter 2019, "Decoupled Weight Decay Regularization"), with
/// weight decay on rank ≥ 2 parameters only.
pub struct AdamW {
    params: Vec<Param>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    t: u64,
    beta1: f64,
    beta2: f64,
    eps: f64,
    weight_decay: f64,
}

impl AdamW {
    /// AdamW over `params`.
    ///
    /// # Errors
    /// On tensor errors while allocating buffers.
    pub fn new(
        params: Vec<Param>,
        beta1: f64,
        beta2: f64,
        eps: f64,
        weight_decay: f64,
    ) -> Result<Self> {
        let (m, v) = (zero_buffers(&params)?, zero_buffers(&params)?);
        Ok(Self {
            params,
            m,
            v,
            t: 0,
            beta1,
            beta2,
            eps,
            weight_decay,
        })
    }
}

impl Optimizer for AdamW {
    fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.t += 1;
        let c1 = 1.0 - self.beta1.powi(self.t as i32);
        let c2 = 1.0 - self.beta2.powi(self.t as i32);
        for ((p, m), v) in self
            .params
            .iter()
            .zip(self.m.iter_mut())
            .zip(self.v.iter_mut())
        {
            let Some((g, w)) = detached_grad_and_weight(p, grads) else {
                continue;
            };
            *m = ((&*m * self.beta1)? + (&g * (1.0 - self.beta1))?)?;
            *v = ((&*v * self.beta2)? + (g.sqr()? * (1.0 - self.beta2))?)?;
            let step = ((&*m / c1)? / ((&*v / c2)?.sqrt()? + self.eps)?)?;
            let decay = if p.decay { self.weight_decay } else { 0.0 };
            p.var.set(&((&w * (1.0 - lr * decay))? - (step * lr)?)?)?;
        }
        Ok(())
    }

    fn state(&self) -> Vec<(String, Tensor)> {
        let mut out = named_buffers(&self.params, &self.m, "exp_avg");
        out.extend(named_buffers(&self.params, &self.v, "exp_avg_sq"));
        if let Ok(t) = Tensor::new(&[self.t as f64], &Device::Cpu) {
            out.push(("adamw.step".into(), t));
        }
        out
    }

    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> Result<()> {
        load_buffers(&mut self.m, state, &self.params, "exp_avg")?;
        load_buffers(&mut self.v, state, &self.params, "exp_avg_sq")?;
        let t = state
            .get("adamw.step")
            .ok_or_else(|| candle_core::Error::Msg("optimizer state lacks adamw.step".into()))?;
        self.t = t.to_vec1::<f64>()?.first().copied().unwrap_or(0.0) as u64;
        Ok(())
    }
}
