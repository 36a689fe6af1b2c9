//! Optimizers: SGD with momentum, LARS and AdamW, plus gradient-norm clipping.
//!
//! candle-nn's SGD has no momentum and no LARS, so selfsup supplies its own.
//! Weight decay is never applied to 1-D parameters (BN weights and biases), and
//! BN running statistics are never optimised: see [`trainable_params`].
mod adamw;
mod lars;
mod sgd;

pub use adamw::AdamW;
pub use lars::Lars;
pub use sgd::Sgd;

use crate::config::{OptimizerKind, TrainConfig};
use crate::{Result, TrainError};
use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use candle_nn::VarMap;
use std::collections::HashMap;

/// A trainable variable with its name and whether weight decay applies to it.
#[derive(Clone, Debug)]
pub struct Param {
    /// Full variable name, e.g. `encoder.conv1.weight`.
    pub name: String,
    /// The variable.
    pub var: Var,
    /// Whether weight decay applies (rank ≥ 2: conv and linear weights).
    pub decay: bool,
}

/// True for BatchNorm running statistics, which are state, not parameters.
pub fn is_running_stat(name: &str) -> bool {
    name.ends_with("running_mean") || name.ends_with("running_var")
}

/// The trainable variables of `varmap` with the given name prefixes
/// (all if `prefixes` is empty), sorted by name so that updates run in a fixed order.
pub fn trainable_params(varmap: &VarMap, prefixes: &[&str]) -> Vec<Param> {
    let data = varmap.data().lock().unwrap_or_else(|p| p.into_inner());
    let mut params: Vec<Param> = data
        .iter()
        .filter(|(name, _)| !is_running_stat(name))
        .filter(|(name, _)| prefixes.is_empty() || prefixes.iter().any(|p| name.starts_with(p)))
        .map(|(name, var)| Param {
            name: name.clone(),
            var: var.clone(),
            decay: var.rank() >= 2,
        })
        .collect();
    params.sort_by(|a, b| a.name.cmp(&b.name));
    params
}

/// A first-order optimizer over a fixed list of [`Param`]s.
pub trait Optimizer: Send {
    /// One update with learning rate `lr`. Parameters without a gradient are skipped.
    ///
    /// # Errors
    /// On tensor errors.
    fn step(&mut self, grads: &GradStore, lr: f64) -> candle_core::Result<()>;

    /// Named state tensors (momentum buffers, moments), for checkpoints.
    fn state(&self) -> Vec<(String, Tensor)>;

    /// Restores what [`Optimizer::state`] returned.
    ///
    /// # Errors
    /// If a tensor is missing or has the wrong shape.
    fn load_state(&mut self, state: &HashMap<String, Tensor>) -> candle_core::Result<()>;
}

/// Builds the optimizer that `cfg` names over `params`.
pub fn build_optimizer(cfg: &TrainConfig, params: Vec<Param>) -> Result<Box<dyn Optimizer>> {
    if params.is_empty() {
        return Err(TrainError::config(
            "method",
            "the model has no trainable parameters",
        ));
    }
    Ok(match cfg.optimizer {
        OptimizerKind::Sgd => Box::new(Sgd::new(
            params,
            cfg.momentum,
            cfg.nesterov,
            cfg.weight_decay,
        )?),
        OptimizerKind::Lars => Box::new(Lars::new(params, cfg.momentum, cfg.weight_decay, 0.001)?),
        OptimizerKind::Adamw => Box::new(AdamW::new(
            params,
            cfg.momentum,
            0.999,
            1e-8,
            cfg.weight_decay,
        )?),
    })
}

/// The gradient of `p` and its current value, both detached from any graph.
///
/// candle does not detach the gradients of variables: a weight's gradient still
/// references the activations it was computed from. Optimizer state built from it
/// would keep every step's graph alive, so everything here is detached first.
pub(crate) fn detached_grad_and_weight(p: &Param, grads: &GradStore) -> Option<(Tensor, Tensor)> {
    let g = grads.get(p.var.as_tensor())?.detach();
    Some((g, p.var.as_tensor().detach()))
}

/// One named zero buffer per parameter, the shape of its variable.
pub(crate) fn zero_buffers(params: &[Param]) -> candle_core::Result<Vec<Tensor>> {
    params
        .iter()
        .map(|p| p.var.as_tensor().zeros_like())
        .collect()
}

/// The buffers named `<param>.<suffix>`, for [`Optimizer::state`].
pub(crate) fn named_buffers(
    params: &[Param],
    bufs: &[Tensor],
    suffix: &str,
) -> Vec<(String, Tensor)> {
    params
        .iter()
        .zip(bufs)
        .map(|(p, b)| (format!("{}.{suffix}", p.name), b.clone()))
        .collect()
}

/// Loads each buffer from `<param>.<suffix>` in `state`, checking shapes.
pub(crate) fn load_buffers(
    bufs: &mut [Tensor],
    state: &HashMap<String, Tensor>,
    params: &[Param],
    suffix: &str,
) -> candle_core::Result<()> {
    for (p, buf) in params.iter().zip(bufs.iter_mut()) {
        let k = format!("{}.{suffix}", p.name);
        let t = state
            .get(&k)
            .ok_or_else(|| candle_core::Error::Msg(format!("optimizer state lacks {k}")))?;
        if t.dims() != buf.dims() {
            candle_core::bail!(
                "optimizer state {k} has shape {:?}, expected {:?}",
                t.dims(),
                buf.dims()
            )
        }
        *buf = t.to_device(buf.device())?.to_dtype(buf.dtype())?;
    }
    Ok(())
}

