//! Clips: fixed-length windows of video frames, the items of a video dataset.
//!
//! A video is cut into non-overlapping windows of `clip_len` frames. The first
//! `1 − held_out` of each video gives the training split and the rest the test split,
//! so no test frame is ever trained on. Following Shuffle & Learn (Misra, Zitnick,
//! Hebert 2016), which samples tuples from high-motion windows, clips whose motion
//! (mean absolute difference of successive frames) is below `min_motion` times the
//! median clip's are dropped.
use std::ops::Range;

use crate::dataset::{channel_stats, Dataset, Split};
use crate::error::{DataError, Result};
use crate::video::Video;

/// Settings of video datasets (`video:<path>` and `moving-fmnist`), the `[video]`
/// table of a run's `config.toml`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VideoOptions {
    /// Side of the square frames, in pixels (ffmpeg scales to it).
    pub size: usize,
    /// Frames per clip, one dataset item.
    pub clip_len: usize,
    /// Fraction at the end of every video that forms the test split.
    pub held_out: f64,
    /// Clips moving less than this fraction of the median clip are dropped.
    pub min_motion: f64,
    /// Training videos of `moving-fmnist` (its test split has a quarter as many).
    pub moving_videos: usize,
    /// Items of one class moving in each `moving-fmnist` video.
    pub moving_items: usize,
    /// Fastest spin of a `moving-fmnist` item, in degrees per frame: each item turns at
    /// a speed uniform in ±this from a uniform start angle (0: items do not turn).
    pub moving_spin: f64,
    /// Scale change of a `moving-fmnist` item over its video: each item's scale goes
    /// linearly from 1 − r·this to 1 + r·this, r uniform in [−1, 1] (0: fixed size).
    pub moving_zoom: f64,
}

impl Default for VideoOptions {
    fn default() -> Self {
        Self {
            size: 64,
            clip_len: 16,
            held_out: 0.2,
            min_motion: 0.5,
            moving_videos: 2000,
            moving_items: 1,
            moving_spin: 0.0,
            moving_zoom: 0.0,
        }
    }
}

impl VideoOptions {
    /// Checks every setting.
    ///
    /// # Errors
    /// [`DataError::Config`] naming the first bad one.
    pub fn validate(&self) -> Result<()> {
        if self.size < 8 {
            return Err(DataError::config(
                "video.size",
                format!("frames need at least 8 pixels a side, got {}", self.size),
            ));
        }
        if self.clip_len < 3 {
            return Err(DataError::config(
                "video.clip_len",
                format!("a clip needs at least 3 frames, got {}", self.clip_len),
            ));
        }
        if !(self.held_out > 0.0 && self.held_out < 1.0) {
            return Err(DataError::config(
                "video.held_out",
                format!("must lie strictly between 0 and 1, got {}", self.held_out),
            ));
        }
        if !(self.min_motion.is_finite() && self.min_motion >= 0.0) {
            return Err(DataError::config(
                "video.min_motion",
                format!("must be ≥ 0, got {}", self.min_motion),
            ));
        }
        if self.moving_videos < 4 {
            return Err(DataError::config(
                "video.moving_videos",
                format!("need at least 4 videos, got {}", self.moving_videos),
            ));
        }
        if self.moving_items == 0 {
            return Err(DataError::config(
                "video.moving_items",
                "need at least 1 item per video",
            ));
        }
        if !(self.moving_spin >= 0.0 && self.moving_spin <= 180.0) {
            return Err(DataError::config(
                "video.moving_spin",
                format!(
                    "degrees per frame must lie in [0, 180], got {}",
                    self.moving_spin
                ),
            ));
        }
        if !(self.moving_zoom >= 0.0 && self.moving_zoom <= 0.5) {
            return Err(DataError::config(
                "video.moving_zoom",
                format!("must lie in [0, 0.5], got {}", self.moving_zoom),
            ));
        }
        Ok(())
    }
}

