//! The three convolution kernels on raw `f32` slices: forward, weight
//! gradient and input gradient, each im2col/col2im plus one gemm per chunk
//! of samples.
//!
//! A *chunk* is a run of consecutive samples whose im2col rows (one per
//! output pixel, pixel-major: see [`crate::patches`]) form one column
//! block, so that each gemm is large enough to run well even when a sample
//! has few output pixels. The forward's gemm writes the chunk's output
//! channel-major, `(O, b * P)`: straight into the `(N, O, Ho, Wo)` tensor for
//! one sample per chunk, scattered into it for more; the backward reads the
//! incoming gradient in place for one sample per chunk and gathers it into
//! such a block for more (or makes it there, for a fused batch norm).

use candle_core::Result;
use rayon::prelude::*;
use std::cell::RefCell;

use crate::batch_norm_kernels::InputGrads;
use crate::bn_stats::Moments;
use crate::format::MemoryFormat;
use crate::geometry::ConvGeometry;
use crate::patches::{
    cols_from_padded, from_pixel_major, from_pixel_major_columns, image_from_cols, pad_sample,
    padded_from_cols, to_pixel_major, unpad_sample, Image, Padded,
};
use crate::profile::scope;
use crate::sgemm::{gemm, Mat, Threads};
use crate::winograd::{self, Tiles};
use crate::zeros::zeros;

/// How a convolution is split into work: the geometry, the output channel
/// count, samples per chunk, and whether chunks run in parallel.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub(crate) g: ConvGeometry,
    pub(crate) o: usize,
    pub(crate) per_chunk: usize,
    /// Chunks in parallel with single-threaded gemms (true), or one after
    /// the other with gemm's own threading (false).
    pub(crate) batch_parallel: bool,
    /// The memory format of the input, the output and their gradients.
    pub(crate) format: MemoryFormat,
    /// Whether the convolution runs as Winograd's F(2x2, 3x3) (see
    /// [`crate::winograd`]) instead of im2col.
    pub(crate) winograd: bool,
}

impl Plan {
    /// Chunks of at least `min_cols` gemm rows (whole samples): output
    /// pixels for im2col, 2x2 output tiles for Winograd.
    pub(crate) fn new(
        g: ConvGeometry,
        o: usize,
        min_cols: usize,
        batch_parallel: bool,
        format: MemoryFormat,
    ) -> Self {
        let winograd = winograd::applies(&g, format);
        let rows = if winograd {
            Tiles::of(&g).per_sample()
        } else {
            g.out_plane()
        };
        let per_chunk = min_cols.div_ceil(rows.max(1)).clamp(1, g.n.max(1));
        Self {
            g,
            o,
            per_chunk,
            batch_parallel,
            format,
            winograd,
        }
    }

    /// The kernel `(O, C, kh, kw)` as the chunks' products take it, for the
    /// forward or the input gradient: pixel-major for im2col, transformed
    /// for Winograd.
    fn prepare_kernel(&self, w: &[f32], for_input_grad: bool) -> Vec<f32> {
        let (c, o) = (self.g.c, self.o);
        match (self.winograd, for_input_grad) {
            (false, _) => to_pixel_major(w, &self.g),
            (true, false) => winograd::kernel_transform(w, c, o),
            (true, true) => winograd::kernel_transform_transposed(w, c, o),
        }
    }

    pub(crate) fn threads(&self) -> Threads {
        if self.batch_parallel {
            Threads::One
        } else {
            Threads::Pool(0)
        }
    }

    /// Runs `body(buffers, (chunk index, chunk of out))` over chunks of
    /// `chunk_len` values of `out`, and returns what it gives, in chunk order.
    fn run<F, R>(&self, out: &mut [f32], chunk_len: usize, body: F) -> Result<Vec<R>>
    where
        F: Fn(&mut Buffers, (usize, &mut [f32])) -> Result<R> + Sync + Send,
        R: Send,
    {
        if out.is_empty() || chunk_len == 0 {
            return Ok(Vec::new());
        }
        if self.batch_parallel {
            let chunks = out.par_chunks_mut(chunk_len).enumerate();
            chunks.map(|item| with_buffers(|b| body(b, item))).collect()
        } else {
            let chunks = out.chunks_mut(chunk_len).enumerate();
            with_buffers(|b| chunks.map(|item| body(b, item)).collect())
        }
    }
}

