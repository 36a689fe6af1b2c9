//! The momentum (target) encoder of MoCo (He et al. 2020) and BYOL (Grill et al. 2020):
//! an exponential moving average of another model, like the target network of (double) DQN.
use crate::memory_bank::check_momentum;
use candle_core::{bail, Result, Tensor, Var};
use candle_nn::VarMap;
use std::collections::HashMap;

/// MoCo v2's key-encoder momentum.
pub const DEFAULT_KEY_MOMENTUM: f64 = 0.99;

/// Holds the variables of a target model that follow a source model by EMA,
/// `θ_k ← m·θ_k + (1 − m)·θ_q`, matched by name.
///
/// The target lives in its own [`VarMap`], which must never be handed to an optimizer;
/// its outputs should be detached so that no gradient reaches it.
///
/// BatchNorm running statistics (`*.running_mean`, `*.running_var`) are copied once at
/// construction and then left out of the average: as in MoCo, where they are buffers
/// rather than parameters, they follow the target's own forward passes in training mode.
#[derive(Debug)]
pub struct MomentumEncoder {
    /// (name, target, source), sorted by name.
    pairs: Vec<(String, Var, Var)>,
}

fn is_running_stat(name: &str) -> bool {
    name.ends_with("running_mean") || name.ends_with("running_var")
}

impl MomentumEncoder {
    /// Pairs every variable of `target` with the variable of the same name in `source`
    /// and copies the source's values into the target, so both start equal.
    ///
    /// # Errors
    /// If a target variable has no source of the same name and shape.
    pub fn new(source: &VarMap, target: &VarMap) -> Result<Self> {
        let sources = source.data().lock().unwrap_or_else(|p| p.into_inner());
        let targets = target.data().lock().unwrap_or_else(|p| p.into_inner());
        let mut pairs = Vec::with_capacity(targets.len());
        for (name, t) in targets.iter() {
            let Some(s) = sources.get(name) else {
                bail!("momentum encoder: the source model has no variable `{name}`")
            };
            if s.shape() != t.shape() {
                bail!(
                    "momentum encoder: `{name}` is {:?} in the source but {:?} in the target",
                    s.dims(),
                    t.dims()
                )
            }
            t.set(s.as_tensor())?;
            pairs.push((name.clone(), t.clone(), s.clone()));
        }
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Self { pairs })
    }

    /// One EMA step, `θ_k ← m·θ_k + (1 − m)·θ_q`, over every paired variable except
    /// BatchNorm running statistics.
    ///
    /// # Errors
    /// If `m` lies outside [0, 1].
    pub fn update(&self, m: f64) -> Result<()> {
        check_momentum("key encoder", m)?;
        for (name, target, source) in &self.pairs {
            if is_running_stat(name) {
                continue;
            }
            let mixed = ((target.as_tensor() * m)? + (source.as_tensor().detach() * (1.0 - m))?)?;
            target.set(&mixed)?;
        }
        Ok(())
    }

    /// The target's variables by name, for checkpoints.
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        self.pairs
            .iter()
            .map(|(name, target, _)| (name.clone(), target.as_tensor().clone()))
            .collect()
    }

    /// Restores the target's variables from [`MomentumEncoder::tensors`]'s names.
    ///
    /// # Errors
    /// If a variable is missing or has another shape.
    pub fn load(&self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        for (name, target, _) in &self.pairs {
            let Some(t) = tensors.get(name) else {
                bail!("momentum encoder state lacks `{name}`")
            };
            target.set(t)?;
        }
        Ok(())
    }
}

/// BYOL's cosine schedule of the momentum towards 1: `1 − (1 − m₀)·(cos(π·t/T) + 1)/2`
/// at step `t` of `T` (Grill et al. 2020, section 3.2).
pub fn cosine_momentum(base: f64, step: usize, total: usize) -> f64 {
    let progress = (step as f64 / total.max(1) as f64).min(1.0);
    1.0 - (1.0 - base) * ((std::f64::consts::PI * progress).cos() + 1.0) / 2.0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::Init;

    fn map(values: &[(&str, f32)]) -> VarMap {
        let vm = VarMap::new();
        for (name, v) in values {
            vm.get(
                (2,),
                name,
                Init::Const(f64::from(*v)),
                DType::F32,
                &Device::Cpu,
            )
            .unwrap();
        }
        vm
    }

    fn value(vm: &VarMap, name: &str) -> f32 {
        vm.data().lock().unwrap()[name]
            .as_tensor()
            .to_vec1::<f32>()
            .unwrap()[0]
    }

    #[test]
    fn starts_equal_then_follows_the_ema_formula() {
        let source = map(&[("w", 2.0), ("bn.running_mean", 5.0)]);
        let target = map(&[("w", -7.0), ("bn.running_mean", -7.0)]);
        let ema = MomentumEncoder::new(&source, &target).unwrap();
        assert_eq!(value(&target, "w"), 2.0);
        assert_eq!(value(&target, "bn.running_mean"), 5.0);
        source.data().lock().unwrap()["w"]
            .set(&Tensor::new(&[4.0f32, 4.0], &Device::Cpu).unwrap())
            .unwrap();
        target.data().lock().unwrap()["bn.running_mean"]
            .set(&Tensor::new(&[1.0f32, 1.0], &Device::Cpu).unwrap())
            .unwrap();
        ema.update(0.75).unwrap();
        assert!((value(&target, "w") - (0.75 * 2.0 + 0.25 * 4.0)).abs() < 1e-6);
        assert_eq!(
            value(&target, "bn.running_mean"),
            1.0,
            "running stats are not averaged"
        );
        ema.update(1.0).unwrap();
        assert!(
            (value(&target, "w") - 2.5).abs() < 1e-6,
            "m = 1 freezes the target"
        );
        assert!(ema.update(1.01).is_err());
        assert!(ema.update(-0.5).is_err());
    }

    #[test]
    fn mismatched_models_are_errors_and_state_round_trips() {
        assert!(MomentumEncoder::new(&map(&[("a", 1.0)]), &map(&[("b", 1.0)])).is_err());
        let (source, target) = (map(&[("a", 1.0)]), map(&[("a", 0.0)]));
        let ema = MomentumEncoder::new(&source, &target).unwrap();
        let saved: HashMap<String, Tensor> = ema
            .tensors()
            .into_iter()
            .map(|(n, t)| (n, t.copy().unwrap()))
            .collect();
        ema.update(0.0).unwrap();
        source.data().lock().unwrap()["a"]
            .set(&Tensor::new(&[9.0f32, 9.0], &Device::Cpu).unwrap())
            .unwrap();
        ema.update(0.0).unwrap();
        assert_eq!(value(&target, "a"), 9.0);
        ema.load(&saved).unwrap();
        assert_eq!(value(&target, "a"), 1.0);
        assert!(ema.load(&HashMap::new()).is_err());
    }

    #[test]
    fn cosine_schedule_runs_from_base_to_one() {
        assert!((cosine_momentum(0.99, 0, 100) - 0.99).abs() < 1e-12);
        assert!((cosine_momentum(0.99, 50, 100) - 0.995).abs() < 1e-12);
        assert!((cosine_momentum(0.99, 100, 100) - 1.0).abs() < 1e-12);
        assert!((cosine_momentum(0.99, 500, 100) - 1.0).abs() < 1e-12);
    }
}
