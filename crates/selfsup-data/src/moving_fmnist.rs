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

/// How items change as they move: spin and zoom ([`VideoOptions::moving_spin`] and
/// [`VideoOptions::moving_zoom`]). The default changes nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ItemChange {
    /// Fastest spin, in degrees per frame.
    pub spin: f64,
    /// Largest scale change over a video, a fraction of the item's size.
    pub zoom: f64,
}

impl ItemChange {
    /// The changes of `opts`.
    pub fn of(opts: &VideoOptions) -> Self {
        Self {
            spin: opts.moving_spin,
            zoom: opts.moving_zoom,
        }
    }

    /// True when items are drawn as they are.
    pub fn is_none(&self) -> bool {
        self.spin == 0.0 && self.zoom == 0.0
    }
}

/// One item's turn and growth over a video, drawn after its path from the same stream:
/// a start angle uniform in [0°, 360°) (0° when `spin` is 0), a spin uniform in ±`spin`
/// degrees per frame, and
/// a growth rate `r` uniform in [−1, 1], the scale going linearly from 1 − r·`zoom` in
/// the first frame to 1 + r·`zoom` in the last.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Turn {
    /// Angle in the first frame, in degrees.
    pub start: f64,
    /// Degrees per frame.
    pub speed: f64,
    /// Scale change from the middle of the video to its last frame.
    pub grow: f64,
}

impl Turn {
    /// Draws a turn for `change` from `rng`.
    pub fn draw(change: ItemChange, rng: &mut Rng) -> Self {
        let start = rng.uniform(0.0, 360.0) * f64::from(u8::from(change.spin > 0.0));
        let speed = rng.uniform(-change.spin, change.spin);
        let grow = change.zoom * rng.uniform(-1.0, 1.0);
        Self { start, speed, grow }
    }

    /// Angle in frame `t`, in degrees.
    pub fn angle(&self, t: usize) -> f64 {
        self.start + self.speed * t as f64
    }

    /// Scale in frame `t` of `frames`.
    pub fn scale(&self, t: usize, frames: usize) -> f64 {
        if frames < 2 {
            return 1.0;
        }
        1.0 + self.grow * (2.0 * t as f64 / (frames - 1) as f64 - 1.0)
    }
}

/// Draws the `h`x`w` `item` on a `canvas`-wide square `frame` with its top-left corner
/// at `corner`, keeping the brighter pixel.
fn paste(frame: &mut [u8], canvas: usize, item: &[u8], w: usize, corner: (usize, usize)) {
    let (x, y) = corner;
    for (r, row) in item.chunks_exact(w).enumerate() {
        let start = (y + r) * canvas + x;
        for (out, &p) in frame[start..start + w].iter_mut().zip(row) {
            *out = (*out).max(p);
        }
    }
}

/// Like [`paste`], but the item turned by `degrees` (clockwise on screen) and scaled by
/// `scale` about its centre, sampled bilinearly (black outside the item); what falls off
/// the canvas is lost. With 0° and scale 1 it draws exactly what [`paste`] draws.
fn paste_turned(
    frame: &mut [u8],
    canvas: usize,
    item: &[u8],
    (h, w): (usize, usize),
    corner: (usize, usize),
    degrees: f64,
    scale: f64,
) {
    let (ic_x, ic_y) = ((w as f64 - 1.0) / 2.0, (h as f64 - 1.0) / 2.0);
    let (c_x, c_y) = (corner.0 as f64 + ic_x, corner.1 as f64 + ic_y);
    let (sin, cos) = degrees.to_radians().sin_cos();
    let reach = scale * (h as f64).hypot(w as f64) / 2.0 + 1.0;
    let span = |c: f64| {
        let lo = (c - reach).floor().max(0.0) as usize;
        let hi = ((c + reach).ceil() as usize).min(canvas - 1);
        lo..=hi
    };
    let at = |x: isize, y: isize| -> f64 {
        if x < 0 || y < 0 || x as usize >= w || y as usize >= h {
            0.0
        } else {
            f64::from(item[y as usize * w + x as usize])
        }
    };
    for oy in span(c_y) {
        for ox in span(c_x) {
            let (dx, dy) = (ox as f64 - c_x, oy as f64 - c_y);
            let sx = ic_x + (cos * dx + sin * dy) / scale;
            let sy = ic_y + (cos * dy - sin * dx) / scale;
            if sx <= -1.0 || sy <= -1.0 || sx >= w as f64 || sy >= h as f64 {
                continue;
            }
            let (x0, y0) = (sx.floor(), sy.floor());
            let (fx, fy) = (sx - x0, sy - y0);
            let (x0, y0) = (x0 as isize, y0 as isize);
            let top = at(x0, y0) * (1.0 - fx) + at(x0 + 1, y0) * fx;
            let bottom = at(x0, y0 + 1) * (1.0 - fx) + at(x0 + 1, y0 + 1) * fx;
            let v = (top * (1.0 - fy) + bottom * fy).round().clamp(0.0, 255.0) as u8;
            let out = &mut frame[oy * canvas + ox];
            *out = (*out).max(v);
        }
    }
}

