//! im2col and col2im as candle custom ops (CPU, `f32`).
//!
//! The column matrix has shape `(C * kh * kw, N * Ho * Wo)`: row
//! `(c * kh + i) * kw + j` holds, for every output pixel `(n, oh, ow)`, the
//! input value under kernel tap `(i, j)` of channel `c` (zero in the padding).
//! With this layout a convolution is one matmul `W(O, C*kh*kw) @ cols`.

use candle_core::{bail, CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

pub use crate::geometry::ConvGeometry;
use crate::profile;

/// Gathers convolution patches: `(N, C, H, W)` to `(C*kh*kw, N*Ho*Wo)`.
///
/// The input may have any strides (for example a transposed view); nothing
/// is copied first. The backward pass is [`col2im`].
///
/// # Shapes
///
/// - `x`: `(N, C, H, W)` matching `geom.input_shape()`.
/// - returns: `geom.cols_shape()`.
///
/// # Errors
///
/// Fails when `x` does not match the geometry, is not `f32`, or is not on
/// the CPU.
pub fn im2col(x: &Tensor, geom: ConvGeometry) -> Result<Tensor> {
    x.apply_op1(Im2Col(geom))
}

/// Scatter-adds columns back into an image: the adjoint of [`im2col`].
///
/// Overlapping patches are summed. The backward pass is [`im2col`].
///
/// # Shapes
///
/// - `cols`: `geom.cols_shape()`.
/// - returns: `(N, C, H, W)` = `geom.input_shape()`, contiguous.
///
/// # Errors
///
/// Fails when `cols` does not match the geometry, is not `f32`, or is not on
/// the CPU.
pub fn col2im(cols: &Tensor, geom: ConvGeometry) -> Result<Tensor> {
    cols.contiguous()?.apply_op1(Col2Im(geom))
}

struct Im2Col(ConvGeometry);

impl CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "selfsup-im2col"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let _t = profile::scope("im2col");
        let g = self.0;
        let (n, c, h, w) = g.input_shape();
        if layout.dims() != [n, c, h, w] {
            bail!(
                "im2col: input shape {:?} does not match {:?}",
                layout.dims(),
                (n, c, h, w)
            )
        }
        let x = storage.as_slice::<f32>()?;
        let st = layout.stride();
        let (sn, sc, sh, sw) = (st[0], st[1], st[2], st[3]);
        let off = layout.start_offset();
        let (rows, len) = g.cols_shape();
        let (ho, wo, s, p) = (g.ho, g.wo, g.stride, g.padding);
        let mut out = vec![0f32; rows * len];
        // One task per channel keeps each input plane in cache while all of
        // its taps are gathered; with few channels, one task per row instead.
        let per_task = if c >= 2 * rayon::current_num_threads() {
            g.kh * g.kw
        } else {
            1
        };
        if len > 0 {
            out.par_chunks_mut(per_task * len)
                .enumerate()
                .for_each(|(task, block)| {
                    for ni in 0..n {
                        for (i, row) in block.chunks_exact_mut(len).enumerate() {
                            let (ci, ki, kj) = g.split_row(task * per_task + i);
                            let ows = g.valid(wo, w, kj);
                            let plane = off + ni * sn + ci * sc;
                            for oh in g.valid(ho, h, ki) {
                                let src =
                                    plane + (oh * s + ki - p) * sh + (ows.start * s + kj - p) * sw;
                                let dst = &mut row[(ni * ho + oh) * wo..][ows.clone()];
                                if sw == 1 && s == 1 {
                                    dst.copy_from_slice(&x[src..src + dst.len()]);
                                } else {
                                    let src = x[src..].iter().step_by(s * sw);
                                    for (d, v) in dst.iter_mut().zip(src) {
                                        *d = *v;
                                    }
                                }
                            }
                        }
                    }
                });
        }
        Ok((CpuStorage::F32(out), Shape::from((rows, len))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        col2im(grad_res, self.0).map(Some)
    }
}

struct Col2Im(ConvGeometry);

impl CustomOp1 for Col2Im {
    fn name(&self) -> &'static str {
        "selfsup-col2im"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let _t = profile::scope("col2im");
        let g = self.0;
        let (rows, len) = g.cols_shape();
        if layout.dims() != [rows, len] {
            bail!(
                "col2im: input shape {:?} does not match {:?}",
                layout.dims(),
                (rows, len)
            )
        }
        let Some((start, end)) = layout.contiguous_offsets() else {
            bail!("col2im: the column matrix must be contiguous")
        };
        let cols = &storage.as_slice::<f32>()?[start..end];
        let (n, c, h, w) = g.input_shape();
        let (ho, wo, s, p) = (g.ho, g.wo, g.stride, g.padding);
        let mut out = vec![0f32; n * c * h * w];
        if h * w > 0 {
            out.par_chunks_mut(h * w)
                .enumerate()
                .for_each(|(plane, dst)| {
                    let (ni, ci) = (plane / c, plane % c);
                    for ki in 0..g.kh {
                        for kj in 0..g.kw {
                            let row = &cols[((ci * g.kh + ki) * g.kw + kj) * len..][..len];
                            let ows = g.valid(wo, w, kj);
                            for oh in g.valid(ho, h, ki) {
                                let src = &row[(ni * ho + oh) * wo..][..wo];
                                let dst_row = &mut dst[(oh * s + ki - p) * w..][..w];
                                if s == 1 {
                                    let d0 = ows.start + kj - p;
                                    let d = &mut dst_row[d0..d0 + ows.len()];
                                    for (d, v) in d.iter_mut().zip(&src[ows.clone()]) {
                                        *d += v;
                                    }
                                } else {
                                    let d0 = ows.start * s + kj - p;
                                    let d = dst_row[d0..].iter_mut().step_by(s);
                                    for (d, v) in d.zip(&src[ows.clone()]) {
                                        *d += v;
                                    }
                                }
                            }
                        }
                    }
                });
        }
        Ok((CpuStorage::F32(out), Shape::from((n, c, h, w))))
    }

    fn bwd(&self, _arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        im2col(grad_res, self.0).map(Some)
    }
}
