//! The memory format of 4-D activations: channels first (`(N, C, H, W)`,
//! candle's and PyTorch's default) or channels last (`(N, H, W, C)`, PyTorch's
//! `channels_last`).
//!
//! Channels last is the CPU kernels' native order: a convolution's patches are
//! then contiguous runs of the input and its gemm writes the output in place,
//! with no transpose on either side, and batch norm works on rows of `C`
//! values, whatever the spatial size.

use candle_core::{bail, DType, Result, Tensor};

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

    /// `x` itself for channels first, else `x` permuted by `dims`, contiguous.
    fn reorder(self, x: &Tensor, dims: (usize, usize, usize, usize)) -> Result<Tensor> {
        if x.rank() != 4 {
            bail!("memory format: expected a 4-D tensor, got {:?}", x.dims())
        }
        match self {
            Self::Nchw => Ok(x.clone()),
            Self::Nhwc => x.permute(dims)?.contiguous(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use candle_core::Device;

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
}
