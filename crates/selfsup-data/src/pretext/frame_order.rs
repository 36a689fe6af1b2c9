//! View recipes of the video pretext tasks, whose free label is the order of frames:
//! Shuffle & Learn's frame tuples and odd-one-out's clips. Both read a clip item of a
//! video dataset (frames stacked along the height, see
//! [`Dataset::clip_len`](crate::Dataset::clip_len)).
use crate::augment::{crop_and_flip, hflip_in_place, random_resized_crop, DEFAULT_RATIO};
use crate::error::{DataError, Result};
use crate::image::Image;
use crate::rng::Rng;
use crate::views::{Sample, ViewRecipe};

/// Frame `t` of a clip whose frames are `frame_height` rows each.
///
/// # Shapes
/// `(C, T·H, W)` in, `(C, H, W)` out.
pub fn clip_frame(clip: &Image, t: usize, frame_height: usize) -> Image {
    let plane = frame_height * clip.width;
    let mut data = Vec::with_capacity(clip.channels * plane);
    for c in 0..clip.channels {
        let start = c * clip.plane_len() + t * plane;
        data.extend_from_slice(&clip.data[start..start + plane]);
    }
    Image {
        channels: clip.channels,
        height: frame_height,
        width: clip.width,
        data,
    }
}

/// Frames `ts` of a clip, all cropped and flipped alike (one draw of [`crop_and_flip`]
/// to the frame's side, applied to each), so that only time tells them apart while the
/// scene may move about from sample to sample.
///
/// # Shapes
/// `(C, T·H, W)` in, `ts.len()` frames of `(C, H, H)` out.
pub fn frames_alike(
    clip: &Image,
    ts: &[usize],
    frame_height: usize,
    crop_scale: (f64, f64),
    rng: &mut Rng,
) -> Vec<Image> {
    let draw = Rng::derive(rng.next_u64(), &[]);
    ts.iter()
        .map(|&t| {
            let frame = clip_frame(clip, t, frame_height);
            crop_and_flip(&frame, frame_height, crop_scale, 0.5, &mut draw.clone())
        })
        .collect()
}

/// The frames `ts` of one sample. Without `per_frame` they share one crop
/// ([`frames_alike`]); with it they are still flipped alike but each draws its own crop
/// in `crop_scale`, so that where things sit in the frame no longer tells the frames'
/// order and the order has to be read from how they look.
///
/// # Shapes
/// As [`frames_alike`].
pub fn sample_frames(
    clip: &Image,
    ts: &[usize],
    frame_height: usize,
    crop_scale: (f64, f64),
    per_frame: bool,
    rng: &mut Rng,
) -> Vec<Image> {
    if !per_frame {
        return frames_alike(clip, ts, frame_height, crop_scale, rng);
    }
    let mut draw = Rng::derive(rng.next_u64(), &[]);
    let flip = draw.clone().bernoulli(0.5);
    let crop_seed = draw.next_u64();
    let crop = |(i, &t): (usize, &usize)| {
        let frame = clip_frame(clip, t, frame_height);
        let mut own = Rng::derive(crop_seed, &[i as u64 + 1]);
        let side = frame_height;
        let mut v = random_resized_crop(&frame, side, side, crop_scale, DEFAULT_RATIO, &mut own);
        if flip {
            hflip_in_place(&mut v);
        }
        v
    };
    ts.iter().enumerate().map(crop).collect()
}

/// `count` increasing frame indices below `clip_len`, successive ones at least `gap`
/// apart: `count` uniform draws from the slack, sorted, the k-th shifted by `k·gap`.
/// Needs `(count − 1)·gap < clip_len`.
pub fn spaced_positions(clip_len: usize, count: usize, gap: usize, rng: &mut Rng) -> Vec<usize> {
    let slack = clip_len - 1 - (count - 1) * gap;
    let mut draws: Vec<usize> = (0..count)
        .map(|_| rng.below(slack as u64 + 1) as usize)
        .collect();
    draws.sort_unstable();
    draws
        .into_iter()
        .enumerate()
        .map(|(k, p)| p + k * gap)
        .collect()
}

