//! BiGAN's discriminator (Donahue et al. 2017, "Adversarial Feature Learning"):
//! it sees an image together with a latent code and tells `(x, E(x))` pairs from
//! `(G(z), z)` pairs.
use crate::discriminator::{frozen_linear, ConvFeatures, LEAK};
use candle_core::{Result, Tensor};
use candle_nn::{Linear, Module, VarBuilder};
use selfsup_encoders::torch_linear;

/// The image goes through [`ConvFeatures`] (to `2w` values), the code through a
/// linear layer (to `2w`); both are concatenated and pass a `4w`-unit hidden layer
/// to one logit, with leaky ReLUs in between, as in the paper's joint discriminator.
///
/// Variables: `x.conv1.*`, `x.conv2.*`, `z.{weight,bias}`, `joint.{weight,bias}`,
/// `out.{weight,bias}`, from PyTorch's default init.
#[derive(Clone, Debug)]
pub struct JointDiscriminator {
    image: ConvFeatures,
    code: Linear,
    joint: Linear,
    out: Linear,
}

impl JointDiscriminator {
    /// A discriminator of `channels`-channel images paired with `latent_dim` codes.
    ///
    /// # Errors
    /// If a dimension is zero or `vb` cannot provide a variable.
    pub fn new(channels: usize, latent_dim: usize, width: usize, vb: VarBuilder) -> Result<Self> {
        if latent_dim == 0 {
            candle_core::bail!("joint discriminator needs a positive latent_dim")
        }
        Ok(Self {
            image: ConvFeatures::new(channels, width, &vb.pp("x"))?,
            code: torch_linear(latent_dim, 2 * width, vb.pp("z"))?,
            joint: torch_linear(4 * width, 4 * width, vb.pp("joint"))?,
            out: torch_linear(4 * width, 1, vb.pp("out"))?,
        })
    }

    /// A copy that computes the same logits but passes no gradient to its own
    /// variables: what the encoder's and generator's loss goes through.
    pub fn frozen(&self) -> Self {
        Self {
            image: self.image.frozen(),
            code: frozen_linear(&self.code),
            joint: frozen_linear(&self.joint),
            out: frozen_linear(&self.out),
        }
    }

    /// One logit per pair, positive for "image and code of the data" (`(x, E(x))`).
    ///
    /// # Shapes
    /// `x` `(N, channels, H, W)` with `H, W ≥ 2`, `z` `(N, latent_dim)`, to `(N,)`.
    pub fn forward(&self, x: &Tensor, z: &Tensor) -> Result<Tensor> {
        let leaky = |t: Tensor| candle_nn::ops::leaky_relu(&t, LEAK);
        let hx = self.image.forward(x)?;
        let hz = leaky(self.code.forward(z)?)?;
        let h = leaky(self.joint.forward(&Tensor::cat(&[hx, hz], 1)?)?)?;
        self.out.forward(&h)?.squeeze(1)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::discriminator_loss;
    use candle_core::{DType, Device};
    use candle_nn::VarMap;

    #[test]
    fn every_variable_gets_a_gradient_from_both_inputs() {
        let dev = Device::Cpu;
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DType::F32, &dev);
        let d = JointDiscriminator::new(1, 5, 4, vb).unwrap();
        let x = Tensor::randn(0f32, 1.0, (3, 1, 12, 12), &dev).unwrap();
        let z = Tensor::randn(0f32, 1.0, (3, 5), &dev).unwrap();
        let real = d.forward(&x, &z).unwrap();
        assert_eq!(real.dims(), &[3]);
        let fake = d.forward(&x.neg().unwrap(), &z).unwrap();
        let grads = discriminator_loss(&real, &fake)
            .unwrap()
            .backward()
            .unwrap();
        assert_eq!(vm.all_vars().len(), 10);
        for var in vm.all_vars() {
            let g = grads.get(&var).unwrap().abs().unwrap().sum_all().unwrap();
            let g = g.to_scalar::<f32>().unwrap();
            assert!(g.is_finite() && g > 0.0);
        }
        // The code matters: the same image with another code gets another logit.
        let other = d.forward(&x, &z.affine(-1.0, 0.5).unwrap()).unwrap();
        let diff = (other - real).unwrap().abs().unwrap().sum_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() > 0.0);
        assert!(
            JointDiscriminator::new(1, 0, 4, VarBuilder::from_varmap(&vm, DType::F32, &dev))
                .is_err()
        );
    }
}