/// Scratch space reused across the chunks of one task.
#[derive(Default)]
struct Buffers {
    /// im2col rows, or Winograd's transformed input tiles.
    cols: Vec<f32>,
    grad: Vec<f32>,
    padded: Vec<f32>,
    /// Winograd's transformed output (or output-gradient) tiles.
    tiles: Vec<f32>,
}

thread_local! {
    static SCRATCH: RefCell<Buffers> = RefCell::default();
}

/// Runs `f` with this thread's scratch buffers, kept from call to call so
/// that they are not allocated and zeroed again for every chunk; with fresh
/// ones when they are in use (a kernel that rayon's work stealing runs on a
/// thread already inside one).
fn with_buffers<R>(f: impl FnOnce(&mut Buffers) -> R) -> R {
    SCRATCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut bufs) => f(&mut bufs),
        Err(_) => f(&mut Buffers::default()),
    })
}

/// The first `len` values of `v`, grown as needed (contents unspecified).
pub(crate) fn sized(v: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if v.len() < len {
        v.resize(len, 0.0);
    }
    &mut v[..len]
}

/// im2col of samples `n0 .. n0 + b` into a pixel-major `(b * Ho * Wo, K)`
/// block.
fn gather_cols<'a>(
    x: &Image<'_>,
    g: &ConvGeometry,
    n0: usize,
    b: usize,
    buf: &'a mut Vec<f32>,
    padded: &mut Vec<f32>,
) -> Result<Mat<'a>> {
    let (k, p) = (g.patch_len(), g.out_plane());
    let cols = sized(buf, b * p * k);
    let pd = Padded::new(g);
    let scratch = sized(padded, pd.len(g));
    for s in 0..b {
        pad_sample(x, n0 + s, g, &pd, scratch);
        cols_from_padded(scratch, g, &pd, &mut cols[s * p * k..][..p * k]);
    }
    Mat::rows(cols, b * p, k)
}

/// Where the convolution's output gradient `(N, O, P)` comes from.
#[derive(Clone, Copy)]
pub(crate) enum GradSource<'a> {
    /// The gradient itself.
    Plain(&'a [f32]),
    /// A following batch norm's input gradient, made chunk by chunk from the
    /// convolution's output `conv`, the batch norm's output gradient `dy` and
    /// its per-channel coefficients, and never stored whole.
    BatchNorm {
        conv: &'a [f32],
        dy: &'a [f32],
        coef: &'a InputGrads,
    },
}

/// Samples `n0 .. n0 + b` of the output gradient as an `(O, b * P)` matrix:
/// in place for a plain gradient channels last or of one sample, else built
/// in `buf` (a transposed view of `(b * P, O)` rows channels last).
fn grad_block<'a>(
    src: GradSource<'a>,
    (o, p): (usize, usize),
    n0: usize,
    b: usize,
    buf: &'a mut Vec<f32>,
    format: MemoryFormat,
) -> Result<Mat<'a>> {
    if format == MemoryFormat::Nhwc {
        let rows = grad_rows(src, (o, p), n0, b, buf);
        return Ok(Mat::rows(rows, b * p, o)?.t());
    }
    let span = n0 * o * p..(n0 + b) * o * p;
    if let GradSource::Plain(gy) = src {
        if b == 1 {
            return Mat::rows(&gy[span], o, p);
        }
    }
    let ld = b * p;
    let dst = sized(buf, o * ld);
    for s in 0..b {
        for oi in 0..o {
            let (at, out) = ((n0 + s) * o * p + oi * p, &mut dst[oi * ld + s * p..][..p]);
            match src {
                GradSource::Plain(gy) => out.copy_from_slice(&gy[at..at + p]),
                GradSource::BatchNorm { conv, dy, coef } => {
                    coef.plane(oi, out, &conv[at..at + p], &dy[at..at + p]);
                }
            }
        }
    }
    Mat::rows(dst, o, ld)
}

