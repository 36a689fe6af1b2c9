//! ReLU as a parallel CPU op, forward and backward.

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::batch_norm_kernels::contiguous_data;
use crate::profile;
use crate::zeros::zeros;

/// Elements per parallel task: enough to amortise rayon's scheduling.
const CHUNK: usize = 1 << 14;

/// `max(0, x)` elementwise (Nair & Hinton, 2010), in parallel chunks on the
/// CPU, with a parallel backward.
///
/// The gradient is `dy` where `y > 0` and 0 elsewhere, as PyTorch's
/// `threshold_backward`; candle's own `relu` also lets the gradient through
/// where `x` is exactly 0 (both are subgradients). The backward is linear in
/// `dy` and differentiable again with respect to it.
///
/// On devices other than the CPU, or for dtypes other than `f32`, this is
/// candle's `x.relu()`.
///
/// # Shapes
///
/// - `x`: any shape, any strides.
/// - returns: the same shape, contiguous.
///
/// # Errors
///
/// Only candle's own errors (for example when copying a strided `x` fails).
pub fn relu(x: &Tensor) -> Result<Tensor> {
    if !x.device().is_cpu() || x.dtype() != DType::F32 {
        return x.relu();
    }
    x.contiguous()?.apply_op1(Relu)
}

/// `max(0, a + b)` elementwise, as one op: a residual block's sum and ReLU
/// (He et al. 2016). Apart, the sum is a node of candle's graph of its own,
/// whose gradient candle adds into a fresh zero tensor; fused, the masked
/// gradient goes straight to both inputs. The values and the gradient are
/// those of [`relu`] of `a + b`.
///
/// On devices other than the CPU, or for dtypes other than `f32`, this is
/// candle's `(a + b).relu()`.
///
/// # Shapes
///
/// - `a`, `b`: the same shape, any strides.
/// - returns: that shape, contiguous.
///
/// # Errors
///
/// Fails when the shapes differ.
pub fn add_relu(a: &Tensor, b: &Tensor) -> Result<Tensor> {
    if a.dims() != b.dims() {
        bail!("add_relu: shapes {:?} and {:?} differ", a.dims(), b.dims())
    }
    if !a.device().is_cpu() || a.dtype() != DType::F32 || b.dtype() != DType::F32 {
        return (a + b)?.relu();
    }
    a.contiguous()?.apply_op2(&b.contiguous()?, AddRelu)
}

/// `max(0, a + b)` on contiguous `(a, b)`.
struct AddRelu;

impl CustomOp2 for AddRelu {
    fn name(&self) -> &'static str {
        "selfsup-add-relu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let _t = profile::scope("relu.fwd");
        let (a, b) = (
            contiguous_data(s1, l1, "add_relu")?,
            contiguous_data(s2, l2, "add_relu")?,
        );
        let y = zip_map(a, b, |u, v| (u + v).max(0.0));
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = y.detach().apply_op2(&dy.contiguous()?, ReluMask)?;
        Ok((a.track_op().then(|| g.clone()), b.track_op().then_some(g)))
    }
}

/// `out[i] = f(a[i], b[i])` for equally long `a` and `b`, in parallel chunks.
fn zip_map(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    let mut out = zeros(a.len());
    out.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(out, (a, b))| {
            for ((o, &u), &v) in out.iter_mut().zip(a).zip(b) {
                *o = f(u, v);
            }
        });
    out
}

/// `max(0, x)` on a contiguous `x`.
struct Relu;

impl CustomOp1 for Relu {
    fn name(&self) -> &'static str {
        "selfsup-relu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let _t = profile::scope("relu.fwd");
        let x = contiguous_data(s, l, "relu")?;
        // `f32::max` as candle's relu, so the values are the same bits.
        let y = zip_map(x, x, |v, _| v.max(0.0));
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(y.detach().apply_op2(&dy.contiguous()?, ReluMask)?))
    }
}

/// `dy` where `y > 0`, else 0, on contiguous `(y, dy)`: the ReLU's backward.
/// Linear in `dy` and its own adjoint there, so its backward is itself.
struct ReluMask;

