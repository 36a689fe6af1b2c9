//! CPC's context network (a masked convolution over the rows above) and its
//! predictors `W_k`.
use candle_core::{bail, Device, Result, Tensor, D};
use candle_nn::{Linear, Module, VarBuilder};
use selfsup_encoders::{torch_default_init, torch_linear};

/// Sizes of a [`CpcHead`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpcHeadConfig {
    /// Length of a patch latent, D.
    pub latent_dim: usize,
    /// Channels of the context network.
    pub context_dim: usize,
    /// Masked-convolution layers of the context network.
    pub layers: usize,
    /// Columns each masked convolution sees, centred (odd): 3 for image grids, 1 for
    /// frame sequences.
    pub columns: usize,
    /// Predictors: the context predicts k = 1..=steps rows ahead.
    pub steps: usize,
}

/// The context network and predictors of CPC (van den Oord et al. 2018; Hénaff et al.
/// 2020 use a PixelCNN-style masked convolution over the latent grid).
///
/// The context network projects each latent to `context_dim` channels (`input`), then
/// applies `layers` residual masked convolutions (`conv{l}`), each
/// `h ← h + ReLU(conv(h))` with a 2-row kernel (the row above and the current one) and
/// `columns` columns, so that the context `c_{i,j}` depends only on latents of rows
/// `≤ i`. Predictor `predict{k}` maps `c_{i,j}` to `ẑ_{i+k,j} = W_k c_{i,j}` (no bias).
///
/// Each masked convolution runs as two matrix products and no strided copies: every
/// cell's contribution to each tap, `U = h·W`, then the sum over taps as one product
/// with a fixed 0/1 matrix that places each tap's contribution at its target cell.
///
/// Variables: `input.{weight,bias}`, `conv{1..=layers}.{weight,bias}` (the weight
/// `(taps·context_dim, context_dim)`, taps `2·columns`), `predict{1..=steps}.weight`.
#[derive(Clone, Debug)]
pub struct CpcHead {
    input: Linear,
    convs: Vec<(Linear, Tensor)>,
    predictors: Vec<Linear>,
    columns: usize,
}

impl CpcHead {
    /// Builds the head, its variables initialised as PyTorch's `nn.Linear` and
    /// `nn.Conv2d`.
    ///
    /// # Errors
    /// If a size is zero, `columns` is even, or `vb` cannot provide a variable.
    pub fn new(cfg: CpcHeadConfig, vb: VarBuilder) -> Result<Self> {
        let CpcHeadConfig {
            latent_dim,
            context_dim,
            layers,
            columns,
            steps,
        } = cfg;
        if latent_dim == 0 || context_dim == 0 || steps == 0 || columns % 2 == 0 {
            bail!("CPC head: sizes must be positive and columns odd, got {cfg:?}")
        }
        let taps = 2 * columns;
        let conv_init = torch_default_init(taps * context_dim);
        let convs = (1..=layers)
            .map(|l| {
                let vb = vb.pp(format!("conv{l}"));
                let w =
                    vb.get_with_hints((taps * context_dim, context_dim), "weight", conv_init)?;
                let b = vb.get_with_hints(context_dim, "bias", conv_init)?;
                Ok((Linear::new(w, None), b))
            })
            .collect::<Result<_>>()?;
        let predictors = (1..=steps)
            .map(|k| {
                let init = torch_default_init(context_dim);
                let w = vb.pp(format!("predict{k}")).get_with_hints(
                    (latent_dim, context_dim),
                    "weight",
                    init,
                )?;
                Ok(Linear::new(w, None))
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            input: torch_linear(latent_dim, context_dim, vb.pp("input"))?,
            convs,
            predictors,
            columns,
        })
    }

    /// How many steps ahead the head predicts.
    pub fn steps(&self) -> usize {
        self.predictors.len()
    }