/// Samples `n0 .. n0 + b` of a channels-last output gradient, `(b * P, O)`
/// rows: in place for a plain gradient, else built in `buf`.
fn grad_rows<'a>(
    src: GradSource<'a>,
    (o, p): (usize, usize),
    n0: usize,
    b: usize,
    buf: &'a mut Vec<f32>,
) -> &'a [f32] {
    let span = n0 * o * p..(n0 + b) * o * p;
    match src {
        GradSource::Plain(gy) => &gy[span],
        GradSource::BatchNorm { conv, dy, coef } => {
            let dst = sized(buf, b * p * o);
            coef.rows(dst, &conv[span.clone()], &dy[span]);
            dst
        }
    }
}

/// `y = conv(x, w)`, `(N, O, Ho, Wo)` or `(N, Ho, Wo, O)` by the plan's
/// format, `w` contiguous `(O, C, kh, kw)`.
pub(crate) fn forward(x: &Image<'_>, w: &[f32], plan: &Plan) -> Result<Vec<f32>> {
    Ok(forward_with_moments(x, w, plan, false)?.0)
}

/// [`forward`], and with `moments` each chunk's per-channel [`Moments`] of
/// `y`, taken while the chunk is in cache (in chunk order, `O` per chunk).
pub(crate) fn forward_with_moments(
    x: &Image<'_>,
    w: &[f32],
    plan: &Plan,
    moments: bool,
) -> Result<(Vec<f32>, Vec<Moments>)> {
    let (g, o) = (&plan.g, plan.o);
    let (k, p) = (g.patch_len(), g.out_plane());
    let wk = plan.prepare_kernel(w, false);
    let mut y = zeros(g.n * o * p);
    let parts = plan.run(&mut y, plan.per_chunk * o * p, |bufs, (ci, y)| {
        let (n0, b) = (ci * plan.per_chunk, y.len() / (o * p));
        if plan.winograd {
            let scratch = (&mut bufs.cols, &mut bufs.tiles, &mut bufs.padded);
            winograd::forward_chunk(x, &wk, plan, (n0, b), scratch, y)?;
        } else {
            let wm = Mat::rows(&wk, o, k)?;
            let cols = {
                let _t = scope("conv.fwd.im2col");
                gather_cols(x, g, n0, b, &mut bufs.cols, &mut bufs.padded)?
            };
            if plan.format == MemoryFormat::Nchw {
                return channels_first_chunk(y, (wm, cols), (b, p), &mut bufs.grad, moments, plan);
            }
            // The chunk's output rows (b * P, O) = cols (b * P, K) @ wᵀ (K, O).
            let _t = scope("conv.fwd.gemm");
            gemm(y, o, cols, wm.t(), false, plan.threads())?;
        }
        if !moments {
            return Ok(Vec::new());
        }
        let _t = scope("conv.fwd.moments");
        Ok(Moments::of_columns(y, o))
    })?;
    Ok((y, parts.into_iter().flatten().collect()))
}

/// One chunk of [`forward_with_moments`] channels first: `y` `(b, O, P)`
/// from the pixel-major kernel `wm` `(O, K)` and the chunk's im2col rows
/// `cols` `(b * P, K)`, with each channel's [`Moments`] when asked.
fn channels_first_chunk(
    y: &mut [f32],
    (wm, cols): (Mat<'_>, Mat<'_>),
    (b, p): (usize, usize),
    scratch: &mut Vec<f32>,
    moments: bool,
    plan: &Plan,
) -> Result<Vec<Moments>> {
    let (o, ld) = (plan.o, b * p);
    // The chunk's output as (O, b * P): y itself for one sample.
    let block: &[f32] = if b == 1 {
        let _t = scope("conv.fwd.gemm");
        gemm(y, p, wm, cols.t(), false, plan.threads())?;
        y
    } else {
        let tmp = sized(scratch, o * ld);
        {
            let _t = scope("conv.fwd.gemm");
            gemm(tmp, ld, wm, cols.t(), false, plan.threads())?;
        }
        let _t = scope("conv.fwd.scatter");
        for (s, sample) in y.chunks_exact_mut(o * p).enumerate() {
            for (oi, plane) in sample.chunks_exact_mut(p).enumerate() {
                plane.copy_from_slice(&tmp[oi * ld + s * p..][..p]);
            }
        }
        tmp
    };
    if !moments || ld == 0 {
        return Ok(Vec::new());
    }
    let _t = scope("conv.fwd.moments");
    Ok(block.chunks_exact(ld).map(Moments::of).collect())
}

