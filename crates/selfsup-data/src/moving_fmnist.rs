//! Moving Fashion-MNIST: real Fashion-MNIST items moving and bouncing on a black
//! canvas, in the manner of Moving MNIST (Srivastava, Mansimov, Salakhutdinov 2015).
//! Each video shows one item and is labelled with its class, so frame features can be
//! scored with a linear probe.
use std::path::Path;

use crate::clips::{clip_dataset, VideoOptions};
use crate::dataset::{load, Dataset, Split};
use crate::error::{DataError, Result};
use crate::rng::Rng;
use crate::video::Video;

/// Seed of every trajectory: the dataset is the same for every run.
pub const GENERATOR_SEED: u64 = 0x6d6f_7669_6e67;
/// Speed range of the items, in pixels per frame.
pub const SPEED: (f64, f64) = (2.0, 4.0);

/// The path of an item moving on a `room`-wide square (the canvas less the item):
/// uniform start, uniform direction, speed in [`SPEED`], reflected at the walls.
/// Returns the top-left corner in each of `frames` frames.
pub fn bouncing_path(room: usize, frames: usize, rng: &mut Rng) -> Vec<(usize, usize)> {
    let room = room as f64;
    let (mut x, mut y) = (rng.uniform(0.0, room), rng.uniform(0.0, room));
    let angle = rng.uniform(0.0, std::f64::consts::TAU);
    let speed = rng.uniform(SPEED.0, SPEED.1);
    let (mut vx, mut vy) = (speed * angle.cos(), speed * angle.sin());
    let mut path = Vec::with_capacity(frames);
    for _ in 0..frames {
        path.push((x.round() as usize, y.round() as usize));
        (x, vx) = reflect(x + vx, vx, room);
        (y, vy) = reflect(y + vy, vy, room);
    }
    path
}

/// A coordinate and its velocity after bouncing off the walls at 0 and `room`.
fn reflect(p: f64, v: f64, room: f64) -> (f64, f64) {
    if p < 0.0 {
        (-p, -v)
    } else if p > room {
        (2.0 * room - p, -v)
    } else {
        (p, v)
    }
}

/// `count` videos of `frames` frames on a `canvas`-pixel square, and their labels. Video
/// `i` shows item `i` of `items` on the path from `Rng::derive(seed, &[i])` and
/// `per_video − 1` other items of the same class on paths from `Rng::derive(seed, &[i,
/// k])`, drawn over each other by their brighter pixel. With two items, telling frame
/// order apart means telling the items apart, which takes more than where a blob is.
///
/// # Errors
/// [`DataError::Config`] if the items are unlabelled, not single-channel, larger than
/// the canvas, or fewer than `count`.
pub fn moving_videos(
    items: &Dataset,
    count: usize,
    frames: usize,
    canvas: usize,
    per_video: usize,
    seed: u64,
) -> Result<(Vec<Video>, Vec<u32>)> {
    let (h, w) = (items.height, items.width);
    if items.channels != 1 || h > canvas || w > canvas {
        return Err(DataError::config(
            "video.size",
            format!(
                "moving {} needs one-channel items no larger than the {canvas}-pixel canvas, got {}x{h}x{w}",
                items.name, items.channels
            ),
        ));
    }
    if count > items.len() {
        return Err(DataError::config(
            "video.moving_videos",
            format!(
                "{count} videos need {count} items but {} has {}",
                items.name,
                items.len()
            ),
        ));
    }
    let Some(labels) = &items.labels else {
        return Err(DataError::config(
            "dataset",
            format!("{} has no labels", items.name),
        ));
    };
    let mut by_class = vec![Vec::new(); items.num_classes.max(1)];
    for (j, &y) in labels.iter().enumerate() {
        by_class[y as usize].push(j);
    }
    let room = canvas - h.max(w);
    let videos = (0..count)
        .map(|i| {
            let mut pixels = vec![0u8; frames * canvas * canvas];
            for k in 0..per_video.max(1) {
                let (item, mut rng) = if k == 0 {
                    (i, Rng::derive(seed, &[i as u64]))
                } else {
                    let mut rng = Rng::derive(seed, &[i as u64, k as u64]);
                    let same = &by_class[labels[i] as usize];
                    (same[rng.below(same.len() as u64) as usize], rng)
                };
                let path = bouncing_path(room, frames, &mut rng);
                for (frame, (x, y)) in pixels.chunks_exact_mut(canvas * canvas).zip(path) {
                    for (r, row) in items.raw(item).chunks_exact(w).enumerate() {
                        let start = (y + r) * canvas + x;
                        for (out, &p) in frame[start..start + w].iter_mut().zip(row) {
                            *out = (*out).max(p);
                        }
                    }
                }
            }
            Video {
                name: format!("{} #{i}", items.name),
                channels: 1,
                height: canvas,
                width: canvas,
                frames: pixels,
            }
        })
        .collect();
    Ok((videos, labels[..count].to_vec()))
}

