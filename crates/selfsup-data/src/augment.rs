//! Image augmentations with torchvision semantics.
//!
//! These are the building blocks of the SimCLR recipe (Chen et al. 2020,
//! "A Simple Framework for Contrastive Learning of Visual Representations",
//! appendix A) as torchvision implements them: `RandomResizedCrop`,
//! `RandomHorizontalFlip`, `ColorJitter`, `RandomGrayscale`, `GaussianBlur`
//! and `RandomSolarize`. They work on [`Image`]s (CHW, `[0, 1]`); every
//! random choice comes from the [`Rng`] passed in, so the same generator state
//! always gives the same output. The bit streams differ from PyTorch's, so
//! results match torchvision in distribution, not bit for bit.
//!
//! Each public function returns a new image; the `*_in_place` variants used
//! by the view recipes avoid the extra allocation.

use crate::error::{DataError, Result};
use crate::image::Image;
use crate::rng::Rng;

/// torchvision's default aspect-ratio range for `RandomResizedCrop`.
pub const DEFAULT_RATIO: (f64, f64) = (3.0 / 4.0, 4.0 / 3.0);

/// ITU-R 601-2 luma weights (as PIL's `convert("L")`).
const LUMA: [f32; 3] = [0.299, 0.587, 0.114];

/// Python's `round` (half to even), as torchvision uses.
fn py_round(x: f64) -> f64 {
    x.round_ties_even()
}

/// The crop box `(top, left, height, width)` of torchvision's
/// `RandomResizedCrop.get_params`: up to 10 tries of an area fraction uniform
/// in `scale` and an aspect ratio log-uniform in `ratio`; if none fits, a
/// centre crop clamped to `ratio`.
pub fn random_resized_crop_params(
    height: usize,
    width: usize,
    scale: (f64, f64),
    ratio: (f64, f64),
    rng: &mut Rng,
) -> (usize, usize, usize, usize) {
    let area = (height * width) as f64;
    let (log_lo, log_hi) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target_area = area * rng.uniform(scale.0, scale.1);
        let aspect = rng.uniform(log_lo, log_hi).exp();
        let w = py_round((target_area * aspect).sqrt());
        let h = py_round((target_area / aspect).sqrt());
        // NaN (from a non-positive ratio) fails these tests too.
        if w > 0.0 && w <= width as f64 && h > 0.0 && h <= height as f64 {
            let (h, w) = (h as usize, w as usize);
            let top = rng.below((height - h + 1) as u64) as usize;
            let left = rng.below((width - w + 1) as u64) as usize;
            return (top, left, h, w);
        }
    }
    let in_ratio = width as f64 / height.max(1) as f64;
    let (rmin, rmax) = (ratio.0.min(ratio.1), ratio.0.max(ratio.1));
    let (mut h, mut w) = (height, width);
    if rmin > 0.0 && rmax.is_finite() {
        if in_ratio < rmin {
            h = (py_round(width as f64 / rmin) as usize).clamp(1, height.max(1));
        } else if in_ratio > rmax {
            w = (py_round(height as f64 * rmax) as usize).clamp(1, width.max(1));
        }
    }
    ((height - h) / 2, (width - w) / 2, h, w)
}

/// Source index pairs and weights for resizing `n_in` samples to `n_out`
/// with half-pixel centres (PyTorch's `align_corners=False`).
fn linear_taps(offset: usize, n_in: usize, n_out: usize) -> Vec<(usize, usize, f32)> {
    let scale = n_in as f64 / n_out as f64;
    (0..n_out)
        .map(|d| {
            let src = ((d as f64 + 0.5) * scale - 0.5).max(0.0);
            let i0 = (src.floor() as usize).min(n_in - 1);
            let i1 = (i0 + 1).min(n_in - 1);
            let l = (src - i0 as f64) as f32;
            (offset + i0, offset + i1, l)
        })
        .collect()
}

