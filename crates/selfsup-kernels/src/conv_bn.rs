//! Convolution followed by training-mode batch norm (Ioffe & Szegedy 2015), with the
//! ReLU optionally fused, as one op with its own backward.
//!
//! Apart, the two ops cost the autograd an extra activation-sized gradient per layer:
//! candle adds every input gradient into a fresh zero tensor, single-threaded, so the
//! batch norm's input gradient costs a zero-fill and an add before the convolution's
//! backward reads it. Fused, that gradient stays inside the op, and is not even
//! stored: the backward makes it chunk by chunk, in cache, inside one pass that
//! computes both the kernel and the input gradient of the convolution.
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Storage, Tensor};
use std::sync::{Arc, Mutex, PoisonError};

use crate::batch_norm::{batch_norm_train, batch_norm_train_relu};
use crate::batch_norm_kernels::{pairs_to_rows, BnTrain};
use crate::bn_stats::moments_stats;
use crate::conv::{conv2d, data, expect_dims, plan};
use crate::conv_kernels::{forward_with_moments, grad_w_x, GradSource, Plan};
use crate::format::MemoryFormat;
use crate::patches::Image;
use crate::profile::{add_flops, scope};
use crate::sync::current_group;
use crate::ConvThreading;

/// `batch_norm_train(conv2d(x, w, stride, padding), weight, bias, eps)`, followed by
/// a ReLU when `relu`: the output and the batch's per-channel mean and biased variance.
/// `x` and the output are in `format` (see [`conv2d_in`](crate::conv2d_in)).
/// One op on the CPU (f32); on other devices, the two ops apart.
///
/// # Errors
/// For inconsistent shapes, or a failing collective of synchronised batch norm.
#[allow(clippy::too_many_arguments)]
pub fn conv_bn_train(
    x: &Tensor,
    w: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    (stride, padding): (usize, usize),
    eps: f64,
    relu: bool,
    format: MemoryFormat,
) -> Result<(Tensor, Tensor, Tensor)> {
    let on_cpu = x.device().is_cpu()
        && [x.dtype(), w.dtype(), weight.dtype(), bias.dtype()] == [DType::F32; 4];
    if !on_cpu {
        let bn = if relu {
            batch_norm_train_relu
        } else {
            batch_norm_train
        };
        let conv = conv2d(&format.to_nchw(x)?, w, stride, padding)?;
        let (y, mean, var) = bn(&conv, weight, bias, eps)?;
        return Ok((format.from_nchw(&y)?, mean, var));
    }
    let threading = ConvThreading::default();
    let plan = plan(x, w, (stride, padding), threading, format)?;
    let (o, _, _, _) = w.dims4()?;
    if weight.dims() != [o] || bias.dims() != [o] {
        candle_core::bail!(
            "conv_bn_train: weight {:?} and bias {:?} must be ({o})",
            weight.dims(),
            bias.dims()
        )
    }
    let op = ConvBnTrain::new(plan, eps, relu);
    let saved = op.saved.clone();
    let affine = Tensor::stack(&[weight, bias], 0)?; // (2, C), tracked
    let y = x.apply_op3(&w.contiguous()?, &affine, op)?;
    let stats = saved_stats(&saved)?;
    Ok((y, stats.get(0)?, stats.get(1)?))
}

/// The `(2, C)` batch statistics that a forward kept.
pub(crate) fn saved_stats(saved: &Mutex<Option<Saved>>) -> Result<Tensor> {
    let saved = saved.lock().unwrap_or_else(PoisonError::into_inner);
    match saved.as_ref() {
        Some(s) => Ok(s.stats.clone()),
        None => candle_core::bail!("conv_bn_train: the forward kept no statistics"),
    }
}

/// What the forward keeps for the backward: the convolution's output and the
/// `(2, C)` batch statistics.
pub(crate) struct Saved {
    conv: Tensor,
    stats: Tensor,
}

/// The fused op on `(x, w, affine)`.
pub(crate) struct ConvBnTrain {
    pub(crate) plan: Plan,
    bn: BnTrain,
    pub(crate) saved: Arc<Mutex<Option<Saved>>>,
}

