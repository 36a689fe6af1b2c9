//! 2-D convolution as one fused CPU op per direction: im2col + gemm over
//! chunks of the batch, with the weight and input gradients as their own
//! kernels.

use candle_core::{bail, CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};

use crate::conv_kernels::{forward, grad_w, grad_x, Plan};
use crate::format::MemoryFormat;
use crate::geometry::ConvGeometry;
use crate::patches::Image;
use crate::profile::{add_flops, scope};

/// How the CPU convolution uses threads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ConvThreading {
    /// Chunks of the batch run in parallel on rayon's pool, each with a
    /// single-threaded gemm (the default: the data movement is parallel
    /// too).
    #[default]
    Batch,
    /// Chunks run one after the other and each gemm is split by the `gemm`
    /// crate over rayon's pool; im2col and col2im stay on one thread.
    Gemm,
}

impl ConvThreading {
    /// The smallest number of output pixels per chunk: enough for the gemm
    /// to be efficient, few enough for the column block to stay in cache.
    fn min_cols(self) -> usize {
        match self {
            Self::Batch => 256,
            Self::Gemm => 4096,
        }
    }
}

/// 2-D convolution (cross-correlation, like PyTorch's `conv2d`) with exact
/// autograd, as fused CPU kernels.
///
/// Same result as candle's `x.conv2d(w, padding, stride, 1, 1)` (no
/// dilation, one group). On the CPU with `f32` it is one custom op: the
/// forward runs im2col and a gemm per chunk of samples, in parallel over the
/// batch, writing the `(N, O, Ho, Wo)` output directly. The backward computes
/// the kernel gradient (a sum over chunks of `gy @ colsᵀ`) and the input
/// gradient (`wᵀ @ gy`, then col2im) as two more such ops, and skips the
/// input gradient when `x` is not tracked (for example the input image).
/// The backward ops have backward passes of their own (the three are each
/// other's adjoints), so second derivatives work.
///
/// The results are the same from run to run for a given thread count.
///
/// Channels last (see [`conv2d_in`]), a 3x3 kernel with stride 1 and at
/// least 16 input channels runs as Winograd's F(2x2, 3x3) instead (Lavin &
/// Gray 2016): 2.25x fewer multiply-adds in the forward and both gradients,
/// agreeing with the direct convolution to rounding.
///
/// On devices other than the CPU, or when `x` or `w` is not `f32`, this
/// calls candle's `Tensor::conv2d` instead.
///
/// # Shapes
///
/// - `x`: `(N, C, H, W)`, any strides.
/// - `w`: `(O, C, kh, kw)`.
/// - returns: `(N, O, Ho, Wo)`, contiguous, with
///   `Ho = (H + 2 * padding - kh) / stride + 1` and likewise `Wo`.
///
/// # Errors
///
/// Fails when `x` or `w` is not 4-D, their channel counts differ, `stride`
/// is zero, the padded input is smaller than the kernel, or the dtypes
/// differ.
pub fn conv2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    conv2d_with(x, w, stride, padding, ConvThreading::default())
}

/// [`conv2d`] with a choice of [`ConvThreading`] on the CPU path (for
/// benchmarks; the default is the faster one on the machines measured).
///
/// # Shapes
///
/// As for [`conv2d`].
///
/// # Errors
///
/// As for [`conv2d`].
pub fn conv2d_with(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    threading: ConvThreading,
) -> Result<Tensor> {
    convolve(x, w, (stride, padding), threading, MemoryFormat::Nchw)
}

/// [`conv2d`] of an input in `format`, giving an output in the same format:
/// with [`MemoryFormat::Nhwc`], `(N, H, W, C)` to `(N, Ho, Wo, O)` (the
/// kernel stays `(O, C, kh, kw)`). Channels last is the CPU kernels' native
/// order (no transposes); on other devices the input is permuted to candle's
/// `conv2d` and the output back.
///
/// # Shapes
///
/// As for [`conv2d`], with the activations' dims in `format`.
///
/// # Errors
///
/// As for [`conv2d`].
pub fn conv2d_in(
    x: &Tensor,
    w: &Tensor,
    stride: usize,
    padding: usize,
    format: MemoryFormat,
) -> Result<Tensor> {
    convolve(x, w, (stride, padding), ConvThreading::default(), format)
}

/// [`conv2d_in`] with a choice of threading.
fn convolve(
    x: &Tensor,
    w: &Tensor,
    (stride, padding): (usize, usize),
    threading: ConvThreading,
    format: MemoryFormat,
) -> Result<Tensor> {
    if !x.device().is_cpu() || x.dtype() != DType::F32 || w.dtype() != DType::F32 {
        let y = format.to_nchw(x)?.conv2d(w, padding, stride, 1, 1)?;
        return format.from_nchw(&y);
    }
    let plan = plan(x, w, (stride, padding), threading, format)?;
    x.apply_op2(&w.contiguous()?, Conv(plan))
}

