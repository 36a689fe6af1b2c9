//! Helpers shared by the model tests.

use candle_core::{bail, Device, Error, Result, Tensor};
use candle_nn::VarMap;
use selfsup_data::Rng;

/// A standard-normal tensor of `shape`, seeded.
pub(crate) fn random_input(shape: &[usize], seed: u64) -> Result<Tensor> {
    let mut rng = Rng::new(seed);
    let n = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.normal() as f32).collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
}

/// The sorted variable names of `varmap`.
pub(crate) fn var_names(varmap: &VarMap) -> Result<Vec<String>> {
    let vars = varmap
        .data()
        .lock()
        .map_err(|e| Error::Msg(e.to_string()))?;
    let mut names: Vec<String> = vars.keys().cloned().collect();
    names.sort();
    Ok(names)
}

/// Backpropagates the sum of squares of `features` and checks that every
/// trainable variable of `varmap` (all but the batch-norm running statistics)
/// gets a gradient that exists, is finite and is not all zeros. Returns how
/// many variables were checked.
pub(crate) fn assert_trainable_grads(varmap: &VarMap, features: &Tensor) -> Result<usize> {
    let grads = features.sqr()?.sum_all()?.backward()?;
    let vars = varmap
        .data()
        .lock()
        .map_err(|e| Error::Msg(e.to_string()))?;
    let mut checked = 0;
    for (name, var) in vars.iter() {
        if name.ends_with("running_mean") || name.ends_with("running_var") {
            continue;
        }
        let Some(g) = grads.get(var.as_tensor()) else {
            bail!("no gradient for {name}")
        };
        let g: Vec<f32> = g.flatten_all()?.to_vec1()?;
        if g.iter().any(|v| !v.is_finite()) {
            bail!("non-finite gradient for {name}")
        }
        if g.iter().all(|v| *v == 0.0) {
            bail!("all-zero gradient for {name}")
        }
        checked += 1;
    }
    Ok(checked)
}
