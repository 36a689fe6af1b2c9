//! The memory format of 4-D activations: channels first (`(N, C, H, W)`,
//! candle's and PyTorch's default) or channels last (`(N, H, W, C)`, PyTorch's
//! `channels_last`).
//!
//! Channels last is the CPU kernels' native order: a convolution's patches are
//! then contiguous runs of the input and its gemm writes the output in place,
//! with no transpose on either side, and batch norm works on rows of `C`
//! values, whatever the spatial size.

use candle_core::{bail, CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::zeros::zeros;

/// The order of the dims of a 4-D activation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MemoryFormat {
    /// `(N, C, H, W)`.
    #[default]
    Nchw,
    /// `(N, H, W, C)`.
    Nhwc,
}

impl MemoryFormat {
    /// The faster format for the kernels that run on `x`: channels last for
    /// `f32` on the CPU (this crate's kernels), channels first otherwise
    /// (candle's).
    pub fn native(x: &Tensor) -> Self {
        if x.device().is_cpu() && x.dtype() == DType::F32 {
            Self::Nhwc
        } else {
            Self::Nchw
        }
    }

    /// The dims of an `(n, c, h, w)` activation in this format.
    pub fn dims(self, (n, c, h, w): (usize, usize, usize, usize)) -> [usize; 4] {
        match self {
            Self::Nchw => [n, c, h, w],
            Self::Nhwc => [n, h, w, c],
        }
    }

    /// `(N, C, H, W)` of a 4-D tensor in this format.
    ///
    /// # Errors
    /// Fails when `x` is not 4-D.
    pub fn nchw_dims(self, x: &Tensor) -> Result<(usize, usize, usize, usize)> {
        let (a, b, c, d) = x.dims4()?;
        Ok(match self {
            Self::Nchw => (a, b, c, d),
            Self::Nhwc => (a, d, b, c),
        })
    }

    /// The index of the channel dim.
    pub fn channel_dim(self) -> usize {
        match self {
            Self::Nchw => 1,
            Self::Nhwc => 3,
        }
    }

    /// An `(N, C, H, W)` tensor in this format, contiguous.
    ///
    /// # Errors
    /// Fails when `x` is not 4-D.
    pub fn from_nchw(self, x: &Tensor) -> Result<Tensor> {
        self.reorder(x, (0, 2, 3, 1))
    }

    /// A tensor in this format as `(N, C, H, W)`, contiguous.
    ///
    /// # Errors
    /// Fails when `x` is not 4-D.
    pub fn to_nchw(self, x: &Tensor) -> Result<Tensor> {
        self.reorder(x, (0, 3, 1, 2))
    }

    /// `x` itself for channels first, else `x` permuted by `dims`, contiguous:
    /// by [`Reorder`] for `f32` on the CPU, else by candle.
    fn reorder(self, x: &Tensor, dims: (usize, usize, usize, usize)) -> Result<Tensor> {
        if x.rank() != 4 {
            bail!("memory format: expected a 4-D tensor, got {:?}", x.dims())
        }
        match self {
            Self::Nchw => Ok(x.clone()),
            Self::Nhwc if x.device().is_cpu() && x.dtype() == DType::F32 => {
                let to_last = dims == (0, 2, 3, 1);
                x.contiguous()?.apply_op1(Reorder { to_last })
            }
            Self::Nhwc => x.permute(dims)?.contiguous(),
        }
    }
}

/// `(N, C, H, W)` to `(N, H, W, C)` (`to_last`) or back, on a contiguous
/// tensor: a transpose of each sample, in parallel over the samples. Its
/// backward is the other direction. (candle's permute and copy run on one
/// thread, element by element, and so does the strided add that its
/// backward then needs.)
struct Reorder {
    to_last: bool,
}

