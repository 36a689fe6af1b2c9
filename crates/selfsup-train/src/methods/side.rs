//! A network that its method trains itself, outside the run's optimizer: the
//! other player of a GAN (the discriminator of BiGAN and of inpainting's
//! adversarial loss, DCGAN's generator).
use crate::optim::{trainable_params, AdamW, Optimizer};
use crate::Result;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use selfsup_dist::tensor::{average_gradients, broadcast_vars, mean_scalar, BUCKET_ELEMS};
use selfsup_dist::{Communicator, SingleProcess};
use selfsup_encoders::seeded_var_builder;
use std::collections::HashMap;
use std::sync::Arc;

/// DCGAN's Adam betas (Radford et al. 2016), which GAN recipes keep.
pub(crate) const GAN_BETAS: (f64, f64) = (0.5, 0.999);

/// `net`, with its variables in a `VarMap` of its own and its own Adam, so that the
/// run's optimizer never sees them. Its variables and optimizer state are saved
/// under `{name}.var.` and `{name}.opt.` in the method's state. In a data-parallel
/// run its gradients are averaged over the ranks, as the run's are.
pub(crate) struct SideNet<N> {
    pub(crate) net: N,
    name: &'static str,
    varmap: VarMap,
    optimizer: AdamW,
    group: Arc<dyn Communicator>,
}

impl<N> SideNet<N> {
    /// Builds `net` with `build` from a var builder seeded with `seed`; Adam with `betas`.
    pub(crate) fn new(
        name: &'static str,
        seed: u64,
        device: &Device,
        betas: (f64, f64),
        build: impl FnOnce(VarBuilder) -> candle_core::Result<N>,
    ) -> Result<Self> {
        let varmap = VarMap::new();
        let net = build(seeded_var_builder(&varmap, seed, DType::F32, device))?;
        let optimizer = AdamW::new(trainable_params(&varmap, &[]), betas.0, betas.1, 1e-8, 0.0)?;
        Ok(Self {
            net,
            name,
            varmap,
            optimizer,
            group: Arc::new(SingleProcess),
        })
    }

    /// Joins the ranks of a data-parallel run: every rank takes rank 0's weights, and
    /// each step averages the gradients over `group`.
    ///
    /// # Errors
    /// On a collective's failure or timeout.
    pub(crate) fn join_group(&mut self, group: Arc<dyn Communicator>) -> candle_core::Result<()> {
        let vars: Vec<Var> = self.vars().into_iter().map(|(_, v)| v).collect();
        broadcast_vars(group.as_ref(), &vars, 0)?;
        self.group = group;
        Ok(())
    }

    /// One Adam step of the side network on `loss` at `lr`, returning the loss (its
    /// mean over the ranks). A non-finite loss, on any rank, is returned without a
    /// step. Gradients that `loss` sends to other variables (the run's) are dropped.
    pub(crate) fn step(&mut self, loss: &Tensor, lr: f64) -> candle_core::Result<Option<f32>> {
        let value = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        let value = mean_scalar(self.group.as_ref(), value)?;
        if value.is_finite() {
            let mut grads = loss.backward()?;
            let vars = self.optimizer_vars();
            average_gradients(self.group.as_ref(), &vars, &mut grads, BUCKET_ELEMS)?;
            self.optimizer.step(&grads, lr)?;
        }
        Ok(Some(value))
    }

    /// The variables the optimizer updates (running statistics excluded), sorted by
    /// name, so that every rank reduces them in the same order.
    fn optimizer_vars(&self) -> Vec<Var> {
        trainable_params(&self.varmap, &[])
            .into_iter()
            .map(|p| p.var)
            .collect()
    }

    /// The variables (running statistics included), sorted by name.
    pub(crate) fn vars(&self) -> Vec<(String, Var)> {
        let data = self.varmap.data().lock().unwrap_or_else(|p| p.into_inner());
        let mut vars: Vec<_> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }

    /// Variables and optimizer state, for the method's [`crate::Method::state`].
    pub(crate) fn state(&self) -> Vec<(String, Tensor)> {
        let name = self.name;
        let mut out: Vec<(String, Tensor)> = self
            .vars()
            .into_iter()
            .map(|(k, var)| (format!("{name}.var.{k}"), var.as_tensor().clone()))
            .collect();
        out.extend(
            self.optimizer
                .state()
                .into_iter()
                .map(|(k, t)| (format!("{name}.opt.{k}"), t)),
        );
        out
    }

    /// Restores what [`SideNet::state`] saved.
    ///
    /// # Errors
    /// If a variable is missing or has another shape, or the optimizer state does not fit.
    pub(crate) fn load_state(
        &mut self,
        state: &HashMap<String, Tensor>,
    ) -> candle_core::Result<()> {
        let name = self.name;
        for (k, var) in self.vars() {
            let key = format!("{name}.var.{k}");
            let Some(t) = state.get(&key) else {
                candle_core::bail!("method state lacks {key}")
            };
            if t.dims() != var.dims() {
                candle_core::bail!(
                    "method state {key} has shape {:?}, expected {:?}",
                    t.dims(),
                    var.dims()
                )
            }
            var.set(&t.to_device(var.device())?.to_dtype(var.dtype())?)?;
        }
        let prefix = format!("{name}.opt.");
        let opt: HashMap<String, Tensor> = state
            .iter()
            .filter_map(|(k, t)| Some((k.strip_prefix(&prefix)?.to_string(), t.clone())))
            .collect();
        self.optimizer.load_state(&opt)
    }
}
