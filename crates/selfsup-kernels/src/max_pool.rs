//! Overlapping 2-D max-pooling with padding, as PyTorch's `MaxPool2d`, with
//! an exact backward: a plane-parallel CPU op, and a composed fallback.

use candle_core::{bail, CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::batch_norm_kernels::contiguous_data;
use crate::profile;
use crate::zeros::zeros;

/// Max-pooling over the last two dims with a square `kernel`, `stride` and
/// `padding`, as PyTorch's `MaxPool2d` with `ceil_mode=False`: padded cells
/// never win, and every window holds at least one real cell.
///
/// On the CPU with `f32`, one custom op pools each of the `N * C` planes in
/// parallel. Its backward recomputes each window's argmax from the saved
/// input and adds the output gradient there (`+=`, as windows overlap).
/// Where several cells tie for the maximum, the first in row-major order
/// wins and gets the whole gradient, and a NaN wins over numbers, as in
/// PyTorch. The backward is not differentiable again.
///
/// On other devices or dtypes this is composed from `cat`, `narrow`,
/// `reshape` and `maximum`, which all have a backward; there, tied maxima
/// split the gradient between them (candle's `maximum` backward).
///
/// candle's own `max_pool2d` has no padding, and its backward is only right
/// when kernel == stride; the 3x3/s2/p1 pool of the ResNet stem (He et al.,
/// 2016) needs both.
///
/// # Shapes
///
/// - `x`: `(N, C, H, W)`, any strides.
/// - returns: `(N, C, H', W')` with `H' = (H + 2 * padding - kernel) / stride + 1`,
///   rounded down, and likewise `W'`.
///
/// # Errors
///
/// Fails if `x` is not rank 4, if `kernel` or `stride` is zero, if
/// `padding > kernel / 2`, or if the padded input is smaller than the kernel.
pub fn max_pool2d(x: &Tensor, kernel: usize, stride: usize, padding: usize) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let pool = MaxPool {
        kernel,
        stride,
        padding,
    };
    pool.out_len(h, 2)?;
    pool.out_len(w, 3)?;
    if !x.device().is_cpu() || x.dtype() != DType::F32 {
        return max_pool2d_composed(x, kernel, stride, padding);
    }
    x.contiguous()?.apply_op1(pool)
}

/// The pooling parameters; also the CPU forward op on a contiguous
/// `(N, C, H, W)` input.
#[derive(Debug, Clone, Copy)]
struct MaxPool {
    kernel: usize,
    stride: usize,
    padding: usize,
}

impl MaxPool {
    /// The output length of an input axis `dim` of length `len`, after
    /// checking the parameters.
    fn out_len(&self, len: usize, dim: usize) -> Result<usize> {
        let MaxPool {
            kernel,
            stride,
            padding,
        } = *self;
        if kernel == 0 || stride == 0 {
            bail!("max-pool kernel ({kernel}) and stride ({stride}) must be positive")
        }
        if padding > kernel / 2 {
            bail!("max-pool padding ({padding}) must be at most half the kernel ({kernel})")
        }
        if len + 2 * padding < kernel {
            bail!(
                "max-pool input of size {len} along dim {dim} is smaller than the kernel \
                 ({kernel}) with padding {padding}"
            )
        }
        Ok((len + 2 * padding - kernel) / stride + 1)
    }

    /// The input and output plane sizes `(h, w, oh, ow)` of a layout.
    fn plane_dims(&self, l: &Layout) -> Result<(usize, usize, usize, usize)> {
        let &[_, _, h, w] = l.dims() else {
            bail!("max-pool: expected (N, C, H, W), got {:?}", l.dims())
        };
        Ok((h, w, self.out_len(h, 2)?, self.out_len(w, 3)?))
    }

    /// The real cells `lo..hi` that window `i` covers along an axis of
    /// length `len`.
    fn window(&self, i: usize, len: usize) -> std::ops::Range<usize> {
        let start = i * self.stride;
        start.saturating_sub(self.padding)..(start + self.kernel - self.padding).min(len)
    }

    /// The flat index in a `(h, w)` plane of the maximum of window `(i, j)`:
    /// the first in row-major order, or a NaN, as PyTorch's kernel picks it.
    fn argmax(&self, plane: &[f32], (h, w): (usize, usize), i: usize, j: usize) -> usize {
        let (rows, cols) = (self.window(i, h), self.window(j, w));
        let mut best = (f32::NEG_INFINITY, rows.start * w + cols.start);
        for y in rows {
            let first = y * w + cols.start;
            for (at, &v) in (first..).zip(&plane[first..y * w + cols.end]) {
                if v > best.0 || v.is_nan() {
                    best = (v, at);
                }
            }
        }
        best.1
    }
}