/// The smallest gap between sampled frames of a `clip_len`-frame clip: an eighth of it,
/// so that the frames of a tuple differ visibly even at high frame rates (Misra et al.
/// keep sampled frames at least half a second apart).
pub fn min_gap(clip_len: usize) -> usize {
    (clip_len / 8).max(1)
}

/// Checks that a clip recipe fits its clips.
fn check_clip(setting: &str, clip_len: usize, frame_height: usize, needed: usize) -> Result<()> {
    if frame_height == 0 || clip_len < needed {
        return Err(DataError::config(
            setting,
            format!(
                "needs clips of at least {needed} frames, got {clip_len} of {frame_height} rows"
            ),
        ));
    }
    Ok(())
}

/// Shuffle & Learn's frame tuples (Misra, Zitnick, Hebert 2016, "Shuffle and Learn:
/// Unsupervised Learning using Temporal Order Verification"): five frames
/// `a < b < c < d < e` from the clip, at least [`min_gap`] apart. A positive (label 1,
/// with probability ½) is `(b, c, d)`; a negative (label 0) replaces the middle frame
/// with `a` or `e`, from outside the `(b, d)` window. Either is reversed with
/// probability ½, since order is the same forwards and backwards. The three frames are
/// flipped alike and share one crop or, with `crop_per_frame`, draw their own
/// ([`sample_frames`]).
#[derive(Clone, Debug, PartialEq)]
pub struct ShuffleLearnViews {
    /// Frames per clip.
    pub clip_len: usize,
    /// Rows per frame (frames are square).
    pub frame_height: usize,
    /// Area range of the crop; `(1, 1)` keeps whole frames.
    pub crop_scale: (f64, f64),
    /// Each frame draws its own crop instead of sharing one.
    pub crop_per_frame: bool,
}

impl ShuffleLearnViews {
    /// The tuple's frame indices in the clip and its label (1 = in order).
    pub fn tuple(&self, rng: &mut Rng) -> ([usize; 3], u32) {
        let p = spaced_positions(self.clip_len, 5, min_gap(self.clip_len), rng);
        let positive = rng.bernoulli(0.5);
        let middle = if positive {
            p[2]
        } else if rng.bernoulli(0.5) {
            p[0]
        } else {
            p[4]
        };
        let tuple = if rng.bernoulli(0.5) {
            [p[3], middle, p[1]]
        } else {
            [p[1], middle, p[3]]
        };
        (tuple, u32::from(positive))
    }
}

impl ViewRecipe for ShuffleLearnViews {
    fn num_views(&self) -> usize {
        3
    }

    fn views(&self, img: &Image, rng: &mut Rng) -> Vec<Image> {
        self.sample(img, rng).views
    }

    fn num_targets(&self) -> usize {
        1
    }

    fn sample(&self, img: &Image, rng: &mut Rng) -> Sample {
        let (tuple, label) = self.tuple(rng);
        Sample {
            views: sample_frames(
                img,
                &tuple,
                self.frame_height,
                self.crop_scale,
                self.crop_per_frame,
                rng,
            ),
            targets: vec![label],
        }
    }

    fn validate(&self) -> Result<()> {
        check_clip(
            "video.clip_len",
            self.clip_len,
            self.frame_height,
            4 * min_gap(self.clip_len) + 1,
        )
    }
}

/// Odd-one-out (Fernando, Bilen, Gavves, Gould 2017, "Self-Supervised Video
/// Representation Learning With Odd-One-Out Networks"): `questions` sub-clips of
/// `frames` frames each from the clip, at least [`min_gap`] apart. All but one are in
/// temporal order (forwards or backwards, as a reversed clip is a plausible motion);
/// the odd one's frames are in an order that is neither. Views are sub-clip-major
/// (`questions · frames` frames, cropped as Shuffle & Learn's); the label is the odd
/// sub-clip's index.
#[derive(Clone, Debug, PartialEq)]
pub struct OddOneOutViews {
    /// Frames per clip.
    pub clip_len: usize,
    /// Rows per frame (frames are square).
    pub frame_height: usize,
    /// Area range of the crop; `(1, 1)` keeps whole frames.
    pub crop_scale: (f64, f64),
    /// Each frame draws its own crop instead of sharing one.
    pub crop_per_frame: bool,
    /// Sub-clips per question (N).
    pub questions: usize,
    /// Frames per sub-clip.
    pub frames: usize,
}