/// The plan of a convolution of `x` (in `format`) with the kernel `w`.
pub(crate) fn plan(
    x: &Tensor,
    w: &Tensor,
    (stride, padding): (usize, usize),
    threading: ConvThreading,
    format: MemoryFormat,
) -> Result<Plan> {
    plan_for(
        format.nchw_dims(x)?,
        w.dims4()?,
        (stride, padding),
        threading,
        format,
    )
}

/// The plan of a convolution of an input of `(N, C, H, W)` `x` (in `format`)
/// with an `(O, C, kh, kw)` kernel `w`.
pub(crate) fn plan_for(
    (n, c, h, wd): (usize, usize, usize, usize),
    (o, cw, kh, kw): (usize, usize, usize, usize),
    (stride, padding): (usize, usize),
    threading: ConvThreading,
    format: MemoryFormat,
) -> Result<Plan> {
    if cw != c {
        bail!("conv2d: input has {c} channels but the kernel expects {cw}")
    }
    let geom = ConvGeometry::new((n, c, h, wd), (kh, kw), stride, padding)?;
    let batch_parallel = threading == ConvThreading::Batch;
    Ok(Plan::new(
        geom,
        o,
        threading.min_cols(),
        batch_parallel,
        format,
    ))
}

/// 2-D transposed convolution (PyTorch's `conv_transpose2d` without output
/// padding, dilation or groups) with exact autograd, as fused CPU kernels.
///
/// A transposed convolution is the input gradient of a convolution with the same
/// kernel, so on the CPU with `f32` it runs the input-gradient kernel of
/// [`conv2d`] (gemm, then col2im, in parallel over the batch); its backward runs
/// the convolution (for `x`) and the kernel-gradient kernel (for `w`). Elsewhere
/// it calls candle's `Tensor::conv_transpose2d`, whose CPU version is a direct loop.
///
/// # Shapes
///
/// - `x`: `(N, C, H, W)`.
/// - `w`: `(C, O, kh, kw)`, PyTorch's `ConvTranspose2d` layout.
/// - returns: `(N, O, Ho, Wo)` with `Ho = (H − 1)·stride − 2·padding + kh`, likewise `Wo`.
///
/// # Errors
///
/// Fails when `x` or `w` is not 4-D, their channel counts differ, `stride` is
/// zero, the output would be empty, or the dtypes differ.
pub fn conv_transpose2d(x: &Tensor, w: &Tensor, stride: usize, padding: usize) -> Result<Tensor> {
    if !x.device().is_cpu() || x.dtype() != DType::F32 || w.dtype() != DType::F32 {
        return x.conv_transpose2d(w, padding, 0, stride, 1);
    }
    let (n, c, h, wd) = x.dims4()?;
    let (cw, o, kh, kw) = w.dims4()?;
    if cw != c {
        bail!("conv_transpose2d: input has {c} channels but the kernel expects {cw}")
    }
    if stride == 0 || h == 0 || wd == 0 {
        bail!("conv_transpose2d: stride ({stride}) and input size ({h}x{wd}) must be positive")
    }
    let (Some(ho), Some(wo)) = (
        ((h - 1) * stride + kh).checked_sub(2 * padding),
        ((wd - 1) * stride + kw).checked_sub(2 * padding),
    ) else {
        bail!("conv_transpose2d: padding {padding} leaves no output for a {h}x{wd} input")
    };
    if ho == 0 || wo == 0 {
        bail!("conv_transpose2d: padding {padding} leaves no output for a {h}x{wd} input")
    }
    // The convolution whose input gradient this is: (N, O, ho, wo) → (N, C, h, wd).
    let geom = ConvGeometry::new((n, o, ho, wo), (kh, kw), stride, padding)?;
    let threading = ConvThreading::default();
    let plan = Plan::new(geom, c, threading.min_cols(), true, MemoryFormat::Nchw);
    w.contiguous()?.apply_op2(&x.contiguous()?, ConvGradX(plan))
}

/// The contiguous `f32` data of a storage.
pub(crate) fn data<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let Some((start, end)) = l.contiguous_offsets() else {
        bail!("conv: {what} must be contiguous")
    };
    Ok(&s.as_slice::<f32>()?[start..end])
}

/// Checks that a layout has the expected dims.
pub(crate) fn expect_dims(l: &Layout, dims: [usize; 4], what: &str) -> Result<()> {
    if l.dims() != dims {
        bail!("conv: {what} has shape {:?}, expected {dims:?}", l.dims())
    }
    Ok(())
}