/// Scales all gradients so that their global L2 norm is at most `max_norm`;
/// returns the norm before clipping.
///
/// # Errors
/// On tensor errors.
pub fn clip_grad_norm(
    params: &[Param],
    grads: &mut GradStore,
    max_norm: f64,
) -> candle_core::Result<f64> {
    let mut total = 0f64;
    for p in params {
        if let Some(g) = grads.get(p.var.as_tensor()) {
            total += g
                .sqr()?
                .sum_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
        }
    }
    let norm = total.sqrt();
    if norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for p in params {
            if let Some(g) = grads.remove(p.var.as_tensor()) {
                grads.insert(p.var.as_tensor(), (g * scale)?);
            }
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use candle_core::{DType, Device};

    /// Minimises ½‖w − 3‖² from w = 0 and returns w after `steps` updates.
    pub(super) fn descend(
        opt_of: impl Fn(Vec<Param>) -> Box<dyn Optimizer>,
        lr: f64,
        steps: usize,
    ) -> f32 {
        let var = Var::zeros((2, 2), DType::F32, &Device::Cpu).unwrap();
        let params = vec![Param {
            name: "w".into(),
            var: var.clone(),
            decay: false,
        }];
        let mut opt = opt_of(params);
        for _ in 0..steps {
            let loss = (var.as_tensor() - 3.0)
                .unwrap()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                * 0.5;
            let grads = loss.unwrap().backward().unwrap();
            opt.step(&grads, lr).unwrap();
        }
        var.as_tensor()
            .mean_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn all_optimizers_converge_on_a_quadratic() {
        let sgd = descend(
            |p| Box::new(Sgd::new(p, 0.9, false, 0.0).unwrap()),
            0.05,
            200,
        );
        let nesterov = descend(
            |p| Box::new(Sgd::new(p, 0.9, true, 0.0).unwrap()),
            0.05,
            200,
        );
        let lars = descend(
            |p| Box::new(Lars::new(p, 0.9, 0.0, 0.001).unwrap()),
            0.05,
            200,
        );
        let adamw = descend(
            |p| Box::new(AdamW::new(p, 0.9, 0.999, 1e-8, 0.0).unwrap()),
            0.1,
            300,
        );
        for (name, w) in [
            ("sgd", sgd),
            ("nesterov", nesterov),
            ("lars", lars),
            ("adamw", adamw),
        ] {
            assert!((w - 3.0).abs() < 0.05, "{name} ended at {w}");
        }
    }

    #[test]
    fn optimizer_state_holds_no_graph() {
        // A gradient that references an activation, as candle's conv/matmul gradients do.
        let x = Var::ones((2, 2), DType::F32, &Device::Cpu).unwrap();
        let w = Var::ones((2, 2), DType::F32, &Device::Cpu).unwrap();
        let params = vec![Param {
            name: "w".into(),
            var: w.clone(),
            decay: true,
        }];
        let opts: Vec<Box<dyn Optimizer>> = vec![
            Box::new(Sgd::new(params.clone(), 0.9, true, 0.1).unwrap()),
            Box::new(Lars::new(params.clone(), 0.9, 0.1, 0.001).unwrap()),
            Box::new(AdamW::new(params.clone(), 0.9, 0.999, 1e-8, 0.1).unwrap()),
        ];
        for mut opt in opts {
            let h = (x.as_tensor().exp().unwrap())
                .matmul(w.as_tensor())
                .unwrap();
            opt.step(&h.sum_all().unwrap().backward().unwrap(), 0.1)
                .unwrap();
            for (name, t) in opt.state() {
                assert!(!t.track_op(), "{name} keeps a reference to the graph");
            }
        }
    }

    #[test]
    fn clipping_bounds_the_global_norm() {
        let var = Var::ones(4, DType::F32, &Device::Cpu).unwrap();
        let params = vec![Param {
            name: "w".into(),
            var: var.clone(),
            decay: false,
        }];
        let mut grads = (var.as_tensor() * 10.0)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let before = clip_grad_norm(&params, &mut grads, 1.0).unwrap();
        assert!((before - 20.0).abs() < 1e-4);
        let g = grads.get(var.as_tensor()).unwrap();
        let after = g
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .sqrt()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!((after - 1.0).abs() < 1e-3, "{after}");
    }

    #[test]
    fn state_roundtrip_continues_identically() {
        let run = |split: Option<usize>| {
            let var = Var::zeros(3, DType::F32, &Device::Cpu).unwrap();
            let params = vec![Param {
                name: "w".into(),
                var: var.clone(),
                decay: true,
            }];
            let mut opt: Box<dyn Optimizer> =
                Box::new(AdamW::new(params.clone(), 0.9, 0.999, 1e-8, 0.01).unwrap());
            for step in 0..10 {
                if split == Some(step) {
                    let state: HashMap<_, _> = opt.state().into_iter().collect();
                    opt = Box::new(AdamW::new(params.clone(), 0.9, 0.999, 1e-8, 0.01).unwrap());
                    opt.load_state(&state).unwrap();
                }
                let loss = (var.as_tensor() - 1.0)
                    .unwrap()
                    .sqr()
                    .unwrap()
                    .sum_all()
                    .unwrap();
                opt.step(&loss.backward().unwrap(), 0.1).unwrap();
            }
            var.as_tensor().to_vec1::<f32>().unwrap()
        };
        assert_eq!(run(None), run(Some(4)));
    }
}