impl OddOneOutViews {
    /// The frame indices of every sub-clip and the odd one's index.
    pub fn question(&self, rng: &mut Rng) -> (Vec<Vec<usize>>, u32) {
        let odd = rng.below(self.questions as u64) as usize;
        let gap = min_gap(self.clip_len);
        let clips = (0..self.questions)
            .map(|q| {
                let mut p = spaced_positions(self.clip_len, self.frames, gap, rng);
                if q == odd {
                    while is_monotone(&p) {
                        rng.shuffle(&mut p);
                    }
                } else if rng.bernoulli(0.5) {
                    p.reverse();
                }
                p
            })
            .collect();
        (clips, odd as u32)
    }
}

/// Whether `p` is increasing or decreasing throughout.
pub fn is_monotone(p: &[usize]) -> bool {
    p.windows(2).all(|w| w[0] < w[1]) || p.windows(2).all(|w| w[0] > w[1])
}

impl ViewRecipe for OddOneOutViews {
    fn num_views(&self) -> usize {
        self.questions * self.frames
    }

    fn views(&self, img: &Image, rng: &mut Rng) -> Vec<Image> {
        self.sample(img, rng).views
    }

    fn num_targets(&self) -> usize {
        1
    }

    fn sample(&self, img: &Image, rng: &mut Rng) -> Sample {
        let (clips, odd) = self.question(rng);
        let ts: Vec<usize> = clips.concat();
        Sample {
            views: sample_frames(
                img,
                &ts,
                self.frame_height,
                self.crop_scale,
                self.crop_per_frame,
                rng,
            ),
            targets: vec![odd],
        }
    }