impl CustomOp3 for ConvBnTrain {
    fn name(&self) -> &'static str {
        "selfsup-conv-bn-train"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let plan = &self.plan;
        let x = Image::new(s1.as_slice::<f32>()?, l1, &plan.g, plan.format)?;
        expect_dims(l2, plan.w_dims(), "the kernel")?;
        let (conv, moments) = {
            let _t = scope("conv.fwd");
            add_flops("conv.fwd", plan.flops());
            forward_with_moments(&x, data(s2, l2, "the kernel")?, plan, true)?
        };
        let (c, d) = (plan.o, plan.y_planes());
        let stats = {
            let _t = scope("bn.stats");
            pairs_to_rows(&moments_stats(&moments, c, &self.bn.sync)?)
        };
        let y = self
            .bn
            .normalize(&conv, d, &stats, data(s3, l3, "the affine parameters")?);
        let cpu = candle_core::Device::Cpu;
        let saved = Saved {
            conv: Tensor::from_vec(conv, plan.y_dims().to_vec(), &cpu)?,
            stats: Tensor::from_vec(stats, (2, c), &cpu)?,
        };
        *self.saved.lock().unwrap_or_else(PoisonError::into_inner) = Some(saved);
        Ok((CpuStorage::F32(y), Shape::from(&plan.y_dims())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        affine: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let want = (x.track_op(), w.track_op());
        let (dx, dw, daffine) = self.grads(x, w, affine, dy, want)?;
        Ok((dx, dw, Some(daffine)))
    }
}

impl ConvBnTrain {
    /// The op for `plan`, synchronised over the thread's batch-norm group if any.
    pub(crate) fn new(plan: Plan, eps: f64, relu: bool) -> Self {
        let bn = BnTrain {
            eps,
            relu,
            sync: current_group(),
            format: plan.format,
        };
        Self {
            plan,
            bn,
            saved: Arc::new(Mutex::new(None)),
        }
    }

    /// The gradients for `x` and `w` (when `want` says so) and for `affine`,
    /// from the output gradient `dy`.
    pub(crate) fn grads(
        &self,
        x: &Tensor,
        w: &Tensor,
        affine: &Tensor,
        dy: &Tensor,
        (want_dx, want_dw): (bool, bool),
    ) -> Result<(Option<Tensor>, Option<Tensor>, Tensor)> {
        let (conv, stats) = {
            let saved = self.saved.lock().unwrap_or_else(PoisonError::into_inner);
            let Some(s) = saved.as_ref() else {
                candle_core::bail!("conv_bn_train: backward without a forward")
            };
            (s.conv.clone(), s.stats.clone())
        };
        let dy = dy.contiguous()?;
        let (packed, daffine) = self.bn.grad_sums(&conv, &stats, affine, &dy)?;
        let (dx, dw) = if want_dx || want_dw {
            let (dw, dx) = self.conv_grads(x, w, &conv, &dy, &packed, want_dx)?;
            (dx, want_dw.then_some(dw))
        } else {
            (None, None)
        };
        Ok((dx, dw, daffine))
    }