/// `dx` (in the plan's format): the gradient of `conv(x, w)` for `x`, given `gy`.
pub(crate) fn grad_x(w: &[f32], gy: &[f32], plan: &Plan) -> Result<Vec<f32>> {
    let (g, o) = (&plan.g, plan.o);
    let (k, p, len) = (g.patch_len(), g.out_plane(), g.in_sample());
    let wk = plan.prepare_kernel(w, true);
    let mut dx = zeros(g.n * len);
    plan.run(&mut dx, plan.per_chunk * len, |bufs, (ci, dx)| {
        let (n0, b) = (ci * plan.per_chunk, dx.len() / len);
        let Buffers {
            cols,
            grad,
            padded,
            tiles,
        } = bufs;
        if plan.winograd {
            let rows = grad_rows(GradSource::Plain(gy), (o, p), n0, b, grad);
            let scratch = (cols, tiles, padded);
            return winograd::backward_chunk(rows, plan, (n0, b), None, Some((&wk, dx)), scratch);
        }
        let wm = Mat::rows(&wk, o, k)?;
        let gm = {
            let _t = scope("conv.bwd.x.gather");
            grad_block(GradSource::Plain(gy), (o, p), n0, b, grad, plan.format)?
        };
        chunk_grad_x(gm, wm, plan, (cols, padded), dx)
    })?;
    Ok(dx)
}

/// The input gradient `dx` of one chunk's samples from their output-gradient
/// block `gm` `(O, b * P)` and the pixel-major kernel `wm` `(O, K)`.
fn chunk_grad_x(
    gm: Mat<'_>,
    wm: Mat<'_>,
    plan: &Plan,
    (cols, padded): (&mut Vec<f32>, &mut Vec<f32>),
    dx: &mut [f32],
) -> Result<()> {
    let g = &plan.g;
    let (k, p, len) = (g.patch_len(), g.out_plane(), g.in_sample());
    let gcols = sized(cols, dx.len() / len.max(1) * p * k);
    {
        let _t = scope("conv.bwd.x.gemm");
        gemm(gcols, k, gm.t(), wm, false, plan.threads())?;
    }
    let _t = scope("conv.bwd.x.col2im");
    let pd = Padded::new(g);
    let scratch = sized(padded, pd.len(g));
    if len == 0 {
        return Ok(());
    }
    for (img, rows) in dx.chunks_exact_mut(len).zip(gcols.chunks_exact(p * k)) {
        if plan.format == MemoryFormat::Nhwc {
            // `dx` is zeros, channels last and contiguous: add in place.
            image_from_cols(rows, g, img);
            continue;
        }
        scratch.fill(0.0);
        padded_from_cols(rows, g, &pd, scratch);
        unpad_sample(scratch, g, &pd, img, plan.format);
    }
    Ok(())
}

/// `dw (O, C, kh, kw)`: the gradient of `conv(x, w)` for `w`, given `gy`.
pub(crate) fn grad_w(x: &Image<'_>, gy: &[f32], plan: &Plan) -> Result<Vec<f32>> {
    Ok(grad_w_x(x, GradSource::Plain(gy), None, plan)?.0)
}