impl Plan {
    pub(crate) fn w_dims(&self) -> [usize; 4] {
        [self.o, self.g.c, self.g.kh, self.g.kw]
    }

    /// Multiply-adds ×2 of one direction (forward, input or kernel gradient).
    pub(crate) fn flops(&self) -> f64 {
        let g = &self.g;
        2.0 * (g.n * self.o * g.out_plane() * g.patch_len()) as f64
    }

    /// The output's dims, in the plan's format.
    pub(crate) fn y_dims(&self) -> [usize; 4] {
        let g = &self.g;
        self.format.dims((g.n, self.o, g.ho, g.wo))
    }

    /// `(N, O, Ho * Wo)`: the output's batch-norm [`Dims`](crate::batch_norm_kernels::Dims).
    pub(crate) fn y_planes(&self) -> (usize, usize, usize) {
        (self.g.n, self.o, self.g.out_plane())
    }

    /// The input's dims, in the plan's format.
    pub(crate) fn x_dims(&self) -> [usize; 4] {
        self.format.dims(self.g.input_shape())
    }
}

/// `(x, w) -> y`.
struct Conv(Plan);

/// `(w, gy) -> dx`.
pub(crate) struct ConvGradX(pub(crate) Plan);

/// `(x, gy) -> dw`.
pub(crate) struct ConvGradW(pub(crate) Plan);

/// The gradient that `make` computes, if `input` takes part in autograd (candle asks
/// for both gradients of a binary op even when one input is a constant, such as the image).
pub(crate) fn if_tracked(
    input: &Tensor,
    make: impl FnOnce() -> Result<Tensor>,
) -> Result<Option<Tensor>> {
    input.track_op().then(make).transpose()
}

impl CustomOp2 for Conv {
    fn name(&self) -> &'static str {
        "selfsup-conv2d"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let _t = scope("conv.fwd");
        let plan = &self.0;
        add_flops("conv.fwd", plan.flops());
        let x = Image::new(s1.as_slice::<f32>()?, l1, &plan.g, plan.format)?;
        expect_dims(l2, plan.w_dims(), "the kernel")?;
        let y = forward(&x, data(s2, l2, "the kernel")?, plan)?;
        Ok((CpuStorage::F32(y), Shape::from(&plan.y_dims())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _y: &Tensor,
        gy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let gy = gy.contiguous()?;
        let dx = if_tracked(x, || w.apply_op2(&gy, ConvGradX(self.0)))?;
        let dw = if_tracked(w, || x.apply_op2(&gy, ConvGradW(self.0)))?;
        Ok((dx, dw))
    }
}

impl CustomOp2 for ConvGradX {
    fn name(&self) -> &'static str {
        "selfsup-conv2d-grad-input"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let _t = scope("conv.bwd.x");
        let plan = &self.0;
        add_flops("conv.bwd.x", plan.flops());
        expect_dims(l1, plan.w_dims(), "the kernel")?;
        expect_dims(l2, plan.y_dims(), "the output gradient")?;
        let (w, gy) = (
            data(s1, l1, "the kernel")?,
            data(s2, l2, "the output gradient")?,
        );
        let dx = grad_x(w, gy, plan)?;
        Ok((CpuStorage::F32(dx), Shape::from(&plan.x_dims())))
    }

    fn bwd(
        &self,
        w: &Tensor,
        gy: &Tensor,
        _dx: &Tensor,
        v: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // <dx(w, gy), v> = <gy, conv(v, w)>.
        let v = v.contiguous()?;
        let dw = if_tracked(w, || v.apply_op2(gy, ConvGradW(self.0)))?;
        let dgy = if_tracked(gy, || v.apply_op2(w, Conv(self.0)))?;
        Ok((dw, dgy))
    }
}

impl CustomOp2 for ConvGradW {
    fn name(&self) -> &'static str {
        "selfsup-conv2d-grad-kernel"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let _t = scope("conv.bwd.w");
        let plan = &self.0;
        add_flops("conv.bwd.w", plan.flops());
        let x = Image::new(s1.as_slice::<f32>()?, l1, &plan.g, plan.format)?;
        expect_dims(l2, plan.y_dims(), "the output gradient")?;
        let dw = grad_w(&x, data(s2, l2, "the output gradient")?, plan)?;
        Ok((CpuStorage::F32(dw), Shape::from(&plan.w_dims())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gy: &Tensor,
        _dw: &Tensor,
        v: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        // <dw(x, gy), v> = <gy, conv(x, v)>.
        let v = v.contiguous()?;
        let dx = if_tracked(x, || v.apply_op2(gy, ConvGradX(self.0)))?;
        let dgy = if_tracked(gy, || x.apply_op2(&v, Conv(self.0)))?;
        Ok((dx, dgy))
    }
}