impl CustomOp1 for Reorder {
    fn name(&self) -> &'static str {
        "selfsup-reorder"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let Some((start, end)) = l.contiguous_offsets() else {
            bail!("memory format: expected a contiguous tensor")
        };
        let x = &s.as_slice::<f32>()?[start..end];
        let &[n, d1, d2, d3] = l.dims() else {
            bail!("memory format: expected a 4-D tensor, got {:?}", l.dims())
        };
        // Each sample is a (rows, cols) matrix to transpose.
        let ((rows, cols), dims) = if self.to_last {
            ((d1, d2 * d3), [n, d2, d3, d1])
        } else {
            ((d1 * d2, d3), [n, d3, d1, d2])
        };
        let mut out = zeros(x.len());
        if rows * cols > 0 {
            out.par_chunks_mut(rows * cols)
                .zip(x.par_chunks(rows * cols))
                .for_each(|(dst, src)| {
                    for (r, line) in src.chunks_exact(cols).enumerate() {
                        let column = dst[r..].iter_mut().step_by(rows);
                        column.zip(line).for_each(|(d, v)| *d = *v);
                    }
                });
        }
        Ok((CpuStorage::F32(out), Shape::from(&dims)))
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let back = Reorder {
            to_last: !self.to_last,
        };
        Ok(Some(dy.contiguous()?.apply_op1(back)?))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn round_trip_and_dims() {
        let x = Tensor::arange(0f32, 120.0, &Device::Cpu)
            .unwrap()
            .reshape((2, 3, 4, 5))
            .unwrap();
        let f = MemoryFormat::Nhwc;
        let y = f.from_nchw(&x).unwrap();
        assert_eq!(y.dims(), f.dims((2, 3, 4, 5)));
        assert_eq!(f.nchw_dims(&y).unwrap(), (2, 3, 4, 5));
        // (n, h, w, c) of the channels-last tensor is (n, c, h, w) of the input.
        let (n, h, w, c) = (1, 2, 3, 1);
        let v = y
            .get(n)
            .unwrap()
            .get(h)
            .unwrap()
            .get(w)
            .unwrap()
            .get(c)
            .unwrap();
        let at = ((n * 3 + c) * 4 + h) * 5 + w;
        assert_eq!(v.to_scalar::<f32>().unwrap(), at as f32);
        let back = f.to_nchw(&y).unwrap();
        let diff = (back - &x).unwrap().abs().unwrap().max_all().unwrap();
        assert_eq!(diff.to_scalar::<f32>().unwrap(), 0.0);
        assert!(f.from_nchw(&x.flatten_all().unwrap()).is_err());
        assert_eq!(MemoryFormat::native(&x), MemoryFormat::Nhwc);
        let x64 = x.to_dtype(DType::F64).unwrap();
        assert_eq!(MemoryFormat::native(&x64), MemoryFormat::Nchw);
        assert_eq!(MemoryFormat::Nchw.dims((2, 3, 4, 5)), [2, 3, 4, 5]);
    }

    /// The CPU op against candle's permute, both ways: values (also of a
    /// non-contiguous input) and gradients.
    #[test]
    fn reorder_matches_candle_permute() {
        let f = MemoryFormat::Nhwc;
        let x = Var::from_tensor(&crate::test_util::rand(&[3, 5, 4, 7], 1).unwrap()).unwrap();
        let r = crate::test_util::rand(&[3, 4, 7, 5], 2).unwrap();
        let ours = f.from_nchw(&x).unwrap();
        let theirs = x.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap();
        assert_eq!(max_diff(&ours, &theirs), 0.0);
        assert_eq!(max_diff(&f.to_nchw(&ours).unwrap(), &x), 0.0);
        let view = x.transpose(2, 3).unwrap(); // (3, 5, 7, 4), strided
        let want = view.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap();
        assert_eq!(max_diff(&f.from_nchw(&view).unwrap(), &want), 0.0);
        let grad = |y: &Tensor| {
            let g = (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            g.get(&x).unwrap().clone()
        };
        assert_eq!(max_diff(&grad(&ours), &grad(&theirs)), 0.0);
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        assert_eq!(a.dims(), b.dims());
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        d.to_scalar::<f32>().unwrap()
    }
}
