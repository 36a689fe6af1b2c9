//! The GANs' latent codes: seeded, counted draws, so that a resumed run draws what
//! the uninterrupted run would have.
use candle_core::{DType, Device, Tensor};
use selfsup_data::Rng;
use selfsup_generative::gaussian_latents;
use std::collections::HashMap;

/// Key of the draw counter in the method's state.
const DRAWS: &str = "latents.draws";
/// Stream keys of [`Latents::draw`] and [`Latents::fixed`].
const DRAW_KEY: u64 = 0x6c61_7465_6e74_7300;
const FIXED_KEY: u64 = 0x6669_7865_6400_0000;

/// Draws `dim`-long codes from N(0, 1), the `i`-th draw from a stream derived
/// from `(seed, i)`. In a data-parallel run each rank takes its own rows of the
/// global batch's draw, so the ranks' codes together are one process's.
pub(crate) struct Latents {
    seed: u64,
    pub(crate) dim: usize,
    draws: u32,
    /// This rank and the number of ranks.
    shard: (usize, usize),
    /// `draws` as a one-element tensor, for [`Latents::state`].
    saved: Tensor,
}

impl Latents {
    pub(crate) fn new(seed: u64, dim: usize) -> candle_core::Result<Self> {
        Ok(Self {
            seed,
            dim,
            draws: 0,
            shard: (0, 1),
            saved: Tensor::new(&[0u32], &Device::Cpu)?,
        })
    }

    /// Takes rows `rank·n..(rank + 1)·n` of every global draw of `world·n` codes.
    pub(crate) fn shard(&mut self, rank: usize, world: usize) {
        self.shard = (rank, world);
    }

    /// The next `n` codes, `(n, dim)`: this rank's share of the global batch's.
    pub(crate) fn draw(&mut self, n: usize, device: &Device) -> candle_core::Result<Tensor> {
        let mut rng = Rng::derive(self.seed, &[DRAW_KEY, u64::from(self.draws)]);
        self.draws = self.draws.wrapping_add(1);
        self.saved = Tensor::new(&[self.draws], &Device::Cpu)?;
        let (rank, world) = self.shard;
        gaussian_latents(&mut rng, n * world, self.dim, device)?.narrow(0, rank * n, n)
    }

    /// The same `n` codes every time: the sample grid shows how they evolve.
    pub(crate) fn fixed(&self, n: usize, device: &Device) -> candle_core::Result<Tensor> {
        gaussian_latents(
            &mut Rng::derive(self.seed, &[FIXED_KEY]),
            n,
            self.dim,
            device,
        )
    }

    /// The draw counter, for the method's state.
    pub(crate) fn state(&self) -> (String, Tensor) {
        (DRAWS.to_string(), self.saved.clone())
    }

    /// Restores the counter that [`Latents::state`] saved.
    pub(crate) fn load_state(
        &mut self,
        state: &HashMap<String, Tensor>,
    ) -> candle_core::Result<()> {
        let Some(t) = state.get(DRAWS) else {
            candle_core::bail!("method state lacks {DRAWS}")
        };
        let values = t.to_dtype(DType::U32)?.flatten_all()?.to_vec1::<u32>()?;
        let [draws] = values.as_slice() else {
            candle_core::bail!(
                "method state {DRAWS} should hold one value, got {}",
                values.len()
            )
        };
        self.draws = *draws;
        self.saved = Tensor::new(&[self.draws], &Device::Cpu)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn a_restored_counter_continues_the_same_draws() {
        let dev = Device::Cpu;
        let mut a = Latents::new(7, 3).unwrap();
        a.draw(2, &dev).unwrap();
        let saved: HashMap<String, Tensor> = [a.state()].into_iter().collect();
        let mut b = Latents::new(7, 3).unwrap();
        b.load_state(&saved).unwrap();
        let (x, y) = (a.draw(2, &dev).unwrap(), b.draw(2, &dev).unwrap());
        assert_eq!(x.to_vec2::<f32>().unwrap(), y.to_vec2::<f32>().unwrap());
        let first = Latents::new(7, 3).unwrap().draw(2, &dev).unwrap();
        assert_ne!(first.to_vec2::<f32>().unwrap(), x.to_vec2::<f32>().unwrap());
        assert!(b.load_state(&HashMap::new()).is_err());
    }
}