/// Bilinear resize of the box `(top, left, h, w)` of `img` to
/// `out_h x out_w` (align_corners=False, no antialiasing).
///
/// # Panics
/// If the box is empty or does not fit in `img`.
pub fn resized_crop(
    img: &Image,
    top: usize,
    left: usize,
    h: usize,
    w: usize,
    out_h: usize,
    out_w: usize,
) -> Image {
    assert!(h > 0 && w > 0 && top + h <= img.height && left + w <= img.width);
    let mut out = Image::zeros(img.channels, out_h, out_w);
    if out_h == 0 || out_w == 0 {
        return out;
    }
    let ys = linear_taps(top, h, out_h);
    let xs = linear_taps(left, w, out_w);
    for c in 0..img.channels {
        let src = img.plane(c);
        let dst = &mut out.data[c * out_h * out_w..(c + 1) * out_h * out_w];
        for (oy, &(y0, y1, ly)) in ys.iter().enumerate() {
            let r0 = &src[y0 * img.width..(y0 + 1) * img.width];
            let r1 = &src[y1 * img.width..(y1 + 1) * img.width];
            let row = &mut dst[oy * out_w..(oy + 1) * out_w];
            for (o, &(x0, x1, lx)) in row.iter_mut().zip(&xs) {
                let top_v = (1.0 - lx) * r0[x0] + lx * r0[x1];
                let bot_v = (1.0 - lx) * r1[x0] + lx * r1[x1];
                *o = (1.0 - ly) * top_v + ly * bot_v;
            }
        }
    }
    out
}

/// torchvision's `RandomResizedCrop(size=(out_h, out_w), scale, ratio)`:
/// a random box (see [`random_resized_crop_params`]) resized bilinearly.
///
/// Resizing uses half-pixel centres (align_corners=False) without
/// antialiasing, which equals torchvision when the crop is enlarged, the
/// usual case when the output size is the input size.
///
/// # Shapes
/// `(C, H, W)` in, `(C, out_h, out_w)` out.
pub fn random_resized_crop(
    img: &Image,
    out_h: usize,
    out_w: usize,
    scale: (f64, f64),
    ratio: (f64, f64),
    rng: &mut Rng,
) -> Image {
    if img.height == 0 || img.width == 0 {
        return Image::zeros(img.channels, out_h, out_w);
    }
    let (top, left, h, w) = random_resized_crop_params(img.height, img.width, scale, ratio, rng);
    resized_crop(img, top, left, h, w, out_h, out_w)
}

/// The geometric part shared by SimCLR, rotation and inpainting views:
/// [`random_resized_crop`] to `size x size` (aspect ratio 3/4 to 4/3), then a
/// horizontal flip with probability `hflip_p`.
///
/// # Shapes
/// `(C, H, W)` in, `(C, size, size)` out.
pub fn crop_and_flip(
    img: &Image,
    size: usize,
    scale: (f64, f64),
    hflip_p: f64,
    rng: &mut Rng,
) -> Image {
    let mut v = random_resized_crop(img, size, size, scale, DEFAULT_RATIO, rng);
    if rng.bernoulli(hflip_p) {
        hflip_in_place(&mut v);
    }
    v
}

/// Mirrors each row in place.
pub fn hflip_in_place(img: &mut Image) {
    if img.width == 0 {
        return;
    }
    for row in img.data.chunks_exact_mut(img.width) {
        row.reverse();
    }
}

/// Horizontal flip (torchvision `hflip`).
///
/// # Shapes
/// Same as the input.
pub fn hflip(img: &Image) -> Image {
    let mut out = img.clone();
    hflip_in_place(&mut out);
    out
}

/// Luma of pixel `k` of a 3-channel image.
#[inline]
fn luma(d: &[f32], plane: usize, k: usize) -> f32 {
    LUMA[0] * d[k] + LUMA[1] * d[plane + k] + LUMA[2] * d[2 * plane + k]
}

/// Replaces every channel by the luma, in place (no-op on 1 channel).
pub fn grayscale_in_place(img: &mut Image) {
    if img.channels != 3 {
        return;
    }
    let plane = img.plane_len();
    let d = &mut img.data;
    for k in 0..plane {
        let l = luma(d, plane, k);
        d[k] = l;
        d[plane + k] = l;
        d[2 * plane + k] = l;
    }
}

/// torchvision's `Grayscale(num_output_channels=C)`: ITU-R 601-2 luma
/// `0.299 R + 0.587 G + 0.114 B`, repeated over the 3 channels. A 1-channel
/// image is returned unchanged.
///
/// # Shapes
/// Same as the input (the channel count is kept).
pub fn grayscale(img: &Image) -> Image {
    let mut out = img.clone();
    grayscale_in_place(&mut out);
    out
}

