//! A chain of convolution + batch-norm (+ ReLU) layers as one op (a plain
//! CNN trunk such as `small-cnn`), for the CPU.
//!
//! Apart, each layer's output is a node of candle's graph, and candle adds
//! every node's gradient into a fresh zero tensor (a zero-fill and an add of
//! the whole activation, on top of the gradient itself). Chained, the
//! layers' gradients pass from one layer's backward to the next inside the
//! op, as they are.

use candle_core::{bail, CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use std::sync::{Mutex, PoisonError};

use crate::conv::plan_for;
use crate::conv_bn::{conv_bn_train, saved_stats, ConvBnTrain};
use crate::format::MemoryFormat;
use crate::ConvThreading;

/// One layer of [`conv_bn_chain_train`].
#[derive(Debug, Clone, Copy)]
pub struct ConvBnLayer<'a> {
    /// The convolution's kernel, `(O, C, kh, kw)`.
    pub kernel: &'a Tensor,
    /// Batch norm's scale, `(O)`.
    pub weight: &'a Tensor,
    /// Batch norm's shift, `(O)`.
    pub bias: &'a Tensor,
    /// The convolution's stride.
    pub stride: usize,
    /// The convolution's zero padding.
    pub padding: usize,
    /// Whether a ReLU follows the batch norm.
    pub relu: bool,
}

/// A layer's batch statistics (detached).
#[derive(Debug, Clone)]
pub struct BatchStats {
    /// Per-channel mean, `(O)`.
    pub mean: Tensor,
    /// Per-channel biased variance, `(O)`.
    pub var: Tensor,
    /// Values of each channel they cover on this process, `N * Ho * Wo`.
    pub per_channel: usize,
}

