//! A small convolutional discriminator and the two sides of the GAN logistic loss
//! (Goodfellow et al. 2014; Radford et al. 2016), used by the context encoder's
//! adversarial loss (Pathak et al. 2016, section 3.2.2) and BiGAN.
use candle_core::{Result, Tensor};
use candle_nn::{Module, VarBuilder};
use selfsup_encoders::{torch_default_init, torch_linear};

/// Slope of the leaky ReLUs (DCGAN's 0.2).
pub(crate) const LEAK: f64 = 0.2;

/// Two stride-2 convolutions (kernel 4, padding 1, to `w` and `2w` channels, each
/// with a bias and a leaky ReLU) and a global average pool: the image half of
/// [`Discriminator`] and [`JointDiscriminator`](crate::JointDiscriminator). It has
/// no batch norm, so its variables are only weights and biases.
#[derive(Clone, Debug)]
pub(crate) struct ConvFeatures {
    convs: Vec<(Tensor, Tensor)>,
}

impl ConvFeatures {
    /// Variables `conv1.{weight,bias}` and `conv2.{weight,bias}`, from PyTorch's default init.
    pub(crate) fn new(channels: usize, width: usize, vb: &VarBuilder) -> Result<Self> {
        if channels == 0 || width == 0 {
            candle_core::bail!(
                "discriminator needs positive channels ({channels}) and width ({width})"
            )
        }
        let widths = [channels, width, 2 * width];
        let convs = widths
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                let vb = vb.pp(format!("conv{}", i + 1));
                let init = torch_default_init(w[0] * 16);
                Ok((
                    vb.get_with_hints((w[1], w[0], 4, 4), "weight", init)?,
                    vb.get_with_hints(w[1], "bias", init)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { convs })
    }

    /// A copy whose weights are detached: gradients stop at it.
    pub(crate) fn frozen(&self) -> Self {
        let convs = self
            .convs
            .iter()
            .map(|(w, b)| (w.detach(), b.detach()))
            .collect();
        Self { convs }
    }

    /// `(N, channels, H, W)` with `H, W ≥ 2` to `(N, 2·width)`.
    pub(crate) fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = x.clone();
        for (weight, bias) in &self.convs {
            h = h
                .conv2d(weight, 1, 2, 1, 1)?
                .broadcast_add(&bias.reshape((1, (), 1, 1))?)?;
            h = candle_nn::ops::leaky_relu(&h, LEAK)?;
        }
        h.flatten_from(2)?.mean(2)
    }
}

/// Tells real images from fake ones: [`ConvFeatures`] and a linear layer to one
/// logit. Shaped after DCGAN's discriminator (Radford et al. 2016), which the
/// context encoder's adversarial loss uses, at the size of this toolkit's small
/// images.
///
/// Variables: `conv1.{weight,bias}`, `conv2.{weight,bias}`, `fc.{weight,bias}`,
/// from PyTorch's default init.
#[derive(Clone, Debug)]
pub struct Discriminator {
    features: ConvFeatures,
    fc: candle_nn::Linear,
}

impl Discriminator {
    /// A discriminator of `channels`-channel images with `width` first-layer channels.
    ///
    /// # Errors
    /// If a dimension is zero or `vb` cannot provide a variable.
    pub fn new(channels: usize, width: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            features: ConvFeatures::new(channels, width, &vb)?,
            fc: torch_linear(2 * width, 1, vb.pp("fc"))?,
        })
    }

    /// A copy that computes the same logits but passes no gradient to its own
    /// variables, only to its input: what the generator's loss goes through, so
    /// that the generator's update cannot reach the discriminator.
    pub fn frozen(&self) -> Self {
        Self {
            features: self.features.frozen(),
            fc: frozen_linear(&self.fc),
        }
    }

    /// One logit per image, positive for "real".
    ///
    /// # Shapes
    /// `(N, channels, H, W)` with `H, W ≥ 2` to `(N,)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.fc.forward(&self.features.forward(x)?)?.squeeze(1)
    }
}