impl CustomOp2 for ReluMask {
    fn name(&self) -> &'static str {
        "selfsup-relu-mask"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let _t = profile::scope("relu.bwd");
        if l1.dims() != l2.dims() {
            bail!("relu backward: y {:?} and dy {:?}", l1.dims(), l2.dims())
        }
        let (y, dy) = (
            contiguous_data(s1, l1, "relu")?,
            contiguous_data(s2, l2, "relu")?,
        );
        let dx = zip_map(y, dy, |y, g| if y > 0.0 { g } else { 0.0 });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }

    fn bwd(
        &self,
        y: &Tensor,
        _dy: &Tensor,
        _dx: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let masked = y.detach().apply_op2(&grad.contiguous()?, ReluMask)?;
        Ok((None, Some(masked)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::test_util::rand;
    use candle_core::Var;

    fn values(t: &Tensor) -> Vec<f32> {
        t.flatten_all().unwrap().to_vec1().unwrap()
    }

    /// Random values of both signs with every third one exactly 0.
    fn with_zeros(shape: &[usize], seed: u64) -> Result<Tensor> {
        let v: Vec<f32> = values(&rand(shape, seed)?)
            .into_iter()
            .enumerate()
            .map(|(i, v)| if i % 3 == 0 { 0.0 } else { v })
            .collect();
        Tensor::from_vec(v, shape, &candle_core::Device::Cpu)
    }

    /// Forward bits equal candle's; the gradient equals candle's except where
    /// `x == 0`, where it is 0 (PyTorch's convention).
    fn check(x: &Var, r: &Tensor) -> Result<()> {
        let ours = relu(x)?;
        let theirs = x.relu()?;
        let bits = |t: &Tensor| values(t).into_iter().map(f32::to_bits).collect::<Vec<_>>();
        assert_eq!(bits(&ours), bits(&theirs));
        let g_ours = values(
            (&ours * r)?
                .sum_all()?
                .backward()?
                .get(x)
                .expect("x gradient"),
        );
        let g_theirs = values(
            (&theirs * r)?
                .sum_all()?
                .backward()?
                .get(x)
                .expect("x gradient"),
        );
        let xs = values(x);
        assert!(xs.contains(&0.0) && xs.iter().any(|&v| v < 0.0));
        for ((&v, &a), &e) in xs.iter().zip(&g_ours).zip(&g_theirs) {
            let want = if v == 0.0 { 0.0 } else { e };
            assert_eq!(a.to_bits(), want.to_bits(), "x = {v}");
        }
        Ok(())
    }

    /// `add_relu` gives `relu(a + b)`'s bits and gradients (for both inputs),
    /// and none for an untracked input; mismatched shapes are an error.
    #[test]
    fn add_relu_is_relu_of_the_sum() -> Result<()> {
        let shape = [3, 4, 5, 7];
        let a = Var::from_tensor(&with_zeros(&shape, 1)?)?;
        let b = Var::from_tensor(&rand(&shape, 2)?)?;
        let r = rand(&shape, 3)?;
        let fused = add_relu(&a, &b)?;
        let apart = relu(&(a.as_tensor() + b.as_tensor())?)?;
        let bits = |t: &Tensor| values(t).into_iter().map(f32::to_bits).collect::<Vec<_>>();
        assert_eq!(bits(&fused), bits(&apart));
        let (gf, ga) = (
            (&fused * &r)?.sum_all()?.backward()?,
            (&apart * &r)?.sum_all()?.backward()?,
        );
        for v in [&a, &b] {
            let (Some(f), Some(e)) = (gf.get(v), ga.get(v)) else {
                panic!("missing gradient")
            };
            assert_eq!(bits(f), bits(e));
        }
        let g = add_relu(&a, &b.as_tensor().detach())?
            .sum_all()?
            .backward()?;
        assert!(g.get(&a).is_some() && g.get(&b).is_none());
        let err = add_relu(&a, &rand(&[3, 4, 5, 6], 4)?).unwrap_err();
        assert!(err.to_string().contains("differ"), "{err}");
        Ok(())
    }

    #[test]
    fn matches_candle_relu_with_zeros_and_negatives() -> Result<()> {
        for shape in [&[5, 3, 7, 2][..], &[1, 1, 3, 5], &[3 * CHUNK + 11]] {
            let x = Var::from_tensor(&with_zeros(shape, 1)?)?;
            check(&x, &rand(shape, 2)?)?;
        }
        Ok(())
    }

    #[test]
    fn matches_candle_relu_on_a_strided_input() -> Result<()> {
        let base = Var::from_tensor(&with_zeros(&[4, 3, 5, 6], 3)?)?;
        let x = base.transpose(0, 1)?.narrow(3, 1, 4)?;
        assert!(!x.is_contiguous());
        let r = rand(x.dims(), 4)?;
        let ours = relu(&x)?;
        assert_eq!(values(&ours), values(&x.relu()?));
        let g = (&ours * &r)?.sum_all()?.backward()?;
        let mask = x.detach().gt(0.0)?.to_dtype(DType::F32)?;
        // The reference gradient, placed back into `base`'s layout.
        let expected = (&r * mask)?.pad_with_zeros(3, 1, 1)?.transpose(0, 1)?;
        assert_eq!(
            values(g.get(&base).expect("base gradient")),
            values(&expected)
        );
        Ok(())
    }

    #[test]
    fn backward_is_differentiable_in_dy() -> Result<()> {
        let y = relu(&with_zeros(&[3, 4, 5], 5)?)?;
        let dy = Var::from_tensor(&rand(&[3, 4, 5], 6)?)?;
        let r = rand(&[3, 4, 5], 7)?;
        let dx = y.apply_op2(&dy, ReluMask)?;
        let g = (dx * &r)?.sum_all()?.backward()?;
        let expected = (&r * y.gt(0.0)?.to_dtype(DType::F32)?)?;
        assert_eq!(values(g.get(&dy).expect("dy gradient")), values(&expected));
        Ok(())
    }

    #[test]
    fn other_dtypes_fall_back_to_candle() -> Result<()> {
        let x = with_zeros(&[2, 3], 8)?.to_dtype(DType::F64)?;
        assert_eq!(relu(&x)?.to_vec2::<f64>()?, x.relu()?.to_vec2::<f64>()?);
        Ok(())
    }
}
