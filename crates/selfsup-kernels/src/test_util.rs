//! Shared helpers of the kernel tests.
use candle_core::backprop::GradStore;
use candle_core::{Device, Result, Tensor, Var};

/// Deterministic values in [-1, 1) from a 64-bit LCG.
pub(crate) fn rand(shape: &[usize], seed: u64) -> Result<Tensor> {
    let mut s = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    Tensor::from_vec(v, shape, &Device::Cpu)
}

/// max |a - b| / max |b|.
pub(crate) fn rel_err(a: &Tensor, b: &Tensor) -> Result<f32> {
    assert_eq!(a.dims(), b.dims());
    let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
    let scale = b.abs()?.max_all()?.to_scalar::<f32>()?.max(1e-12);
    Ok(diff / scale)
}

/// Asserts that the gradients `a` and `b` of every named variable exist and
/// agree within 1e-4 relative.
#[allow(clippy::panic)]
pub(crate) fn assert_same_grads(
    (a, b): (&GradStore, &GradStore),
    vars: &[(&str, &Var)],
    case: &str,
) {
    for (name, v) in vars {
        let (Some(p), Some(q)) = (a.get(v), b.get(v)) else {
            panic!("missing {name} gradient for {case}")
        };
        let err = rel_err(p, q).unwrap_or(f32::INFINITY);
        assert!(err < 1e-4, "grad {name} {case}: {err}");
    }
}