/// `layer` with detached weight and bias.
pub(crate) fn frozen_linear(layer: &candle_nn::Linear) -> candle_nn::Linear {
    candle_nn::Linear::new(layer.weight().detach(), layer.bias().map(Tensor::detach))
}

/// `log(1 + exp(x))`, computed stably as `max(x, 0) + log(1 + exp(−|x|))`.
fn softplus(x: &Tensor) -> Result<Tensor> {
    x.relu()? + x.abs()?.neg()?.exp()?.affine(1.0, 1.0)?.log()?
}

/// The discriminator's loss: binary cross-entropy with real images labelled 1 and
/// fakes 0, `mean(softplus(−real)) + mean(softplus(fake))`.
///
/// # Shapes
/// Logits of any shapes; the loss is a scalar.
///
/// # Errors
/// On tensor errors.
pub fn discriminator_loss(real_logits: &Tensor, fake_logits: &Tensor) -> Result<Tensor> {
    softplus(&real_logits.neg()?)?.mean_all()? + softplus(fake_logits)?.mean_all()?
}

/// The generator's adversarial loss (non-saturating, as in the paper's code):
/// `mean(softplus(−fake))`, the cross-entropy of labelling fakes real.
///
/// # Shapes
/// Logits of any shape; the loss is a scalar.
///
/// # Errors
/// On tensor errors.
pub fn generator_loss(fake_logits: &Tensor) -> Result<Tensor> {
    softplus(&fake_logits.neg()?)?.mean_all()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn losses_match_hand_values() {
        let dev = Device::Cpu;
        let real = Tensor::new(&[0f64, 2.0], &dev).unwrap();
        let fake = Tensor::new(&[-1f64, 30.0], &dev).unwrap();
        let sp = |x: f64| (1.0 + x.exp()).ln();
        let want = (sp(0.0) + sp(-2.0)) / 2.0 + (sp(-1.0) + 30.0) / 2.0;
        let got = discriminator_loss(&real, &fake).unwrap();
        assert!((got.to_scalar::<f64>().unwrap() - want).abs() < 1e-12);
        let want = (sp(1.0) + sp(-30.0)) / 2.0;
        let got = generator_loss(&fake).unwrap();
        assert!((got.to_scalar::<f64>().unwrap() - want).abs() < 1e-12);
    }

    #[test]
    fn every_variable_gets_a_gradient() {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        let d = Discriminator::new(3, 4, vb).unwrap();
        let x = Tensor::randn(0f32, 1.0, (2, 3, 9, 9), &dev).unwrap();
        let logits = d.forward(&x).unwrap();
        assert_eq!(logits.dims(), &[2]);
        let grads = discriminator_loss(&logits, &logits.neg().unwrap())
            .unwrap()
            .backward()
            .unwrap();
        assert_eq!(vm.all_vars().len(), 6);
        for var in vm.all_vars() {
            let g = grads.get(&var).unwrap().abs().unwrap().sum_all().unwrap();
            assert!(g.to_scalar::<f32>().unwrap() > 0.0);
        }
    }

    #[test]
    fn frozen_copy_gives_the_same_logits_and_gradients_only_to_its_input() {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let d = Discriminator::new(1, 4, VarBuilder::from_varmap(&vm, DType::F32, &dev)).unwrap();
        let x =
            candle_core::Var::from_tensor(&Tensor::randn(0f32, 1.0, (2, 1, 8, 8), &dev).unwrap())
                .unwrap();
        let frozen = d.frozen();
        let (a, b) = (d.forward(&x).unwrap(), frozen.forward(&x).unwrap());
        assert_eq!(a.to_vec1::<f32>().unwrap(), b.to_vec1::<f32>().unwrap());
        let grads = generator_loss(&b).unwrap().backward().unwrap();
        assert!(grads.get(x.as_tensor()).is_some());
        assert!(vm.all_vars().iter().all(|v| grads.get(v).is_none()));
    }
}
