//! Latent codes for the generators, drawn from a seeded generator so that runs
//! and resumed runs repeat exactly.
use candle_core::{Device, Result, Tensor};
use selfsup_data::Rng;

/// `n` codes of `dim` values drawn from N(0, 1) (DCGAN draws uniform noise; the
/// Gaussian is the common choice since, and BiGAN's encoder outputs are unbounded).
///
/// # Shapes
/// The result is `(n, dim)`, `f32`.
///
/// # Errors
/// On tensor errors.
pub fn gaussian_latents(rng: &mut Rng, n: usize, dim: usize, device: &Device) -> Result<Tensor> {
    let values: Vec<f32> = (0..n * dim).map(|_| rng.normal() as f32).collect();
    Tensor::from_vec(values, (n, dim), device)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn codes_repeat_with_the_seed_and_look_standard_normal() {
        let draw = |seed| {
            let z = gaussian_latents(&mut Rng::new(seed), 100, 50, &Device::Cpu).unwrap();
            z.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        };
        let (a, b) = (draw(3), draw(3));
        assert_eq!(a, b);
        assert_ne!(a, draw(4));
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        let var = a.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / a.len() as f32;
        assert!(mean.abs() < 0.05 && (var - 1.0).abs() < 0.1, "{mean} {var}");
    }
}