/// The frame ranges of the clips of one split of a `frames`-long video: training
/// clips tile `[0, split_at)`, test clips tile `[split_at, frames)`, where
/// `split_at = round((1 − held_out) · frames)`; leftover frames at the end of a
/// span are not used.
pub fn clip_windows(
    frames: usize,
    clip_len: usize,
    held_out: f64,
    split: Split,
) -> Vec<Range<usize>> {
    let split_at = ((1.0 - held_out) * frames as f64).round() as usize;
    let span = match split {
        Split::Train => 0..split_at.min(frames),
        Split::Test => split_at.min(frames)..frames,
    };
    let count = span.len() / clip_len.max(1);
    (0..count)
        .map(|k| {
            let start = span.start + k * clip_len;
            start..start + clip_len
        })
        .collect()
}

/// Mean absolute difference of successive frames in `range`, in `[0, 255]` units.
pub fn motion(video: &Video, range: Range<usize>) -> f64 {
    let pairs = range.len().saturating_sub(1);
    if pairs == 0 {
        return 0.0;
    }
    let total: u64 = (range.start..range.end - 1)
        .map(|t| {
            video
                .frame(t)
                .iter()
                .zip(video.frame(t + 1))
                .map(|(&a, &b)| u64::from(a.abs_diff(b)))
                .sum::<u64>()
        })
        .sum();
    total as f64 / (pairs * video.frame_len()) as f64
}

/// The frames of `range` appended to `out` in the clip layout: for each channel, the
/// frames one below the other.
fn push_clip(video: &Video, range: Range<usize>, out: &mut Vec<u8>) {
    let plane = video.height * video.width;
    for c in 0..video.channels {
        for t in range.clone() {
            out.extend_from_slice(&video.frame(t)[c * plane..(c + 1) * plane]);
        }
    }
}

/// One clip: where it comes from and its label.
#[derive(Clone, Debug, PartialEq)]
pub struct ClipSource {
    /// Index of the video in the list given to [`clip_dataset`].
    pub video: usize,
    /// Its frames in that video.
    pub frames: Range<usize>,
}

/// The clips of one split of `videos`, after dropping low-motion clips (see the module
/// documentation), with their sources. `whole = true` makes each video one clip of
/// its first `clip_len` frames and keeps them all: for videos generated split by split
/// and always in motion, like moving-fmnist, where a motion threshold would only drop
/// the items with fewer bright pixels.
///
/// # Errors
/// [`DataError::Config`] if the videos differ in shape, or no clip is left.
pub fn select_clips(
    videos: &[Video],
    opts: &VideoOptions,
    split: Split,
    whole: bool,
) -> Result<Vec<ClipSource>> {
    let mut clips = Vec::new();
    for (v, video) in videos.iter().enumerate() {
        let windows = if whole {
            std::iter::once(0..opts.clip_len.min(video.len())).collect()
        } else {
            clip_windows(video.len(), opts.clip_len, opts.held_out, split)
        };
        clips.extend(
            windows
                .into_iter()
                .filter(|w| w.len() == opts.clip_len)
                .map(|frames| ClipSource { video: v, frames }),
        );
    }
    if whole {
        return non_empty(clips, videos, opts, split);
    }
    let motions: Vec<f64> = clips
        .iter()
        .map(|c| motion(&videos[c.video], c.frames.clone()))
        .collect();
    let mut sorted = motions.clone();
    sorted.sort_by(f64::total_cmp);
    let threshold = opts.min_motion * sorted.get(sorted.len() / 2).copied().unwrap_or(0.0);
    let kept: Vec<ClipSource> = clips
        .into_iter()
        .zip(&motions)
        .filter(|(_, &m)| m >= threshold)
        .map(|(c, _)| c)
        .collect();
    non_empty(kept, videos, opts, split)
}

/// `clips`, or an error saying that the videos are too short for them.
fn non_empty(
    clips: Vec<ClipSource>,
    videos: &[Video],
    opts: &VideoOptions,
    split: Split,
) -> Result<Vec<ClipSource>> {
    if clips.is_empty() {
        let name = videos.first().map_or("video", |v| v.name.as_str());
        return Err(DataError::config(
            "video.clip_len",
            format!(
                "{name}: no {split:?} clip of {} frames (videos too short for the split and clip length)",
                opts.clip_len
            ),
        ));
    }
    Ok(clips)
}