    /// The context `c_{i,j}` of every cell, from the latents of rows `≤ i`.
    ///
    /// # Shapes
    /// `(N, R, C, D)` to `(N, R, C, context_dim)`.
    ///
    /// # Errors
    /// If `z` is not rank 4 with `latent_dim` channels.
    pub fn context(&self, z: &Tensor) -> Result<Tensor> {
        let (n, r, c, d) = z.dims4()?;
        let cells = r * c;
        let mut h = self.input.forward(&z.reshape((n * cells, d))?)?;
        let width = h.dim(1)?;
        let taps = 2 * self.columns;
        let place = tap_placement(r, c, self.columns, z.device())?.broadcast_left(n)?;
        for (conv, bias) in &self.convs {
            // u[n, s·taps + t, :] is cell s's contribution through tap t.
            let u = conv.forward(&h)?.reshape((n, cells * taps, width))?;
            let y = place.matmul(&u)?.broadcast_add(bias)?.relu()?;
            h = (h + y.reshape((n * cells, width))?)?;
        }
        h.reshape((n, r, c, width))
    }

    /// Every step's predictions: entry `k - 1` holds `ẑ_{i+k,j} = W_k c_{i,j}` for the
    /// rows `i < R - k` that have a target.
    ///
    /// # Shapes
    /// `(N, R, C, D)` to `steps` tensors of `(N, R - k, C, D)`.
    ///
    /// # Errors
    /// If `z` has no more than `steps` rows, or as [`CpcHead::context`].
    pub fn predictions(&self, z: &Tensor) -> Result<Vec<Tensor>> {
        let (n, r, c, _) = z.dims4()?;
        if r <= self.steps() {
            bail!(
                "CPC predicts {} rows ahead, but the grid has only {r} rows",
                self.steps()
            )
        }
        let ctx = self.context(z)?;
        let width = ctx.dim(D::Minus1)?;
        self.predictors
            .iter()
            .enumerate()
            .map(|(k0, w)| {
                let rows = r - (k0 + 1);
                let from = ctx.narrow(1, 0, rows)?.reshape((n * rows * c, width))?;
                w.forward(&from)?.reshape((n, rows, c, ()))
            })
            .collect()
    }
}