    /// The kernel gradient, and the input gradient when `want_dx`, in one
    /// pass over the batch: batch norm's input gradient (the convolution's output
    /// gradient) is made chunk by chunk inside it from `conv`, `dy` and
    /// `packed` = `[stats; affine; sums]` and never stored whole. The results
    /// take no further part in autograd (no second derivatives through this op).
    fn conv_grads(
        &self,
        x: &Tensor,
        w: &Tensor,
        conv: &Tensor,
        dy: &Tensor,
        packed: &Tensor,
        want_dx: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let _t = scope("conv.bwd");
        let plan = &self.plan;
        add_flops("conv.bwd", plan.flops() * if want_dx { 2.0 } else { 1.0 });
        let coef = self
            .bn
            .input_grads(&packed.flatten_all()?.to_vec1::<f32>()?, plan.y_planes());
        let (xs, xl) = x.storage_and_layout();
        let (ws, wl) = w.storage_and_layout();
        let (cs, cl) = conv.storage_and_layout();
        let (ds, dl) = dy.storage_and_layout();
        let (Storage::Cpu(xs), Storage::Cpu(ws), Storage::Cpu(cs), Storage::Cpu(ds)) =
            (&*xs, &*ws, &*cs, &*ds)
        else {
            candle_core::bail!("conv_bn_train: the backward expects CPU tensors")
        };
        expect_dims(cl, plan.y_dims(), "the saved output")?;
        expect_dims(dl, plan.y_dims(), "the output gradient")?;
        let src = GradSource::BatchNorm {
            conv: data(cs, cl, "the saved output")?,
            dy: data(ds, dl, "the output gradient")?,
            coef: &coef,
        };
        let xi = Image::new(xs.as_slice::<f32>()?, xl, &plan.g, plan.format)?;
        let wv = data(ws, wl, "the kernel")?;
        let (dw, dx) = grad_w_x(&xi, src, want_dx.then_some(wv), plan)?;
        let cpu = candle_core::Device::Cpu;
        let dw = Tensor::from_vec(dw, plan.w_dims().to_vec(), &cpu)?;
        let dx = dx
            .map(|dx| Tensor::from_vec(dx, plan.x_dims().to_vec(), &cpu))
            .transpose()?;
        Ok((dw, dx))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::test_util::{assert_same_grads, rand, rel_err};
    use candle_core::Var;

    /// The fused op, in both memory formats, against `conv2d` then batch norm:
    /// outputs, statistics and every gradient within 1e-4 relative.
    fn check(x: [usize; 4], o: usize, k: usize, stride: usize, padding: usize, relu: bool) {
        for format in [MemoryFormat::Nchw, MemoryFormat::Nhwc] {
            check_in(format, x, o, (k, stride, padding), relu);
        }
    }

    fn check_in(
        format: MemoryFormat,
        x: [usize; 4],
        o: usize,
        (k, stride, padding): (usize, usize, usize),
        relu: bool,
    ) {
        let c = x[1];
        let xv = Var::from_tensor(&rand(&x, 1).unwrap()).unwrap();
        let w = Var::from_tensor(&rand(&[o, c, k, k], 2).unwrap()).unwrap();
        let wt = Var::from_tensor(&(rand(&[o], 3).unwrap() + 1.0).unwrap()).unwrap();
        let b = Var::from_tensor(&rand(&[o], 4).unwrap()).unwrap();
        let geometry = (stride, padding);
        let xf = format.from_nchw(&xv).unwrap();
        let fused = conv_bn_train(&xf, &w, &wt, &b, geometry, 1e-5, relu, format).unwrap();
        let fused = (format.to_nchw(&fused.0).unwrap(), fused.1, fused.2);
        let bn = if relu {
            batch_norm_train_relu
        } else {
            batch_norm_train
        };
        let apart = bn(&conv2d(&xv, &w, stride, padding).unwrap(), &wt, &b, 1e-5).unwrap();
        let case = format!("{format:?} {x:?} o={o} k={k} s={stride} p={padding} relu={relu}");
        for (name, a, e) in [
            ("y", &fused.0, &apart.0),
            ("mean", &fused.1, &apart.1),
            ("var", &fused.2, &apart.2),
        ] {
            let err = rel_err(a, e).unwrap();
            assert!(err < 1e-4, "{name} {case}: {err}");
        }
        let r = rand(fused.0.dims(), 5).unwrap();
        let g_fused = (&fused.0 * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g_apart = (&apart.0 * &r)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let vars = [("x", &xv), ("w", &w), ("weight", &wt), ("bias", &b)];
        assert_same_grads((&g_fused, &g_apart), &vars, &case);
    }

    #[test]
    fn fused_matches_conv_then_batch_norm() {
        check([4, 3, 9, 7], 5, 3, 2, 1, false);
        check([4, 3, 9, 7], 5, 3, 2, 1, true);
        check([1, 2, 6, 6], 3, 3, 1, 1, true);
        check([3, 13, 7, 5], 11, 3, 1, 0, true);
        check([2, 8, 14, 14], 16, 1, 1, 0, false);
        check([2, 4, 5, 9], 6, 5, 3, 2, true);
        // 19 chunks of up to 11 samples in 8 groups of 3 chunks: the last group
        // partial, one empty.
        check([200, 2, 5, 5], 3, 3, 1, 1, true);
        // Winograd F(2x2, 3x3) channels last (3x3, stride 1, >= 16 channels):
        // partial edge tiles, and 300 one-tile samples in two chunks.
        check([3, 17, 7, 5], 11, 3, 1, 1, true);
        check([2, 16, 6, 6], 20, 3, 1, 0, false);
        check([300, 16, 2, 2], 5, 3, 1, 1, true);
    }

    #[test]
    fn an_input_without_gradient_gets_none() {
        let x = rand(&[2, 3, 6, 6], 1).unwrap();
        let w = Var::from_tensor(&rand(&[4, 3, 3, 3], 2).unwrap()).unwrap();
        let (wt, b) = (
            Var::from_tensor(&rand(&[4], 3).unwrap()).unwrap(),
            Var::from_tensor(&rand(&[4], 4).unwrap()).unwrap(),
        );
        let nchw = MemoryFormat::Nchw;
        let (y, _, _) = conv_bn_train(&x, &w, &wt, &b, (1, 1), 1e-5, true, nchw).unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        assert!(grads.get(&x).is_none());
        for v in [&w, &wt, &b] {
            assert!(grads.get(v).is_some());
        }
        let bad = Var::from_tensor(&rand(&[5], 3).unwrap()).unwrap();
        let err = conv_bn_train(&x, &w, &bad, &b, (1, 1), 1e-5, true, nchw).unwrap_err();
        assert!(err.to_string().contains("must be (4)"), "{err}");
        // An NCHW tensor where NHWC is expected: its last dim is not the kernel's C.
        let nhwc = MemoryFormat::Nhwc;
        let err = conv_bn_train(&x, &w, &wt, &b, (1, 1), 1e-5, true, nhwc).unwrap_err();
        assert!(err.to_string().contains("channels"), "{err}");
    }
}