impl CustomOp1 for MaxPool {
    fn name(&self) -> &'static str {
        "selfsup-max-pool2d"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let _t = profile::scope("maxpool.fwd");
        let x = contiguous_data(s, l, "max-pool")?;
        let (h, w, oh, ow) = self.plane_dims(l)?;
        let mut y = zeros(x.len() / (h * w) * oh * ow);
        y.par_chunks_mut(oh * ow)
            .zip(x.par_chunks(h * w))
            .for_each(|(out, plane)| {
                for (k, o) in out.iter_mut().enumerate() {
                    *o = plane[self.argmax(plane, (h, w), k / ow, k % ow)];
                }
            });
        let (n, c) = (l.dims()[0], l.dims()[1]);
        Ok((CpuStorage::F32(y), Shape::from((n, c, oh, ow))))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let dx = x
            .detach()
            .apply_op2_no_bwd(&dy.contiguous()?, &MaxPoolBackward(*self))?;
        Ok(Some(dx))
    }
}

/// The input gradient on contiguous `(x, dy)`: each output gradient added to
/// its window's argmax in `x`.
struct MaxPoolBackward(MaxPool);

impl CustomOp2 for MaxPoolBackward {
    fn name(&self) -> &'static str {
        "selfsup-max-pool2d-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let _t = profile::scope("maxpool.bwd");
        let pool = &self.0;
        let (h, w, oh, ow) = pool.plane_dims(l1)?;
        if l2.dims() != [l1.dims()[0], l1.dims()[1], oh, ow] {
            bail!(
                "max-pool backward: x {:?} and dy {:?}",
                l1.dims(),
                l2.dims()
            )
        }
        let x = contiguous_data(s1, l1, "max-pool")?;
        let dy = contiguous_data(s2, l2, "max-pool")?;
        let mut dx = zeros(x.len());
        dx.par_chunks_mut(h * w)
            .zip(x.par_chunks(h * w).zip(dy.par_chunks(oh * ow)))
            .for_each(|(grad, (plane, dout))| {
                for (k, &g) in dout.iter().enumerate() {
                    grad[pool.argmax(plane, (h, w), k / ow, k % ow)] += g;
                }
            });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

/// The same pooling composed from candle ops (the fallback, and a reference
/// for the tests). The window is separable, so it pools along the width,
/// then along the height.
pub(crate) fn max_pool2d_composed(
    x: &Tensor,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Result<Tensor> {
    let pool = MaxPool {
        kernel,
        stride,
        padding,
    };
    let x = pool_axis(x, 3, pool)?;
    pool_axis(&x, 2, pool)
}

/// Max-pooling along axis `dim` of `x`. For each of the `kernel` offsets, the
/// strided subsample is a `narrow` of length `stride * out`, a reshape to
/// `(out, stride)` and a `narrow` of the first column; the offsets are
/// combined with `maximum`.
fn pool_axis(x: &Tensor, dim: usize, pool: MaxPool) -> Result<Tensor> {
    let MaxPool {
        kernel,
        stride,
        padding,
    } = pool;
    let len = x.dim(dim)?;
    let out = pool.out_len(len, dim)?;
    // Every offset reads `stride * out` cells starting at `offset`, so the
    // padded axis must be at least `kernel - 1 + stride * out` long.
    let after = (kernel - 1 + stride * out).saturating_sub(len + padding);
    let padded = pad_lowest(x, dim, padding, after)?;
    let mut dims = padded.dims().to_vec();
    dims[dim] = out;
    dims.insert(dim + 1, stride);
    let mut pooled: Option<Tensor> = None;
    for offset in 0..kernel {
        let taps = padded
            .narrow(dim, offset, stride * out)?
            .reshape(dims.as_slice())?
            .narrow(dim + 1, 0, 1)?
            .squeeze(dim + 1)?;
        pooled = Some(match pooled {
            None => taps,
            Some(acc) => acc.maximum(&taps)?,
        });
    }
    match pooled {
        Some(p) => Ok(p),
        None => bail!("max-pool kernel must be positive"),
    }
}

/// Pads `dim` of `x` with `before` and `after` cells holding the lowest finite
/// `f32`, which no real activation beats.
pub(crate) fn pad_lowest(x: &Tensor, dim: usize, before: usize, after: usize) -> Result<Tensor> {
    let block = |n: usize| -> Result<Tensor> {
        let mut dims = x.dims().to_vec();
        dims[dim] = n;
        Tensor::full(f32::MIN, dims, x.device())?.to_dtype(x.dtype())
    };
    let mut parts = Vec::with_capacity(3);
    if before > 0 {
        parts.push(block(before)?);
    }
    parts.push(x.clone());
    if after > 0 {
        parts.push(block(after)?);
    }
    Tensor::cat(&parts, dim)
}