/// `count` videos of `frames` frames on a `canvas`-pixel square, and their labels. Video
/// `i` shows item `i` of `items` on the path from `Rng::derive(seed, &[i])` and
/// `per_video − 1` other items of the same class on paths from `Rng::derive(seed, &[i,
/// k])`, drawn over each other by their brighter pixel. With two items, telling frame
/// order apart means telling the items apart, which takes more than where a blob is.
/// Unless `change` is none, each item also turns and grows about its centre as it moves
/// ([`Turn`], drawn after the path, so the paths are those of unchanged items), and
/// the order of frames shows in the item's own look, not only in where it is.
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
    change: ItemChange,
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
                let turn = Turn::draw(change, &mut rng);
                let chunks = pixels.chunks_exact_mut(canvas * canvas);
                for (t, (frame, corner)) in chunks.zip(path).enumerate() {
                    if change.is_none() {
                        paste(frame, canvas, items.raw(item), w, corner);
                    } else {
                        paste_turned(
                            frame,
                            canvas,
                            items.raw(item),
                            (h, w),
                            corner,
                            turn.angle(t),
                            turn.scale(t, frames),
                        );
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
/// of one class, turning and growing as `opts.moving_spin` and `opts.moving_zoom` say.
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
        ItemChange::of(opts),
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
        let (videos, labels) =
            moving_videos(&items, 2, 6, 10, 1, ItemChange::default(), 9).unwrap();
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
        assert!(moving_videos(&items, 3, 6, 10, 1, ItemChange::default(), 9).is_err());
        assert!(moving_videos(&items, 2, 6, 2, 1, ItemChange::default(), 9).is_err());
        // A second item of the same class (here the same one, the only one of it).
        let (pairs, _) = moving_videos(&items, 2, 6, 10, 2, ItemChange::default(), 9).unwrap();
        for (single, pair) in videos.iter().zip(&pairs) {
            assert!(single.frames.iter().zip(&pair.frames).all(|(a, b)| b >= a));
            let sum = |v: &Video| v.frames.iter().map(|&p| u64::from(p)).sum::<u64>();
            assert!(sum(pair) > sum(single));
        }
    }

    /// A one-item dataset: an upright elongated blob, 28x28, class 3.
    fn blob() -> Dataset {
        let pixels = (0..28 * 28)
            .map(|j| {
                let (x, y) = ((j % 28) as f64 - 13.5, (j / 28) as f64 - 13.5);
                (255.0 * (-(x * x) / 32.0 - y * y / 4.0).exp()).round() as u8
            })
            .collect();
        Dataset::new(
            "blob",
            1,
            28,
            28,
            pixels,
            Some(vec![3]),
            10,
            vec![0.5],
            vec![0.5],
        )
        .unwrap()
    }

    #[test]
    fn turning_by_nothing_draws_exactly_what_pasting_draws() {
        let mut rng = Rng::new(5);
        let item: Vec<u8> = (0..28 * 28).map(|_| rng.below(256) as u8).collect();
        for corner in [(0, 0), (36, 36), (7, 30)] {
            let mut plain = vec![3u8; 64 * 64];
            let mut turned = plain.clone();
            paste(&mut plain, 64, &item, 28, corner);
            paste_turned(&mut turned, 64, &item, (28, 28), corner, 0.0, 1.0);
            assert_eq!(plain, turned, "{corner:?}");
        }
        // No change: the videos of before, bit for bit, whatever the seed stream holds.
        let items = blob();
        let none = ItemChange::default();
        assert!(none.is_none());
        let (a, _) = moving_videos(&items, 1, 8, 64, 1, none, 4).unwrap();
        let path = bouncing_path(36, 8, &mut Rng::derive(4, &[0]));
        for (t, corner) in path.into_iter().enumerate() {
            let mut f = vec![0u8; 64 * 64];
            paste(&mut f, 64, items.raw(0), 28, corner);
            assert_eq!(a[0].frame(t), &f[..]);
        }
    }

    #[test]
    fn turned_items_keep_their_mass_and_place_and_follow_their_angle() {
        let items = blob();
        let mass: f64 = items.raw(0).iter().map(|&p| f64::from(p)).sum();
        for change in [
            ItemChange {
                spin: 20.0,
                zoom: 0.0,
            },
            ItemChange {
                spin: 10.0,
                zoom: 0.25,
            },
        ] {
            for seed in 0..4 {
                let (v, _) = moving_videos(&items, 1, 16, 64, 1, change, seed).unwrap();
                let mut rng = Rng::derive(seed, &[0]);
                let path = bouncing_path(36, 16, &mut rng);
                let turn = Turn::draw(change, &mut rng);
                assert!(turn.speed.abs() <= change.spin && turn.start < 360.0);
                assert!(turn.grow.abs() <= change.zoom);
                for (t, (x, y)) in path.into_iter().enumerate() {
                    let f = v[0].frame(t);
                    let (mut m, mut mx, mut my) = (0.0, 0.0, 0.0);
                    for (j, &p) in f.iter().enumerate() {
                        let p = f64::from(p);
                        m += p;
                        mx += p * (j % 64) as f64;
                        my += p * (j / 64) as f64;
                    }
                    let scale = turn.scale(t, 16);
                    let ratio = m / (mass * scale * scale);
                    assert!((ratio - 1.0).abs() < 0.03, "mass ratio {ratio} at {t}");
                    let (cx, cy) = (mx / m, my / m);
                    assert!((cx - x as f64 - 13.5).abs() < 0.3, "{cx} vs {x}");
                    assert!((cy - y as f64 - 13.5).abs() < 0.3, "{cy} vs {y}");
                    let (mut xx, mut yy, mut xy) = (0.0, 0.0, 0.0);
                    for (j, &p) in f.iter().enumerate() {
                        let (dx, dy) = ((j % 64) as f64 - cx, (j / 64) as f64 - cy);
                        xx += f64::from(p) * dx * dx;
                        yy += f64::from(p) * dy * dy;
                        xy += f64::from(p) * dx * dy;
                    }
                    let axis = 0.5 * (2.0 * xy).atan2(xx - yy).to_degrees();
                    let off = (axis - turn.angle(t)).rem_euclid(180.0);
                    assert!(
                        off.min(180.0 - off) < 2.0,
                        "axis {axis} vs {}",
                        turn.angle(t)
                    );
                }
            }
        }
        // Scales go from 1 − grow to 1 + grow.
        let turn = Turn {
            start: 0.0,
            speed: 0.0,
            grow: 0.2,
        };
        assert_eq!(
            (turn.scale(0, 5), turn.scale(2, 5), turn.scale(4, 5)),
            (0.8, 1.0, 1.2)
        );
        // A spin of 0 starts upright.
        let still = Turn::draw(
            ItemChange {
                spin: 0.0,
                zoom: 0.3,
            },
            &mut Rng::new(1),
        );
        assert_eq!((still.start, still.speed), (0.0, 0.0));
    }
}