/// `1 - p` for every value `p >= threshold`, in place.
pub fn solarize_in_place(img: &mut Image, threshold: f32) {
    for p in &mut img.data {
        if *p >= threshold {
            *p = 1.0 - *p;
        }
    }
}

/// torchvision's `solarize`: inverts every value at or above `threshold`.
///
/// # Shapes
/// Same as the input.
pub fn solarize(img: &Image, threshold: f32) -> Image {
    let mut out = img.clone();
    solarize_in_place(&mut out, threshold);
    out
}

/// PyTorch's `reflect` padding index (edge not repeated); needs `|overflow| < n`.
#[inline]
fn reflect(i: isize, n: usize) -> usize {
    let n = n as isize;
    let j = if i < 0 {
        -i
    } else if i >= n {
        2 * (n - 1) - i
    } else {
        i
    };
    j as usize
}

/// The normalised 1-D Gaussian kernel of torchvision's `GaussianBlur` for
/// radius `r` (size `2r + 1`).
fn gaussian_kernel(sigma: f32, r: usize) -> Vec<f32> {
    let k: Vec<f32> = (0..=2 * r)
        .map(|i| {
            let x = i as f32 - r as f32;
            (-0.5 * (x / sigma) * (x / sigma)).exp()
        })
        .collect();
    let s: f32 = k.iter().sum();
    k.into_iter().map(|v| v / s).collect()
}

/// Gaussian blur, in place, using `scratch` as working memory.
pub fn gaussian_blur_in_place(img: &mut Image, sigma: f32, scratch: &mut Vec<f32>) {
    let (h, w) = (img.height, img.width);
    if !(sigma.is_finite() && sigma > 0.0) || h == 0 || w == 0 {
        return;
    }
    // Kernel size 2*ceil(3 sigma)+1, capped so reflect padding stays inside the image.
    let r = ((3.0 * sigma).ceil() as usize).min(h.min(w) - 1);
    if r == 0 {
        return;
    }
    let k = gaussian_kernel(sigma, r);
    let plane = h * w;
    scratch.clear();
    scratch.resize(plane + w + 2 * r, 0.0);
    let (tmp, padded) = scratch.split_at_mut(plane);
    for c in 0..img.channels {
        let chan = &mut img.data[c * plane..(c + 1) * plane];
        // Horizontal pass: chan -> tmp.
        for y in 0..h {
            let row = &chan[y * w..(y + 1) * w];
            for (i, p) in padded.iter_mut().enumerate() {
                *p = row[reflect(i as isize - r as isize, w)];
            }
            let out = &mut tmp[y * w..(y + 1) * w];
            for (x, o) in out.iter_mut().enumerate() {
                *o = k
                    .iter()
                    .zip(&padded[x..x + 2 * r + 1])
                    .map(|(a, b)| a * b)
                    .sum();
            }
        }
        // Vertical pass: tmp -> chan, accumulating whole rows.
        for y in 0..h {
            let out = &mut chan[y * w..(y + 1) * w];
            out.fill(0.0);
            for (j, &kv) in k.iter().enumerate() {
                let sy = reflect(y as isize + j as isize - r as isize, h);
                let src = &tmp[sy * w..(sy + 1) * w];
                for (o, &s) in out.iter_mut().zip(src) {
                    *o += kv * s;
                }
            }
        }
    }
}

/// torchvision's `gaussian_blur` with kernel size `2*ceil(3 sigma)+1`
/// (capped at `2*min(H,W)-1` so reflect padding fits), separable, with
/// reflect padding. `sigma <= 0` returns the image unchanged.
///
/// # Shapes
/// Same as the input.
pub fn gaussian_blur(img: &Image, sigma: f32) -> Image {
    let mut out = img.clone();
    gaussian_blur_in_place(&mut out, sigma, &mut Vec::new());
    out
}