    fn validate(&self) -> Result<()> {
        if self.questions < 2 || self.frames < 3 {
            return Err(DataError::config(
                "pretext.questions",
                format!(
                    "odd-one-out needs at least 2 sub-clips of at least 3 frames, got {} of {}",
                    self.questions, self.frames
                ),
            ));
        }
        let needed = (self.frames - 1) * min_gap(self.clip_len) + 1;
        check_clip("video.clip_len", self.clip_len, self.frame_height, needed)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// A 2-channel clip of `t` frames of 3x3 whose every pixel of frame `f`, channel
    /// `c` is `f + 100 c` (over 255, as the loader's `[0, 1]` images are).
    fn numbered_clip(t: usize) -> Image {
        let data = (0..2)
            .flat_map(|c| (0..t).flat_map(move |f| [(f + 100 * c) as f32 / 255.0; 9]))
            .collect();
        Image {
            channels: 2,
            height: 3 * t,
            width: 3,
            data,
        }
    }

    /// The frame index a view of [`numbered_clip`] shows.
    fn frame_index(view: &Image) -> usize {
        assert_eq!((view.channels, view.height, view.width), (2, 3, 3));
        let f = (view.data[0] * 255.0).round() as usize;
        assert!(view.data[..9]
            .iter()
            .all(|&v| (v * 255.0).round() as usize == f));
        assert!(view.data[9..]
            .iter()
            .all(|&v| (v * 255.0).round() as usize == f + 100));
        f
    }

    #[test]
    fn shuffle_learn_labels_match_the_true_frame_order() {
        let recipe = ShuffleLearnViews {
            clip_len: 16,
            frame_height: 3,
            crop_scale: (0.6, 1.0),
            crop_per_frame: false,
        };
        recipe.validate().unwrap();
        let clip = numbered_clip(16);
        let mut positives = 0;
        for i in 0..2000 {
            let s = recipe.sample(&clip, &mut Rng::derive(5, &[i]));
            let f: Vec<usize> = s.views.iter().map(frame_index).collect();
            let in_order = is_monotone(&f);
            assert_eq!(s.targets, vec![u32::from(in_order)], "frames {f:?}");
            // The outer frames are at least two gaps apart; a negative's middle lies
            // outside them.
            let (lo, hi) = (f[0].min(f[2]), f[0].max(f[2]));
            assert!(hi - lo >= 2 * min_gap(16));
            if !in_order {
                assert!(f[1] < lo || f[1] > hi);
            }
            positives += usize::from(in_order);
        }
        assert!(
            (900..1100).contains(&positives),
            "{positives} positives of 2000"
        );
        let short = ShuffleLearnViews {
            clip_len: 4,
            ..recipe
        };
        assert!(short.validate().is_err());
    }

    #[test]
    fn odd_one_out_labels_the_one_unordered_sub_clip() {
        let recipe = OddOneOutViews {
            clip_len: 16,
            frame_height: 3,
            crop_scale: (0.6, 1.0),
            crop_per_frame: false,
            questions: 4,
            frames: 3,
        };
        recipe.validate().unwrap();
        let clip = numbered_clip(16);
        let mut seen = [0usize; 4];
        for i in 0..400 {
            let s = recipe.sample(&clip, &mut Rng::derive(6, &[i]));
            assert_eq!(s.views.len(), 12);
            let f: Vec<usize> = s.views.iter().map(frame_index).collect();
            let unordered: Vec<usize> = f
                .chunks(3)
                .enumerate()
                .filter(|(_, c)| !is_monotone(c))
                .map(|(q, _)| q)
                .collect();
            assert_eq!(unordered, vec![s.targets[0] as usize], "frames {f:?}");
            seen[s.targets[0] as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 60), "{seen:?}");
        let bad = OddOneOutViews {
            questions: 1,
            ..recipe.clone()
        };
        assert!(bad.validate().is_err());
    }

    #[test]
    fn frames_of_a_sample_share_one_crop_and_flip() {
        // Every frame is the same gradient, so frames cropped alike come out equal.
        let frame: Vec<f32> = (0..64).map(|p| p as f32 / 64.0).collect();
        let clip = Image {
            channels: 1,
            height: 8 * 5,
            width: 8,
            data: frame.repeat(5),
        };
        let mut differ = false;
        for i in 0..20 {
            let views = frames_alike(&clip, &[0, 2, 4], 8, (0.3, 0.6), &mut Rng::derive(2, &[i]));
            assert!(views.iter().all(|v| v == &views[0]));
            differ |= views[0].data != frame;
        }
        assert!(differ, "the crop never changed the frame");
    }

    #[test]
    fn per_frame_crops_differ_but_the_flip_is_shared() {
        // A gradient along x: a flipped crop decreases along its rows, an unflipped one
        // increases; crops that differ give different frames.
        let frame: Vec<f32> = (0..64).map(|p| (p % 8) as f32 / 8.0).collect();
        let clip = Image {
            channels: 1,
            height: 8 * 5,
            width: 8,
            data: frame.repeat(5),
        };
        let (mut differ, mut flips) = (0, 0);
        for i in 0..20 {
            let rng = &mut Rng::derive(2, &[i]);
            let views = sample_frames(&clip, &[0, 2, 4], 8, (0.3, 0.6), true, rng);
            let flipped: Vec<bool> = views.iter().map(|v| v.data[7] < v.data[0]).collect();
            assert!(
                flipped.iter().all(|&f| f == flipped[0]),
                "sample {i}: {flipped:?}"
            );
            flips += usize::from(flipped[0]);
            differ += usize::from(views.iter().any(|v| v != &views[0]));
        }
        assert!(
            differ >= 15,
            "frames differed in only {differ} of 20 samples"
        );
        assert!((3..=17).contains(&flips), "{flips} of 20 samples flipped");
    }

    #[test]
    fn spaced_positions_keep_their_gap_and_fill_the_clip() {
        let mut rng = Rng::new(1);
        let (mut first, mut last) = (usize::MAX, 0);
        for _ in 0..500 {
            let p = spaced_positions(16, 5, 3, &mut rng);
            assert!(p.windows(2).all(|w| w[1] >= w[0] + 3), "{p:?}");
            first = first.min(p[0]);
            last = last.max(p[4]);
        }
        assert_eq!((first, last), (0, 15));
    }
}
