//! The view recipe of next-frame prediction: a run of consecutive frames from a clip
//! item of a video dataset (frames stacked along the height, see
//! [`Dataset::clip_len`](crate::Dataset::clip_len)), the last of which is to be
//! predicted from the others.
use super::frame_order::frames_alike;
use crate::error::{DataError, Result};
use crate::image::Image;
use crate::rng::Rng;
use crate::views::ViewRecipe;

/// Next-frame prediction's views (Srivastava, Mansimov, Salakhutdinov 2015,
/// "Unsupervised Learning of Video Representations using LSTMs"; Mathieu, Couprie,
/// LeCun 2016, "Deep Multi-Scale Video Prediction Beyond Mean Square Error"):
/// `context_frames + 1` consecutive frames `t0, t0 + 1, …, t0 + context_frames` of the
/// clip, `t0` uniform over the clip, in temporal order. The first `context_frames`
/// views are the context and the last one is the frame to predict. All of them are
/// cropped and flipped alike ([`frames_alike`]), so the crop moves the scene about
/// from sample to sample without adding motion between the frames.
///
/// There are no free labels: the target is the last view.
#[derive(Clone, Debug, PartialEq)]
pub struct NextFrameViews {
    /// Frames per clip.
    pub clip_len: usize,
    /// Rows per frame (frames are square).
    pub frame_height: usize,
    /// Frames seen before the one to predict.
    pub context_frames: usize,
    /// Area range of the shared crop; `(1, 1)` keeps whole frames.
    pub crop_scale: (f64, f64),
}

impl NextFrameViews {
    /// The first frame of a sample: uniform over the starts that leave room for
    /// `context_frames + 1` frames.
    pub fn start(&self, rng: &mut Rng) -> usize {
        let starts = self.clip_len - self.context_frames;
        rng.below(starts as u64) as usize
    }
}

impl ViewRecipe for NextFrameViews {
    fn num_views(&self) -> usize {
        self.context_frames + 1
    }

    /// # Shapes
    /// A `(C, T·H, W)` clip in, `context_frames + 1` frames of `(C, H, H)` out.
    fn views(&self, img: &Image, rng: &mut Rng) -> Vec<Image> {
        let t0 = self.start(rng);
        let ts: Vec<usize> = (t0..=t0 + self.context_frames).collect();
        frames_alike(img, &ts, self.frame_height, self.crop_scale, rng)
    }

    fn validate(&self) -> Result<()> {
        if self.context_frames == 0 {
            return Err(DataError::config(
                "predictive.context-frames",
                "must be at least 1",
            ));
        }
        if self.frame_height == 0 || self.clip_len <= self.context_frames {
            return Err(DataError::config(
                "predictive.context-frames",
                format!(
                    "{} context frames and the next one need clips of at least {} frames, \
                     got {} (video.clip_len) of {} rows",
                    self.context_frames,
                    self.context_frames + 1,
                    self.clip_len,
                    self.frame_height
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// A 1-channel clip of `t` frames of `side`² pixels (`side`² < 1000): pixel `p` of
    /// frame `f` is `(1000 f + p) / (1000 t)`, so frame `f + 1` is frame `f` plus `1 / t`.
    fn ramp_clip(t: usize, side: usize) -> Image {
        let data = (0..t)
            .flat_map(|f| (0..side * side).map(move |p| (f * 1000 + p) as f32 / (t * 1000) as f32))
            .collect();
        Image {
            channels: 1,
            height: t * side,
            width: side,
            data,
        }
    }

    #[test]
    fn frames_are_consecutive_and_share_the_crop() {
        let (t, side) = (10, 8);
        let clip = ramp_clip(t, side);
        let recipe = NextFrameViews {
            clip_len: t,
            frame_height: side,
            context_frames: 3,
            crop_scale: (0.4, 0.8),
        };
        recipe.validate().unwrap();
        let step = 1000.0 / (t * 1000) as f32;
        let mut starts = std::collections::BTreeSet::new();
        for i in 0..300 {
            let views = recipe.views(&clip, &mut Rng::derive(3, &[i]));
            assert_eq!(views.len(), 4);
            for v in &views {
                assert_eq!((v.channels, v.height, v.width), (1, side, side));
            }
            // Frame f + 1 is frame f plus a constant: the same crop of consecutive frames.
            for w in views.windows(2) {
                for (a, b) in w[0].data.iter().zip(&w[1].data) {
                    assert!((b - a - step).abs() < 1e-5, "{a} then {b}");
                }
            }
            // The crop is not the whole frame (scale ≤ 0.8), so the start is read
            // from the smallest pixel, which lies in the first frame.
            let first = views[0].data.iter().copied().fold(f32::MAX, f32::min);
            starts.insert((first / step).floor() as usize);
        }
        // Every start from 0 to clip_len − 4 is drawn, and none later.
        assert_eq!(
            starts.into_iter().collect::<Vec<_>>(),
            (0..=6).collect::<Vec<_>>()
        );
    }

    #[test]
    fn clips_too_short_for_the_context_name_the_setting() {
        let recipe = NextFrameViews {
            clip_len: 4,
            frame_height: 8,
            context_frames: 4,
            crop_scale: (1.0, 1.0),
        };
        let e = recipe.validate().unwrap_err().to_string();
        assert!(e.contains("predictive.context-frames"), "{e}");
        let zero = NextFrameViews {
            context_frames: 0,
            ..recipe.clone()
        };
        assert!(zero.validate().is_err());
        let fits = NextFrameViews {
            context_frames: 3,
            ..recipe
        };
        fits.validate().unwrap();
    }
}