/// torchvision's `ColorJitter`: brightness, contrast and saturation factors
/// are drawn uniformly from `[max(0, 1 - x), 1 + x]` and the hue shift from
/// `[-hue, hue]`; the four adjustments are applied in a random order. A zero
/// strength disables that adjustment.
///
/// Contrast blends with the mean of the grayscale image; saturation blends
/// with the per-pixel grayscale; hue rotates the HSV hue. On 1-channel images
/// saturation and hue are no-ops (their factors are still drawn, so the
/// random stream does not depend on the channel count).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ColorJitter {
    /// Brightness strength (factor range `[max(0, 1-b), 1+b]`).
    pub brightness: f32,
    /// Contrast strength.
    pub contrast: f32,
    /// Saturation strength.
    pub saturation: f32,
    /// Hue strength, at most 0.5 (shift range `[-h, h]` of a full turn).
    pub hue: f32,
}

impl ColorJitter {
    /// A jitter with the given strengths.
    pub fn new(brightness: f32, contrast: f32, saturation: f32, hue: f32) -> Self {
        Self {
            brightness,
            contrast,
            saturation,
            hue,
        }
    }

    /// Checks the strengths.
    ///
    /// # Errors
    /// [`DataError::Config`] if a strength is negative or not finite, or
    /// `hue > 0.5`.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("jitter.brightness", self.brightness),
            ("jitter.contrast", self.contrast),
            ("jitter.saturation", self.saturation),
            ("jitter.hue", self.hue),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(DataError::config(name, format!("{v} must be >= 0")));
            }
        }
        if self.hue > 0.5 {
            return Err(DataError::config(
                "jitter.hue",
                format!("{} must be at most 0.5", self.hue),
            ));
        }
        Ok(())
    }

    /// Applies the jitter (see the type docs).
    ///
    /// # Shapes
    /// Same as the input.
    pub fn apply(&self, img: &Image, rng: &mut Rng) -> Image {
        let mut out = img.clone();
        self.apply_in_place(&mut out, rng);
        out
    }

    /// Applies the jitter in place.
    pub fn apply_in_place(&self, img: &mut Image, rng: &mut Rng) {
        let mut order = [0u8, 1, 2, 3];
        rng.shuffle(&mut order);
        let factor = |x: f32, rng: &mut Rng| {
            (x > 0.0).then(|| rng.uniform(f64::from((1.0 - x).max(0.0)), f64::from(1.0 + x)) as f32)
        };
        let b = factor(self.brightness, rng);
        let c = factor(self.contrast, rng);
        let s = factor(self.saturation, rng);
        let h =
            (self.hue > 0.0).then(|| rng.uniform(-f64::from(self.hue), f64::from(self.hue)) as f32);
        for op in order {
            match op {
                0 => {
                    if let Some(f) = b {
                        adjust_brightness(img, f)
                    }
                }
                1 => {
                    if let Some(f) = c {
                        adjust_contrast(img, f)
                    }
                }
                2 => {
                    if let Some(f) = s {
                        adjust_saturation(img, f)
                    }
                }
                _ => {
                    if let Some(f) = h {
                        adjust_hue(img, f)
                    }
                }
            }
        }
    }
}

/// `clamp(f * x, 0, 1)`.
pub fn adjust_brightness(img: &mut Image, f: f32) {
    for p in &mut img.data {
        *p = (f * *p).clamp(0.0, 1.0);
    }
}

/// `clamp(f * x + (1 - f) * mean(gray(x)), 0, 1)`.
pub fn adjust_contrast(img: &mut Image, f: f32) {
    let plane = img.plane_len();
    if plane == 0 {
        return;
    }
    let mean = if img.channels == 3 {
        (0..plane)
            .map(|k| f64::from(luma(&img.data, plane, k)))
            .sum::<f64>()
            / plane as f64
    } else {
        img.data.iter().map(|&p| f64::from(p)).sum::<f64>() / img.data.len() as f64
    } as f32;
    let add = (1.0 - f) * mean;
    for p in &mut img.data {
        *p = (f * *p + add).clamp(0.0, 1.0);
    }
}

/// `clamp(f * x + (1 - f) * gray(x), 0, 1)` per pixel; no-op unless 3 channels.
pub fn adjust_saturation(img: &mut Image, f: f32) {
    if img.channels != 3 {
        return;
    }
    let plane = img.plane_len();
    let d = &mut img.data;
    for k in 0..plane {
        let g = (1.0 - f) * luma(d, plane, k);
        for c in 0..3 {
            let p = &mut d[c * plane + k];
            *p = (f * *p + g).clamp(0.0, 1.0);
        }
    }
}

