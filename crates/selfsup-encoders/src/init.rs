//! Seeded weight initialisation.
//!
//! candle's CPU random generator cannot be seeded, so [`seeded_var_builder`]
//! samples every new variable on the host from a [`selfsup_data::Rng`] stream
//! derived from `(seed, FNV-1a hash of the variable name)`. The values of a
//! variable therefore depend only on the seed, its name, its shape and its
//! init hint, not on the order in which variables are created.

use std::collections::HashMap;
use std::sync::MutexGuard;

use candle_core::{bail, DType, Device, Error, Result, Shape, Tensor, Var};
use candle_nn::init::NormalOrUniform;
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use selfsup_data::Rng;

/// A [`VarBuilder`] that stores its variables in `varmap` and initialises the
/// missing ones deterministically from `seed`.
///
/// Variables already in `varmap` are returned as they are (after a shape
/// check), so loading a checkpoint into the map first and then building the
/// model reuses the loaded values. New variables are sampled from the init
/// hint that the layer passes (`Const`, `Randn`, `Uniform` or `Kaiming`, with
/// the same fan and gain rules as [`candle_nn::Init::var`]), on the host, then
/// moved to `device`. The same seed gives bit-identical weights on every run.
///
/// # Shapes
/// Each variable gets the shape that the layer asks for.
///
/// # Errors
/// Building a model with the returned builder fails when a variable already in
/// `varmap` has a different shape from the one requested, or when the tensor
/// cannot be created on `device`.
pub fn seeded_var_builder(
    varmap: &VarMap,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> VarBuilder<'static> {
    let backend = SeededBackend {
        varmap: varmap.clone(),
        seed,
    };
    VarBuilder::from_backend(Box::new(backend), dtype, device.clone())
}

/// PyTorch's default weight init for `nn.Conv2d` and `nn.Linear`
/// (`kaiming_uniform_(a=√5)`): U(−1/√fan_in, 1/√fan_in).
///
/// Its variance, 1/(3·fan_in), is a sixth of Kaiming-normal's. Under batch norm
/// the scale of a conv weight sets its effective learning rate (∝ lr/‖w‖²), so
/// the init scale matters as much as the learning rate in short runs.
pub fn torch_default_init(fan_in: usize) -> Init {
    let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// A linear layer with PyTorch's `nn.Linear` init: weight `(output_dim, input_dim)` and
/// bias both from U(±1/√input_dim) ([`torch_default_init`]). candle-nn's `linear`
/// draws the weight from Kaiming-normal instead, √6 times wider, which under a
/// following batch norm or L2 normalisation slows learning six-fold.
///
/// # Errors
/// If `vb` cannot provide the variables.
pub fn torch_linear(
    input_dim: usize,
    output_dim: usize,
    vb: candle_nn::VarBuilder,
) -> Result<candle_nn::Linear> {
    let init = torch_default_init(input_dim);
    let weight = vb.get_with_hints((output_dim, input_dim), "weight", init)?;
    let bias = vb.get_with_hints(output_dim, "bias", init)?;
    Ok(candle_nn::Linear::new(weight, Some(bias)))
}

/// torchvision's ResNet conv init (He et al. 2015): `kaiming_normal_(mode="fan_out",
/// nonlinearity="relu")`, i.e. N(0, 2/fan_out).
pub const TORCHVISION_CONV_INIT: Init = Init::Kaiming {
    dist: NormalOrUniform::Normal,
    fan: candle_nn::init::FanInOut::FanOut,
    non_linearity: candle_nn::init::NonLinearity::ReLU,
};

/// The [`SimpleBackend`] behind [`seeded_var_builder`].
struct SeededBackend {
    varmap: VarMap,
    seed: u64,
}

impl SeededBackend {
    fn lock(&self) -> Result<MutexGuard<'_, HashMap<String, Var>>> {
        self.varmap
            .data()
            .lock()
            .map_err(|_| Error::Msg("the VarMap lock is poisoned".to_string()))
    }
}

impl SimpleBackend for SeededBackend {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut vars = self.lock()?;
        if let Some(var) = vars.get(name) {
            if var.shape() != &s {
                bail!(
                    "shape mismatch on {name}: requested {s:?}, the VarMap holds {:?}",
                    var.shape()
                )
            }
            return Ok(var.as_tensor().clone());
        }
        let mut rng = Rng::derive(self.seed, &[fnv1a(name)]);
        let values = sample(&h, &s, &mut rng);
        let host = Tensor::from_vec(values, s, &Device::Cpu)?.to_dtype(dtype)?;
        let var = Var::from_tensor(&host.to_device(dev)?)?;
        let tensor = var.as_tensor().clone();
        vars.insert(name.to_string(), var);
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        let vars = self.lock()?;
        match vars.get(name) {
            Some(var) => var.as_tensor().to_dtype(dtype)?.to_device(dev),
            None => Err(Error::CannotFindTensor {
                path: name.to_string(),
            }
            .bt()),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.lock().is_ok_and(|vars| vars.contains_key(name))
    }
}