/// The clips of one split of `videos` as a [`Dataset`] (see [`Dataset::clip_len`]),
/// labelled per video when `labels` is given (with the class count), and normalised
/// with the channel statistics of the training clips of `videos`, whichever split is
/// loaded.
///
/// # Errors
/// As [`select_clips`], or if the videos differ in shape.
pub fn clip_dataset(
    name: &str,
    videos: &[Video],
    labels: Option<(&[u32], usize)>,
    opts: &VideoOptions,
    split: Split,
    whole: bool,
) -> Result<Dataset> {
    let Some(first) = videos.first() else {
        return Err(DataError::config("dataset", format!("{name}: no videos")));
    };
    let (c, h, w) = (first.channels, first.height, first.width);
    if let Some(odd) = videos
        .iter()
        .find(|v| (v.channels, v.height, v.width) != (c, h, w))
    {
        return Err(DataError::config(
            "dataset",
            format!(
                "{name}: {} has {}x{}x{} frames but {} has {c}x{h}x{w}",
                odd.name, odd.channels, odd.height, odd.width, first.name
            ),
        ));
    }
    let stats_clips = select_clips(videos, opts, Split::Train, whole)?;
    let clips = if split == Split::Train {
        stats_clips.clone()
    } else {
        select_clips(videos, opts, split, whole)?
    };
    let mut stats_pixels = Vec::new();
    for clip in &stats_clips {
        push_clip(&videos[clip.video], clip.frames.clone(), &mut stats_pixels);
    }
    let (mean, std) = channel_stats(c, opts.clip_len * h * w, &stats_pixels);
    let pixels = if split == Split::Train {
        stats_pixels
    } else {
        let mut out = Vec::new();
        for clip in &clips {
            push_clip(&videos[clip.video], clip.frames.clone(), &mut out);
        }
        out
    };
    let (clip_labels, classes) = match labels {
        Some((per_video, classes)) => (
            Some(clips.iter().map(|c| per_video[c.video]).collect()),
            classes,
        ),
        None => (None, 0),
    };
    Dataset::new(
        name,
        c,
        opts.clip_len * h,
        w,
        pixels,
        clip_labels,
        classes,
        mean,
        std,
    )?
    .with_clip_len(opts.clip_len)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// A 1-channel 2x2 video whose frame `t` is filled with `values[t]`.
    fn flat_video(values: &[u8]) -> Video {
        Video {
            name: "flat".into(),
            channels: 1,
            height: 2,
            width: 2,
            frames: values.iter().flat_map(|&v| [v; 4]).collect(),
        }
    }

    #[test]
    fn held_out_span_never_overlaps_training_frames() {
        for frames in [10, 37, 795] {
            for clip_len in [3, 4, 16] {
                for held_out in [0.1, 0.2, 0.5] {
                    let train = clip_windows(frames, clip_len, held_out, Split::Train);
                    let test = clip_windows(frames, clip_len, held_out, Split::Test);
                    let last_train = train.iter().map(|r| r.end).max().unwrap_or(0);
                    let first_test = test.iter().map(|r| r.start).min().unwrap_or(frames);
                    assert!(last_train <= first_test, "{frames} {clip_len} {held_out}");
                    for r in train.iter().chain(&test) {
                        assert_eq!(r.len(), clip_len);
                        assert!(r.end <= frames);
                    }
                    let split_at = ((1.0 - held_out) * frames as f64).round() as usize;
                    assert!(train.iter().all(|r| r.end <= split_at));
                    assert!(test.iter().all(|r| r.start >= split_at));
                }
            }
        }
        assert_eq!(clip_windows(10, 3, 0.2, Split::Train), vec![0..3, 3..6]);
        assert_eq!(
            clip_windows(10, 3, 0.2, Split::Test),
            Vec::<Range<usize>>::new()
        );
        assert_eq!(clip_windows(20, 3, 0.3, Split::Test), vec![14..17, 17..20]);
    }

    #[test]
    fn clips_stack_frames_per_channel_and_drop_still_windows() {
        // Frames 0..8 change every frame; 8..12 are still.
        let mut values: Vec<u8> = (0..8).map(|t| t * 10).collect();
        values.extend([70; 4]);
        values.extend([0, 50, 100, 150]);
        let video = flat_video(&values);
        assert_eq!(motion(&video, 0..4), 10.0);
        assert_eq!(motion(&video, 8..12), 0.0);
        let opts = VideoOptions {
            clip_len: 4,
            held_out: 0.25,
            ..Default::default()
        };
        let train = clip_dataset(
            "v",
            std::slice::from_ref(&video),
            None,
            &opts,
            Split::Train,
            false,
        )
        .unwrap();
        // Windows 0..4, 4..8 and 8..12; the still one is dropped.
        assert_eq!(train.len(), 2);
        assert_eq!(train.clip_len, 4);
        assert_eq!((train.height, train.frame_height()), (8, 2));
        assert_eq!(train.raw(1), &video.frames[16..32]);
        let test = clip_dataset(
            "v",
            std::slice::from_ref(&video),
            None,
            &opts,
            Split::Test,
            false,
        )
        .unwrap();
        assert_eq!(test.len(), 1);
        assert_eq!(test.raw(0), &video.frames[48..64]);
        // Normalised with the training clips' statistics.
        assert_eq!(
            (test.mean.clone(), test.std.clone()),
            (train.mean, train.std)
        );
        let frames = test.frames();
        assert_eq!((frames.len(), frames.height, frames.clip_len), (4, 2, 1));
        assert_eq!(frames.raw(2), &[100; 4]);
    }

    #[test]
    fn colour_clips_keep_channel_planes_apart_and_labels_follow_videos() {
        // Two 3-channel 1x1 videos of 3 frames: pixel (t, c) = 100 v + 10 t + c.
        let videos: Vec<Video> = (0..2u8)
            .map(|v| Video {
                name: format!("v{v}"),
                channels: 3,
                height: 1,
                width: 1,
                frames: (0..3u8)
                    .flat_map(|t| (0..3u8).map(move |c| 100 * v + 10 * t + c))
                    .collect(),
            })
            .collect();
        let opts = VideoOptions {
            clip_len: 3,
            ..Default::default()
        };
        let d = clip_dataset("m", &videos, Some((&[4, 7], 10)), &opts, Split::Test, true).unwrap();
        assert_eq!(d.labels, Some(vec![4, 7]));
        // Channel-major: R of frames 0, 1, 2, then G, then B.
        assert_eq!(d.raw(1), &[100, 110, 120, 101, 111, 121, 102, 112, 122]);
        let frames = d.frames();
        assert_eq!(frames.raw(4), &[110, 111, 112]);
        assert_eq!(frames.labels.clone().unwrap(), vec![4, 4, 4, 7, 7, 7]);
    }

    #[test]
    fn bad_options_and_short_videos_are_config_errors() {
        for bad in [
            VideoOptions {
                size: 4,
                ..Default::default()
            },
            VideoOptions {
                clip_len: 2,
                ..Default::default()
            },
            VideoOptions {
                held_out: 1.0,
                ..Default::default()
            },
            VideoOptions {
                min_motion: f64::NAN,
                ..Default::default()
            },
        ] {
            let e = bad.validate().unwrap_err().to_string();
            assert!(e.contains("video."), "{e}");
        }
        for (bad, key) in [
            (
                VideoOptions {
                    moving_spin: -1.0,
                    ..Default::default()
                },
                "video.moving_spin",
            ),
            (
                VideoOptions {
                    moving_spin: f64::NAN,
                    ..Default::default()
                },
                "video.moving_spin",
            ),
            (
                VideoOptions {
                    moving_spin: 181.0,
                    ..Default::default()
                },
                "video.moving_spin",
            ),
            (
                VideoOptions {
                    moving_zoom: 0.6,
                    ..Default::default()
                },
                "video.moving_zoom",
            ),
            (
                VideoOptions {
                    moving_zoom: f64::INFINITY,
                    ..Default::default()
                },
                "video.moving_zoom",
            ),
        ] {
            let e = bad.validate().unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
        VideoOptions {
            moving_spin: 180.0,
            moving_zoom: 0.5,
            ..Default::default()
        }
        .validate()
        .unwrap();
        let short = flat_video(&[0, 1, 2, 3]);
        let e = clip_dataset(
            "s",
            &[short],
            None,
            &VideoOptions::default(),
            Split::Train,
            false,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("no Train clip of 16 frames"), "{e}");
    }
}