/// `dw (O, C, kh, kw)`, and with the kernel `w` also `dx` (in the plan's format): the
/// gradients of `conv(x, w)` for the output gradient `src`, in one pass over
/// the batch (each chunk's gradient block is made once and used for both).
///
/// The sum over samples is split into a fixed number of groups of chunks
/// (set by the chunk and thread counts only), each accumulated on its own
/// and then added in group order, so the result is the same from run to
/// run.
pub(crate) fn grad_w_x(
    x: &Image<'_>,
    src: GradSource<'_>,
    w: Option<&[f32]>,
    plan: &Plan,
) -> Result<(Vec<f32>, Option<Vec<f32>>)> {
    let (g, o) = (&plan.g, plan.o);
    let (k, p, len) = (g.patch_len(), g.out_plane(), g.in_sample());
    let chunks = g.n.div_ceil(plan.per_chunk);
    let groups = if plan.batch_parallel {
        chunks.min(8.max(2 * rayon::current_num_threads()))
    } else {
        chunks.min(1)
    };
    let per_group = chunks.div_ceil(groups.max(1));
    let wk = w.map(|w| plan.prepare_kernel(w, true));
    let wm = match &wk {
        Some(wk) if !plan.winograd => Some(Mat::rows(wk, o, k)?),
        _ => None,
    };
    let acc_len = if plan.winograd {
        winograd::kernel_transform_len(g.c, o)
    } else {
        o * k
    };
    let mut dx = zeros(if wk.is_some() { g.n * len } else { 0 });
    // Group `gi`'s samples of dx (empty when dx is not wanted).
    let group_len = per_group * plan.per_chunk * len;
    let mut dx_parts: Vec<&mut [f32]> = dx.chunks_mut(group_len.max(1)).collect();
    dx_parts.resize_with(groups, Default::default);
    let part = |(gi, dx): (usize, &mut [f32])| -> Result<Vec<f32>> {
        with_buffers(|bufs| {
            let Buffers {
                cols,
                grad,
                padded,
                tiles,
            } = bufs;
            let mut acc = vec![0f32; acc_len];
            let first = gi * per_group;
            for (i, ci) in (first..chunks.min(first + per_group)).enumerate() {
                let n0 = ci * plan.per_chunk;
                let b = plan.per_chunk.min(g.n - n0);
                let at = (n0 - first * plan.per_chunk) * len;
                if plan.winograd {
                    let rows = {
                        let _t = scope("conv.bwd.w.gather");
                        grad_rows(src, (o, p), n0, b, grad)
                    };
                    let input = wk.as_deref().map(|u| (u, &mut dx[at..at + b * len]));
                    let kernel = Some((x, &mut acc[..], i > 0));
                    let scratch = (&mut *cols, &mut *tiles, &mut *padded);
                    winograd::backward_chunk(rows, plan, (n0, b), kernel, input, scratch)?;
                    continue;
                }
                let gm = {
                    let _t = scope("conv.bwd.w.gather");
                    grad_block(src, (o, p), n0, b, grad, plan.format)?
                };
                let xcols = {
                    let _t = scope("conv.bwd.w.im2col");
                    gather_cols(x, g, n0, b, cols, padded)?
                };
                {
                    let _t = scope("conv.bwd.w.gemm");
                    if plan.format == MemoryFormat::Nhwc {
                        // (K, O) += colsᵀ @ the gradient's rows: faster here than
                        // (O, K), whose left operand is the rows transposed.
                        gemm(&mut acc, o, xcols.t(), gm.t(), i > 0, plan.threads())?;
                    } else {
                        gemm(&mut acc, k, gm, xcols, i > 0, plan.threads())?;
                    }
                }
                if let Some(wm) = wm {
                    chunk_grad_x(gm, wm, plan, (cols, padded), &mut dx[at..at + b * len])?;
                }
            }
            Ok(acc)
        })
    };
    let mut parts: Vec<Vec<f32>> = if plan.batch_parallel {
        let work = dx_parts.into_par_iter().enumerate();
        work.map(part).collect::<Result<_>>()?
    } else {
        let work = dx_parts.into_iter().enumerate();
        work.map(part).collect::<Result<_>>()?
    };
    let _t = scope("conv.bwd.w.reduce");
    let Some(mut total) = parts.first_mut().map(std::mem::take) else {
        return Ok((vec![0f32; o * k], wk.map(|_| dx)));
    };
    const BLOCK: usize = 4096;
    total.par_chunks_mut(BLOCK).enumerate().for_each(|(bi, t)| {
        for part in &parts[1..] {
            let src = &part[bi * BLOCK..][..t.len()];
            t.iter_mut().zip(src).for_each(|(t, v)| *t += v);
        }
    });
    let dw = match plan.format {
        _ if plan.winograd => winograd::kernel_transform_adjoint(&total, g.c, o),
        MemoryFormat::Nchw => from_pixel_major(&total, g),
        MemoryFormat::Nhwc => from_pixel_major_columns(&total, g, o),
    };
    Ok((dw, wk.map(|_| dx)))
}