/// The `moving-fmnist` clip dataset of `split`: `opts.moving_videos` training videos
/// made of training items (a quarter as many test videos of test items), each one
/// clip of `opts.clip_len` frames of `opts.size` pixels with `opts.moving_items` items
/// of one class.
///
/// # Errors
/// If Fashion-MNIST cannot be found (see [`load`]) or the options do not fit it.
pub fn load_moving_fmnist(
    split: Split,
    data_dir: Option<&Path>,
    opts: &VideoOptions,
) -> Result<Dataset> {
    opts.validate()?;
    let items = load("fashion-mnist", split, data_dir)?;
    let count = match split {
        Split::Train => opts.moving_videos,
        Split::Test => opts.moving_videos / 4,
    };
    let split_key = u64::from(split == Split::Test);
    let seed = Rng::derive(GENERATOR_SEED, &[split_key]).next_u64();
    let (videos, labels) = moving_videos(
        &items,
        count,
        opts.clip_len,
        opts.size,
        opts.moving_items,
        seed,
    )?;
    clip_dataset(
        "moving-fmnist",
        &videos,
        Some((&labels, items.num_classes)),
        opts,
        split,
        true,
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn paths_stay_on_the_canvas_keep_moving_and_bounce() {
        let (mut bounced, mut still) = (false, 0);
        for i in 0..50 {
            let path = bouncing_path(36, 40, &mut Rng::derive(7, &[i]));
            assert_eq!(path.len(), 40);
            for pair in path.windows(2) {
                let (dx, dy) = (pair[0].0.abs_diff(pair[1].0), pair[0].1.abs_diff(pair[1].1));
                assert!(pair[1].0 <= 36 && pair[1].1 <= 36);
                assert!(dx.max(dy) <= 5, "{pair:?}");
                // Only a bounce that lands near the start can round to the same pixel.
                still += usize::from(dx + dy == 0);
            }
            let xs: Vec<usize> = path.iter().map(|p| p.0).collect();
            bounced |= xs
                .windows(3)
                .any(|w| (w[1] > w[0]) != (w[2] > w[1]) && w[0] != w[1]);
        }
        assert!(bounced, "no path ever turned around");
        assert!(still < 50 * 39 / 20, "{still} still steps");
        assert_eq!(
            bouncing_path(36, 5, &mut Rng::derive(3, &[0])),
            bouncing_path(36, 5, &mut Rng::derive(3, &[0]))
        );
    }

    #[test]
    fn videos_show_the_item_unchanged_at_its_path() {
        // Two labelled 2x3 items.
        let items = Dataset::new(
            "items",
            1,
            2,
            3,
            (1..=12).collect(),
            Some(vec![5, 2]),
            10,
            vec![0.5],
            vec![0.5],
        )
        .unwrap();
        let (videos, labels) = moving_videos(&items, 2, 6, 10, 1, 9).unwrap();
        assert_eq!(labels, vec![5, 2]);
        for (i, v) in videos.iter().enumerate() {
            assert_eq!((v.len(), v.height, v.width), (6, 10, 10));
            let path = bouncing_path(7, 6, &mut Rng::derive(9, &[i as u64]));
            for (t, (x, y)) in path.into_iter().enumerate() {
                let f = v.frame(t);
                let item: Vec<u8> = (0..2)
                    .flat_map(|r| f[(y + r) * 10 + x..(y + r) * 10 + x + 3].to_vec())
                    .collect();
                assert_eq!(item, items.raw(i));
                assert_eq!(
                    f.iter().map(|&p| u32::from(p)).sum::<u32>(),
                    item.iter().map(|&p| u32::from(p)).sum::<u32>()
                );
            }
        }
        assert!(moving_videos(&items, 3, 6, 10, 1, 9).is_err());
        assert!(moving_videos(&items, 2, 6, 2, 1, 9).is_err());
        // A second item of the same class (here the same one, the only one of it).
        let (pairs, _) = moving_videos(&items, 2, 6, 10, 2, 9).unwrap();
        for (single, pair) in videos.iter().zip(&pairs) {
            assert!(single.frames.iter().zip(&pair.frames).all(|(a, b)| b >= a));
            let sum = |v: &Video| v.frames.iter().map(|&p| u64::from(p)).sum::<u64>();
            assert!(sum(pair) > sum(single));
        }
    }
}