/// Rotates the HSV hue by `shift` turns (torchvision's `adjust_hue`); no-op
/// unless 3 channels.
pub fn adjust_hue(img: &mut Image, shift: f32) {
    if img.channels != 3 {
        return;
    }
    let plane = img.plane_len();
    let d = &mut img.data;
    for k in 0..plane {
        let (r, g, b) = (d[k], d[plane + k], d[2 * plane + k]);
        let (h, s, v) = rgb_to_hsv(r, g, b);
        let (r, g, b) = hsv_to_rgb((h + shift).rem_euclid(1.0), s, v);
        d[k] = r;
        d[plane + k] = g;
        d[2 * plane + k] = b;
    }
}

/// torchvision's `_rgb2hsv`, per pixel; `h` in `[0, 1)`.
fn rgb_to_hsv(r: f32, g: f32, b: f32) -> (f32, f32, f32) {
    let maxc = r.max(g).max(b);
    let minc = r.min(g).min(b);
    let cr = maxc - minc;
    if cr == 0.0 {
        return (0.0, 0.0, maxc);
    }
    let s = cr / maxc;
    let rc = (maxc - r) / cr;
    let gc = (maxc - g) / cr;
    let bc = (maxc - b) / cr;
    let h = if maxc == r {
        bc - gc
    } else if maxc == g {
        2.0 + rc - bc
    } else {
        4.0 + gc - rc
    };
    ((h / 6.0 + 1.0).rem_euclid(1.0), s, maxc)
}