/// The 0/1 matrix of a masked 2-row convolution with `columns` columns over an
/// `r x c` grid: entry `(s, s'·taps + t)` is 1 when tap `t = di·columns + dj` of
/// cell `s = (i, j)` reads cell `s' = (i + di - 1, j + dj - columns/2)`; taps that
/// fall outside the grid read nothing (zero padding).
///
/// # Shapes
/// `(r·c, r·c·2·columns)`.
fn tap_placement(r: usize, c: usize, columns: usize, device: &Device) -> Result<Tensor> {
    let (cells, taps, half) = (r * c, 2 * columns, columns / 2);
    let mut m = vec![0f32; cells * cells * taps];
    for i in 0..r {
        for j in 0..c {
            for di in 0..2 {
                for dj in 0..columns {
                    let (Some(si), Some(sj)) =
                        ((i + di).checked_sub(1), (j + dj).checked_sub(half))
                    else {
                        continue;
                    };
                    if sj < c {
                        let row = (i * c + j) * cells * taps;
                        m[row + (si * c + sj) * taps + di * columns + dj] = 1.0;
                    }
                }
            }
        }
    }
    Tensor::from_vec(m, (cells, cells * taps), device)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::cpc::tests::{input, var_names};
    use candle_core::{DType, Device, IndexOp};
    use candle_nn::VarMap;
    use selfsup_encoders::seeded_var_builder;

    fn head(columns: usize, steps: usize) -> (VarMap, CpcHead) {
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, 5, DType::F32, &Device::Cpu);
        let cfg = CpcHeadConfig {
            latent_dim: 6,
            context_dim: 5,
            layers: 2,
            columns,
            steps,
        };
        (varmap, CpcHead::new(cfg, vb).unwrap())
    }

    #[test]
    fn names_and_shapes() {
        let (varmap, h) = head(3, 2);
        let preds = h.predictions(&input(&[2, 4, 3, 6], 1)).unwrap();
        assert_eq!(preds.len(), 2);
        assert_eq!(preds[0].dims(), &[2, 3, 3, 6]);
        assert_eq!(preds[1].dims(), &[2, 2, 3, 6]);
        let want = [
            "conv1.bias",
            "conv1.weight",
            "conv2.bias",
            "conv2.weight",
            "input.bias",
            "input.weight",
            "predict1.weight",
            "predict2.weight",
        ];
        assert_eq!(var_names(&varmap), want);
        assert!(h.predictions(&input(&[2, 2, 3, 6], 2)).is_err());
        let vb = candle_nn::VarBuilder::zeros(DType::F32, &Device::Cpu);
        let even = CpcHeadConfig {
            latent_dim: 6,
            context_dim: 5,
            layers: 1,
            columns: 2,
            steps: 1,
        };
        assert!(CpcHead::new(even, vb).is_err());
    }

    /// One masked convolution, written out: `c = h + ReLU(b + Σ_taps h[src] · W_tap)`
    /// with `h` the input projection and `W_tap` the transpose of rows
    /// `tap·K .. (tap+1)·K` of the weight.
    #[test]
    fn context_matches_the_masked_convolution_written_out() {
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, 7, DType::F32, &Device::Cpu);
        let cfg = CpcHeadConfig {
            latent_dim: 4,
            context_dim: 3,
            layers: 1,
            columns: 3,
            steps: 1,
        };
        let head = CpcHead::new(cfg, vb).unwrap();
        let (n, r, c) = (2, 3, 4);
        let z = input(&[n, r, c, 4], 8);
        let got = head.context(&z).unwrap();
        let get = |name: &str| varmap.data().lock().unwrap()[name].as_tensor().clone();
        let (wi, bi) = (get("input.weight"), get("input.bias"));
        let h = z
            .broadcast_matmul(&wi.t().unwrap())
            .unwrap()
            .broadcast_add(&bi)
            .unwrap();
        let (w, b) = (get("conv1.weight"), get("conv1.bias"));
        for (bn, i, j) in [(0, 0, 0), (1, 2, 3), (0, 1, 2), (1, 2, 0)] {
            let mut acc = b.clone();
            for di in 0..2 {
                for dj in 0..3 {
                    let (si, sj) = (i as isize + di as isize - 1, j as isize + dj as isize - 1);
                    if si < 0 || sj < 0 || sj >= c as isize {
                        continue;
                    }
                    let src = h
                        .i((bn, si as usize, sj as usize))
                        .unwrap()
                        .unsqueeze(0)
                        .unwrap();
                    let w_tap = w.narrow(0, (di * 3 + dj) * 3, 3).unwrap().t().unwrap();
                    let term = src.matmul(&w_tap).unwrap().squeeze(0).unwrap();
                    acc = (acc + term).unwrap();
                }
            }
            let want = (h.i((bn, i, j)).unwrap() + acc.relu().unwrap()).unwrap();
            let diff = (want - got.i((bn, i, j)).unwrap()).unwrap().abs().unwrap();
            assert!(
                diff.max_all().unwrap().to_scalar::<f32>().unwrap() < 1e-5,
                "cell {bn} {i} {j}"
            );
        }
    }

    /// The context of row i must not change when rows below i change: it is masked.
    #[test]
    fn context_sees_only_rows_above_and_its_own() {
        for columns in [1, 3] {
            let (_, h) = head(columns, 1);
            let z = input(&[2, 5, 3, 6], 3);
            let mut z2 = z.i((.., 0..3)).unwrap();
            z2 = Tensor::cat(&[z2, input(&[2, 2, 3, 6], 4)], 1).unwrap();
            let (a, b) = (h.context(&z).unwrap(), h.context(&z2).unwrap());
            let top = (a.i((.., 0..3)).unwrap() - b.i((.., 0..3)).unwrap()).unwrap();
            assert_eq!(
                top.abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap(),
                0.0
            );
            let below = (a.i((.., 3..)).unwrap() - b.i((.., 3..)).unwrap()).unwrap();
            assert!(
                below
                    .abs()
                    .unwrap()
                    .max_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
                    > 0.0
            );
            // Row 3 does see row 2's other columns when the kernel is 3 wide.
            let mut z3 = z.i((.., 0..2)).unwrap();
            let row2 = z.i((.., 2..3)).unwrap();
            let changed = Tensor::cat(
                &[row2.i((.., .., 0..2)).unwrap(), input(&[2, 1, 1, 6], 5)],
                2,
            )
            .unwrap();
            z3 = Tensor::cat(&[z3, changed, z.i((.., 3..)).unwrap()], 1).unwrap();
            let c3 = h.context(&z3).unwrap();
            let cell = (a.i((.., 3, 0)).unwrap() - c3.i((.., 3, 0)).unwrap()).unwrap();
            let moved = cell
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert_eq!(moved > 0.0, columns == 3, "columns {columns}");
        }
    }
}