/// [`conv_bn_train`] of each layer in turn, the output of one the input of
/// the next: the last layer's output and every layer's [`BatchStats`].
/// `x` and the output are in `format`. One op on the CPU (f32), whose
/// gradients are the layers' own; on other devices, the layers apart.
///
/// # Errors
/// For an empty chain, inconsistent shapes, or a failing collective of
/// synchronised batch norm.
pub fn conv_bn_chain_train(
    x: &Tensor,
    layers: &[ConvBnLayer<'_>],
    eps: f64,
    format: MemoryFormat,
) -> Result<(Tensor, Vec<BatchStats>)> {
    if layers.is_empty() {
        bail!("conv_bn_chain_train: no layers")
    }
    let f32s = layers
        .iter()
        .flat_map(|l| [l.kernel, l.weight, l.bias])
        .all(|t| t.dtype() == DType::F32);
    if !x.device().is_cpu() || x.dtype() != DType::F32 || !f32s {
        return apart(x, layers, eps, format);
    }
    let mut dims = format.nchw_dims(x)?;
    let (mut ops, mut params, mut spans, mut stats_len) = (vec![], vec![], vec![], vec![]);
    let mut at = 0;
    for layer in layers {
        let w = layer.kernel.dims4()?;
        let geometry = (layer.stride, layer.padding);
        let plan = plan_for(dims, w, geometry, ConvThreading::default(), format)?;
        if layer.weight.dims() != [w.0] || layer.bias.dims() != [w.0] {
            bail!(
                "conv_bn_chain_train: weight {:?} and bias {:?} must be ({})",
                layer.weight.dims(),
                layer.bias.dims(),
                w.0
            )
        }
        let (kernel_len, affine_len) = (layer.kernel.elem_count(), 2 * w.0);
        spans.push((at, at + kernel_len));
        at += kernel_len + affine_len;
        params.extend([
            layer.kernel.flatten_all()?,
            layer.weight.clone(),
            layer.bias.clone(),
        ]);
        dims = (plan.g.n, plan.o, plan.g.ho, plan.g.wo);
        stats_len.push(plan.g.n * plan.g.out_plane());
        ops.push(ConvBnTrain::new(plan, eps, layer.relu));
    }
    let params = Tensor::cat(&params, 0)?; // tracked: its backward splits the gradient
    let chain = Chain {
        ops,
        spans,
        inputs: Mutex::new(Vec::new()),
    };
    let saved: Vec<_> = chain.ops.iter().map(|op| op.saved.clone()).collect();
    let y = x.apply_op2(&params, chain)?;
    let stats = saved
        .iter()
        .zip(stats_len)
        .map(|(s, per_channel)| {
            let stats = saved_stats(s)?;
            Ok(BatchStats {
                mean: stats.get(0)?,
                var: stats.get(1)?,
                per_channel,
            })
        })
        .collect::<Result<_>>()?;
    Ok((y, stats))
}

/// The layers one by one, each its own op.
fn apart(
    x: &Tensor,
    layers: &[ConvBnLayer<'_>],
    eps: f64,
    format: MemoryFormat,
) -> Result<(Tensor, Vec<BatchStats>)> {
    let mut h = x.clone();
    let mut stats = Vec::new();
    for l in layers {
        let geometry = (l.stride, l.padding);
        let (y, mean, var) = conv_bn_train(
            &h, l.kernel, l.weight, l.bias, geometry, eps, l.relu, format,
        )?;
        let per_channel = y.elem_count() / mean.elem_count().max(1);
        stats.push(BatchStats {
            mean,
            var,
            per_channel,
        });
        h = y;
    }
    Ok((h, stats))
}

/// The chained op on `(x, params)`; `params` holds each layer's kernel,
/// weight and bias, flattened, in order.
struct Chain {
    ops: Vec<ConvBnTrain>,
    /// Where each layer's kernel lies in `params`; its `(2, C)` affine
    /// parameters follow it.
    spans: Vec<(usize, usize)>,
    /// The inputs of the layers after the first, kept by the forward.
    inputs: Mutex<Vec<Tensor>>,
}

impl Chain {
    /// The layouts of layer `l`'s kernel and affine parameters in `params`.
    fn param_layouts(&self, l: usize) -> (Layout, Layout) {
        let ((start, end), plan) = (self.spans[l], &self.ops[l].plan);
        (
            Layout::contiguous_with_offset(plan.w_dims().to_vec(), start),
            Layout::contiguous_with_offset((2, plan.o), end),
        )
    }

    /// Layer `l`'s kernel and affine parameters as views of `params`.
    fn params(&self, params: &Tensor, l: usize) -> Result<(Tensor, Tensor)> {
        let ((start, end), plan) = (self.spans[l], &self.ops[l].plan);
        let kernel = params.narrow(0, start, end - start)?;
        let affine = params.narrow(0, end, 2 * plan.o)?;
        Ok((
            kernel.reshape(plan.w_dims().to_vec())?,
            affine.reshape((2, plan.o))?,
        ))
    }
}

impl CustomOp2 for Chain {
    fn name(&self) -> &'static str {
        "selfsup-conv-bn-chain"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        if !l2.is_contiguous() || l2.start_offset() != 0 {
            bail!("conv_bn_chain_train: the packed parameters must be contiguous")
        }
        let mut inputs = Vec::new();
        let mut current: Option<(CpuStorage, Shape)> = None;
        for (l, op) in self.ops.iter().enumerate() {
            let (kernel, affine) = self.param_layouts(l);
            let out = match &current {
                None => op.cpu_fwd(s1, l1, s2, &kernel, s2, &affine)?,
                Some((s, shape)) => {
                    op.cpu_fwd(s, &Layout::contiguous(shape), s2, &kernel, s2, &affine)?
                }
            };
            if let Some((CpuStorage::F32(v), shape)) = current.take() {
                inputs.push(Tensor::from_vec(v, shape, &candle_core::Device::Cpu)?);
            }
            current = Some(out);
        }
        *self.inputs.lock().unwrap_or_else(PoisonError::into_inner) = inputs;
        match current {
            Some(out) => Ok(out),
            None => bail!("conv_bn_chain_train: no layers"),
        }
    }

    fn bwd(
        &self,
        x: &Tensor,
        params: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let inputs = self
            .inputs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if inputs.len() + 1 != self.ops.len() {
            bail!("conv_bn_chain_train: backward without a forward")
        }
        let mut grad = Some(dy.clone());
        let mut dparams = vec![Vec::new(); self.ops.len()];
        for (l, op) in self.ops.iter().enumerate().rev() {
            let Some(dy) = grad.take() else {
                bail!("conv_bn_chain_train: no gradient for layer {l}")
            };
            let input = if l == 0 { x } else { &inputs[l - 1] };
            let (kernel, affine) = self.params(params, l)?;
            let want_dx = l > 0 || x.track_op();
            let (dx, dw, daffine) = op.grads(input, &kernel, &affine, &dy, (want_dx, true))?;
            let Some(dw) = dw else {
                bail!("conv_bn_chain_train: no kernel gradient for layer {l}")
            };
            dparams[l] = vec![dw.flatten_all()?, daffine.flatten_all()?];
            grad = dx;
        }
        let dparams: Vec<Tensor> = dparams.into_iter().flatten().collect();
        Ok((grad, Some(Tensor::cat(&dparams, 0)?)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::test_util::{assert_same_grads, rand, rel_err};
    use candle_core::Var;

    /// `(C in, C out, kernel, stride, padding, relu)` of each test layer.
    const SPECS: [(usize, usize, usize, usize, usize, bool); 3] = [
        (2, 5, 3, 1, 1, true),
        (5, 4, 3, 2, 1, true),
        (4, 6, 1, 1, 0, false),
    ];

    fn variables() -> Vec<[Var; 3]> {
        SPECS
            .iter()
            .enumerate()
            .map(|(i, &(c, o, k, ..))| {
                let seed = 10 * i as u64;
                let var = |t: Tensor| Var::from_tensor(&t).unwrap();
                [
                    var(rand(&[o, c, k, k], seed).unwrap()),
                    var((rand(&[o], seed + 1).unwrap() + 1.0).unwrap()),
                    var(rand(&[o], seed + 2).unwrap()),
                ]
            })
            .collect()
    }

    fn layers(vars: &[[Var; 3]]) -> Vec<ConvBnLayer<'_>> {
        vars.iter()
            .zip(SPECS)
            .map(
                |([kernel, weight, bias], (_, _, _, stride, padding, relu))| ConvBnLayer {
                    kernel,
                    weight,
                    bias,
                    stride,
                    padding,
                    relu,
                },
            )
            .collect()
    }

    /// The chain against its layers apart, in both formats and with the input
    /// tracked or not: output, statistics and every gradient within 1e-4.
    #[test]
    fn chain_matches_its_layers_apart() {
        for format in [MemoryFormat::Nchw, MemoryFormat::Nhwc] {
            for tracked in [true, false] {
                let x = Var::from_tensor(&rand(&[3, 2, 9, 7], 1).unwrap()).unwrap();
                let input = if tracked {
                    x.as_tensor().clone()
                } else {
                    x.as_tensor().detach()
                };
                let input = format.from_nchw(&input).unwrap();
                let vars = variables();
                let chained = conv_bn_chain_train(&input, &layers(&vars), 1e-5, format).unwrap();
                let apart = apart(&input, &layers(&vars), 1e-5, format).unwrap();
                let case = format!("{format:?} tracked={tracked}");
                assert_eq!(chained.0.dims(), apart.0.dims(), "{case}");
                assert!(rel_err(&chained.0, &apart.0).unwrap() < 1e-4, "y {case}");
                for (a, b) in chained.1.iter().zip(&apart.1) {
                    assert_eq!(a.per_channel, b.per_channel, "{case}");
                    assert!(rel_err(&a.mean, &b.mean).unwrap() < 1e-4, "mean {case}");
                    assert!(rel_err(&a.var, &b.var).unwrap() < 1e-4, "var {case}");
                }
                let r = rand(chained.0.dims(), 7).unwrap();
                let loss = |y: &Tensor| (y * &r).unwrap().sum_all().unwrap().backward().unwrap();
                let (ga, gb) = (loss(&chained.0), loss(&apart.0));
                assert_eq!(ga.get(&x).is_some(), tracked, "{case}");
                let names = ["kernel", "weight", "bias"];
                let mut all: Vec<_> = vars.iter().flat_map(|v| names.into_iter().zip(v)).collect();
                all.extend(tracked.then_some(("x", &x)));
                assert_same_grads((&ga, &gb), &all, &case);
            }
        }
    }

    #[test]
    fn bad_chains_are_errors() {
        let x = rand(&[2, 2, 6, 6], 1).unwrap();
        let err = conv_bn_chain_train(&x, &[], 1e-5, MemoryFormat::Nchw).unwrap_err();
        assert!(err.to_string().contains("no layers"), "{err}");
        let vars = variables();
        let mut bad = layers(&vars);
        bad.swap(0, 1); // 5 input channels expected, 2 given
        let err = conv_bn_chain_train(&x, &bad, 1e-5, MemoryFormat::Nchw).unwrap_err();
        assert!(err.to_string().contains("channels"), "{err}");
    }
}