/// torchvision's `_hsv2rgb`, per pixel.
fn hsv_to_rgb(h: f32, s: f32, v: f32) -> (f32, f32, f32) {
    let h6 = h * 6.0;
    let i = h6.floor();
    let f = h6 - i;
    let i = (i as i32).rem_euclid(6);
    let p = (v * (1.0 - s)).clamp(0.0, 1.0);
    let q = (v * (1.0 - s * f)).clamp(0.0, 1.0);
    let t = (v * (1.0 - s * (1.0 - f))).clamp(0.0, 1.0);
    match i {
        0 => (v, t, p),
        1 => (q, v, p),
        2 => (p, v, t),
        3 => (p, q, v),
        4 => (t, p, v),
        _ => (v, p, q),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn noise(c: usize, h: usize, w: usize, seed: u64) -> Image {
        let mut r = Rng::new(seed);
        Image {
            channels: c,
            height: h,
            width: w,
            data: (0..c * h * w).map(|_| r.f32()).collect(),
        }
    }

    fn in_unit(img: &Image) -> bool {
        img.data.iter().all(|p| (0.0..=1.0).contains(p))
    }

    #[test]
    fn crop_shapes_ranges_and_determinism() {
        let img = noise(3, 20, 30, 1);
        for seed in 0..50 {
            let a = random_resized_crop(
                &img,
                16,
                12,
                (0.08, 1.0),
                DEFAULT_RATIO,
                &mut Rng::new(seed),
            );
            let b = random_resized_crop(
                &img,
                16,
                12,
                (0.08, 1.0),
                DEFAULT_RATIO,
                &mut Rng::new(seed),
            );
            assert_eq!((a.channels, a.height, a.width), (3, 16, 12));
            assert_eq!(a.data.len(), 3 * 16 * 12);
            assert!(in_unit(&a));
            assert_eq!(a, b);
        }
        // Params stay inside the image and honour the scale bounds.
        let mut r = Rng::new(9);
        for _ in 0..500 {
            let (t, l, h, w) =
                random_resized_crop_params(28, 28, (0.2, 1.0), DEFAULT_RATIO, &mut r);
            assert!(h > 0 && w > 0 && t + h <= 28 && l + w <= 28);
            let frac = (h * w) as f64 / 784.0;
            assert!(frac > 0.15 && frac <= 1.0, "{frac}");
        }
    }

    #[test]
    fn crop_fallback_is_centre_crop() {
        // scale > 1 never fits, so the fallback runs: a 10x40 image is wider
        // than 4/3, giving h = 10, w = round(10 * 4/3) = 13, centred.
        let mut r = Rng::new(3);
        let p = random_resized_crop_params(10, 40, (2.0, 3.0), DEFAULT_RATIO, &mut r);
        assert_eq!(p, (0, 13, 10, 13));
        let p = random_resized_crop_params(10, 12, (2.0, 3.0), DEFAULT_RATIO, &mut r);
        assert_eq!(p, (0, 0, 10, 12));
    }

    #[test]
    fn full_crop_at_same_size_is_identity_and_resize_matches_torch() {
        let img = noise(2, 7, 5, 4);
        assert_eq!(resized_crop(&img, 0, 0, 7, 5, 7, 5), img);
        // torch.nn.functional.interpolate(torch.tensor([[[[0., 1.]]]]),
        //     size=(1, 4), mode="bilinear", align_corners=False)
        // -> tensor([[[[0.0000, 0.2500, 0.7500, 1.0000]]]])
        let row = Image {
            channels: 1,
            height: 1,
            width: 2,
            data: vec![0.0, 1.0],
        };
        let up = resized_crop(&row, 0, 0, 1, 2, 1, 4);
        assert_eq!(up.data, vec![0.0, 0.25, 0.75, 1.0]);
    }

    #[test]
    fn flip_twice_is_identity() {
        let img = noise(3, 5, 6, 2);
        let f = hflip(&img);
        assert_ne!(f, img);
        assert_eq!(f.get(1, 2, 0), img.get(1, 2, 5));
        assert_eq!(hflip(&f), img);
    }

    #[test]
    fn grayscale_properties() {
        let gray1 = noise(1, 4, 4, 5);
        assert_eq!(grayscale(&gray1), gray1);
        let rgb = noise(3, 4, 4, 6);
        let g = grayscale(&rgb);
        assert_eq!(g.channels, 3);
        assert_eq!(g.plane(0), g.plane(1));
        assert_eq!(g.plane(1), g.plane(2));
        let want = 0.299 * rgb.get(0, 1, 2) + 0.587 * rgb.get(1, 1, 2) + 0.114 * rgb.get(2, 1, 2);
        assert!((g.get(0, 1, 2) - want).abs() < 1e-6);
        // An already-gray RGB image is a fixed point.
        let g2 = grayscale(&g);
        for (a, b) in g.data.iter().zip(&g2.data) {
            assert!((a - b).abs() < 1e-6);
        }
    }

    #[test]
    fn jitter_ranges_determinism_and_grayscale_input() {
        let cj = ColorJitter::new(0.4, 0.4, 0.4, 0.1);
        let rgb = noise(3, 8, 8, 7);
        let a = cj.apply(&rgb, &mut Rng::new(11));
        assert_eq!(a, cj.apply(&rgb, &mut Rng::new(11)));
        assert_ne!(a, cj.apply(&rgb, &mut Rng::new(12)));
        assert!(in_unit(&a));
        assert_ne!(a, rgb);

        // 1 channel: works, stays in range, and saturation/hue alone do nothing.
        let g = noise(1, 8, 8, 8);
        let j = cj.apply(&g, &mut Rng::new(1));
        assert_eq!((j.channels, j.height, j.width), (1, 8, 8));
        assert!(in_unit(&j));
        assert_ne!(j, g);
        let sat_hue = ColorJitter::new(0.0, 0.0, 0.9, 0.5);
        assert_eq!(sat_hue.apply(&g, &mut Rng::new(2)), g);
        // Zero strengths: identity.
        assert_eq!(
            ColorJitter::new(0.0, 0.0, 0.0, 0.0).apply(&rgb, &mut Rng::new(3)),
            rgb
        );
        assert!(ColorJitter::new(0.4, -0.1, 0.0, 0.0).validate().is_err());
        assert!(ColorJitter::new(0.4, 0.4, 0.4, 0.6).validate().is_err());
        assert!(cj.validate().is_ok());
    }

    #[test]
    fn single_adjustments_match_torchvision_formulas() {
        let mut img = Image {
            channels: 3,
            height: 1,
            width: 2,
            data: vec![0.2, 0.8, 0.4, 0.6, 0.9, 0.1],
        };
        let orig = img.clone();
        adjust_brightness(&mut img, 1.5);
        assert!((img.data[0] - 0.3).abs() < 1e-6 && img.data[1] == 1.0);

        // Contrast 0 gives the grayscale mean everywhere.
        let mut c = orig.clone();
        adjust_contrast(&mut c, 0.0);
        let mean = (luma(&orig.data, 2, 0) + luma(&orig.data, 2, 1)) / 2.0;
        assert!(c.data.iter().all(|p| (p - mean).abs() < 1e-6));

        // Hue: a full turn is the identity; 1/3 turn maps pure red to green.
        let mut h = orig.clone();
        adjust_hue(&mut h, 0.0);
        for (a, b) in h.data.iter().zip(&orig.data) {
            assert!((a - b).abs() < 1e-5);
        }
        let mut red = Image {
            channels: 3,
            height: 1,
            width: 1,
            data: vec![1.0, 0.0, 0.0],
        };
        adjust_hue(&mut red, 1.0 / 3.0);
        assert!((red.data[0]).abs() < 1e-5 && (red.data[1] - 1.0).abs() < 1e-5);
        for &(r, g, b) in &[(0.2f32, 0.5f32, 0.9f32), (0.9, 0.1, 0.4), (0.3, 0.3, 0.7)] {
            let (hh, s, v) = rgb_to_hsv(r, g, b);
            let (r2, g2, b2) = hsv_to_rgb(hh, s, v);
            assert!((r - r2).abs() < 1e-5 && (g - g2).abs() < 1e-5 && (b - b2).abs() < 1e-5);
        }
    }

    #[test]
    fn blur_preserves_constants_and_mean_and_smooths() {
        let mut flat = Image::zeros(1, 6, 6);
        flat.data.fill(0.7);
        let b = gaussian_blur(&flat, 1.5);
        assert!(b.data.iter().all(|p| (p - 0.7).abs() < 1e-6));

        let img = noise(3, 16, 16, 3);
        let b = gaussian_blur(&img, 1.0);
        assert_eq!((b.channels, b.height, b.width), (3, 16, 16));
        assert!(in_unit(&b));
        let var = |d: &[f32]| {
            let m = d.iter().sum::<f32>() / d.len() as f32;
            d.iter().map(|p| (p - m) * (p - m)).sum::<f32>() / d.len() as f32
        };
        assert!(var(&b.data) < 0.5 * var(&img.data));
        assert_eq!(gaussian_blur(&img, 0.0), img);
        // A tiny image: radius capped, still finite.
        let tiny = noise(1, 2, 3, 4);
        assert!(in_unit(&gaussian_blur(&tiny, 5.0)));

        // Impulse response equals the normalised kernel (torchvision's
        // _get_gaussian_kernel1d with ksize 7, sigma 1 gives
        // [0.0044, 0.0540, 0.2420, 0.3991, 0.2420, 0.0540, 0.0044]).
        let k = gaussian_kernel(1.0, 3);
        let want = [0.0044, 0.0540, 0.2420, 0.3991, 0.2420, 0.0540, 0.0044];
        for (a, b) in k.iter().zip(want) {
            assert!((a - b).abs() < 1e-4, "{k:?}");
        }
        // The 2-D impulse response is the outer product of the kernel.
        let mut imp = Image::zeros(1, 9, 9);
        imp.data[4 * 9 + 4] = 1.0;
        let b = gaussian_blur(&imp, 1.0);
        for (y, x) in [(4, 4), (4, 5), (2, 6), (1, 4)] {
            let want = k[y + 3 - 4] * k[x + 3 - 4];
            assert!((b.get(0, y, x) - want).abs() < 1e-6, "({y},{x})");
        }
        assert!((b.data.iter().sum::<f32>() - 1.0).abs() < 1e-5);
    }

    #[test]
    fn solarize_inverts_above_threshold() {
        let img = Image {
            channels: 1,
            height: 1,
            width: 4,
            data: vec![0.1, 0.5, 0.7, 1.0],
        };
        assert_eq!(solarize(&img, 0.5).data, vec![0.1, 0.5, 0.3, 0.0]);
        assert_eq!(solarize(&img, 2.0), img);
    }
}