/// Samples `shape.elem_count()` values for the init hint `init`.
fn sample(init: &Init, shape: &Shape, rng: &mut Rng) -> Vec<f64> {
    let n = shape.elem_count();
    let normal = |rng: &mut Rng, mean: f64, std: f64| -> Vec<f64> {
        (0..n).map(|_| mean + std * rng.normal()).collect()
    };
    let uniform = |rng: &mut Rng, lo: f64, up: f64| -> Vec<f64> {
        (0..n).map(|_| rng.uniform(lo, up)).collect()
    };
    match *init {
        Init::Const(c) => vec![c; n],
        Init::Randn { mean, stdev } => normal(rng, mean, stdev),
        Init::Uniform { lo, up } => uniform(rng, lo, up),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
            match dist {
                NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    uniform(rng, -bound, bound)
                }
                NormalOrUniform::Normal => normal(rng, 0.0, std),
            }
        }
    }
}

/// 64-bit FNV-1a hash of a variable name.
fn fnv1a(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn values(varmap: &VarMap, name: &str) -> Result<Vec<f32>> {
        let vars = varmap
            .data()
            .lock()
            .map_err(|e| Error::Msg(e.to_string()))?;
        match vars.get(name) {
            Some(var) => var.as_tensor().flatten_all()?.to_vec1(),
            None => bail!("no variable {name}"),
        }
    }

    #[test]
    fn fnv1a_matches_reference_vectors() {
        // Reference values of the 64-bit FNV-1a hash.
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn values_depend_on_name_not_creation_order() -> Result<()> {
        let (a, b) = (VarMap::new(), VarMap::new());
        let vba = seeded_var_builder(&a, 3, DType::F32, &Device::Cpu);
        let vbb = seeded_var_builder(&b, 3, DType::F32, &Device::Cpu);
        let hint = candle_nn::init::DEFAULT_KAIMING_NORMAL;
        vba.get_with_hints((4, 5), "x", hint)?;
        vba.get_with_hints((4, 5), "y", hint)?;
        vbb.get_with_hints((4, 5), "y", hint)?;
        vbb.get_with_hints((4, 5), "x", hint)?;
        assert_eq!(values(&a, "x")?, values(&b, "x")?);
        assert_eq!(values(&a, "y")?, values(&b, "y")?);
        assert_ne!(values(&a, "x")?, values(&a, "y")?);
        Ok(())
    }

    #[test]
    fn existing_vars_are_reused_and_shapes_checked() -> Result<()> {
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
        let first = vb.get_with_hints(3, "w", Init::Const(2.0))?;
        let again = vb.get_with_hints(3, "w", Init::Const(5.0))?;
        assert_eq!(first.to_vec1::<f32>()?, again.to_vec1::<f32>()?);
        assert!(vb.get_with_hints(4, "w", Init::Const(2.0)).is_err());
        assert!(vb.contains_tensor("w"));
        assert!(!vb.contains_tensor("v"));
        Ok(())
    }

    #[test]
    fn hints_have_the_right_statistics() -> Result<()> {
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, 1, DType::F64, &Device::Cpu);
        let mean_std = |t: Tensor| -> Result<(f64, f64)> {
            let v: Vec<f64> = t.flatten_all()?.to_vec1()?;
            let m = v.iter().sum::<f64>() / v.len() as f64;
            let var = v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len() as f64;
            Ok((m, var.sqrt()))
        };
        // Kaiming normal, fan-in 50, ReLU gain: std = sqrt(2 / 50) = 0.2.
        let k = vb.get_with_hints((400, 2, 5, 5), "k", candle_nn::init::DEFAULT_KAIMING_NORMAL)?;
        let (m, s) = mean_std(k)?;
        assert!(m.abs() < 0.01 && (s - 0.2).abs() < 0.01, "{m} {s}");
        let u = vb.get_with_hints(20000, "u", Init::Uniform { lo: 1.0, up: 3.0 })?;
        let (m, s) = mean_std(u.clone())?;
        assert!((m - 2.0).abs() < 0.02 && (s - 1.0 / 3f64.sqrt()).abs() < 0.02);
        assert!(u.min(0)?.to_scalar::<f64>()? >= 1.0 && u.max(0)?.to_scalar::<f64>()? < 3.0);
        let c = vb.get_with_hints(3, "c", Init::Const(0.5))?;
        assert_eq!(c.to_vec1::<f64>()?, vec![0.5; 3]);
        Ok(())
    }
}
