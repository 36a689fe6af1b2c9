//! The in-memory [`Dataset`] and [`load`], which finds and reads one by name.

use std::borrow::Cow;
use std::path::Path;

use candle_core::{Device, Tensor};

use crate::clips::{clip_dataset, VideoOptions};
use crate::error::{DataError, Result};
use crate::image::Image;
use crate::moving_fmnist::load_moving_fmnist;
use crate::video::{find_videos, read_video};
use crate::{cifar, folder, idx, locate};

/// Which part of a dataset to load.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Split {
    /// The training split (60 000 images for MNIST-likes, 50 000 for CIFAR).
    Train,
    /// The held-out test split (10 000 images for all four known datasets).
    Test,
}

/// The dataset names [`load`] knows, besides `folder:<path>`.
pub const KNOWN_DATASETS: [&str; 4] = ["fashion-mnist", "mnist", "cifar10", "cifar100"];

/// Per-channel `(mean, std)` normalisation constants of a known dataset, in
/// `[0, 1]` pixel units (the values torchvision-based recipes use).
pub fn normalization(name: &str) -> Option<(Vec<f32>, Vec<f32>)> {
    match name {
        "fashion-mnist" => Some((vec![0.2860], vec![0.3530])),
        "mnist" => Some((vec![0.1307], vec![0.3081])),
        "cifar10" => Some((vec![0.4914, 0.4822, 0.4465], vec![0.2470, 0.2435, 0.2616])),
        "cifar100" => Some((vec![0.5071, 0.4865, 0.4409], vec![0.2673, 0.2564, 0.2762])),
        _ => None,
    }
}

/// In-memory image dataset: `u8` pixels, CHW per image, images contiguous.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Name it was loaded under, e.g. `fashion-mnist`.
    pub name: String,
    /// Channels per image (1 or 3).
    pub channels: usize,
    /// Rows per image.
    pub height: usize,
    /// Columns per image.
    pub width: usize,
    /// `len * channels * height * width` bytes, image after image, CHW.
    pub pixels: Vec<u8>,
    /// One class index per image; `None` for unlabelled folders.
    pub labels: Option<Vec<u32>>,
    /// Number of classes; 0 if unlabelled.
    pub num_classes: usize,
    /// Per-channel mean, in `[0, 1]` pixel units.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation, in `[0, 1]` pixel units.
    pub std: Vec<f32>,
    /// Frames per item: 1 for still images. A clip dataset (video) stores each item as
    /// `clip_len` frames stacked along the height, `(C, clip_len·H, W)`; see
    /// [`Dataset::frame_height`] and [`Dataset::frames`].
    pub clip_len: usize,
}

impl Dataset {
    /// Builds a dataset after checking that every part agrees with the others.
    ///
    /// # Errors
    /// [`DataError::Config`] if a dimension is zero, `pixels` is not a whole
    /// number of images, the label count differs from the image count, a label
    /// is `>= num_classes`, or `mean`/`std` do not have one positive entry per
    /// channel.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        channels: usize,
        height: usize,
        width: usize,
        pixels: Vec<u8>,
        labels: Option<Vec<u32>>,
        num_classes: usize,
        mean: Vec<f32>,
        std: Vec<f32>,
    ) -> Result<Self> {
        let setting = format!("dataset {name}");
        let image_len = channels * height * width;
        if image_len == 0 {
            return Err(DataError::config(
                &setting,
                format!("image shape {channels}x{height}x{width} has a zero dimension"),
            ));
        }
        if pixels.len() % image_len != 0 {
            return Err(DataError::config(
                &setting,
                format!(
                    "{} pixel bytes is not a whole number of {channels}x{height}x{width} images",
                    pixels.len()
                ),
            ));
        }
        let len = pixels.len() / image_len;
        if let Some(l) = &labels {
            if l.len() != len {
                return Err(DataError::config(
                    &setting,
                    format!("{} labels for {len} images", l.len()),
                ));
            }
            if let Some(bad) = l.iter().find(|&&c| c as usize >= num_classes) {
                return Err(DataError::config(
                    &setting,
                    format!("label {bad} out of range for {num_classes} classes"),
                ));
            }
        }
        if mean.len() != channels || std.len() != channels {
            return Err(DataError::config(
                &setting,
                format!(
                    "need one mean and std per channel ({channels}), got {} and {}",
                    mean.len(),
                    std.len()
                ),
            ));
        }
        if std.iter().any(|s| !(s.is_finite() && *s > 0.0)) || mean.iter().any(|m| !m.is_finite()) {
            return Err(DataError::config(
                &setting,
                "std must be positive and mean finite",
            ));
        }
        Ok(Self {
            name: name.to_string(),
            channels,
            height,
            width,
            pixels,
            labels,
            num_classes,
            mean,
            std,
            clip_len: 1,
        })
    }

    /// Marks the dataset as one of clips of `clip_len` frames stacked along the height.
    ///
    /// # Errors
    /// [`DataError::Config`] if `clip_len` is 0 or does not divide the height.
    pub fn with_clip_len(mut self, clip_len: usize) -> Result<Self> {
        if clip_len == 0 || self.height % clip_len != 0 {
            return Err(DataError::config(
                "clip_len",
                format!(
                    "{clip_len} frames do not evenly stack into height {} of {}",
                    self.height, self.name
                ),
            ));
        }
        self.clip_len = clip_len;
        Ok(self)
    }

    /// Rows of one frame: the height for still images, `height / clip_len` for clips.
    pub fn frame_height(&self) -> usize {
        self.height / self.clip_len.max(1)
    }

    /// The frames of every clip as a dataset of still images, each with its clip's
    /// label, in clip order then time order (frame-level evaluation of video
    /// methods). A still-image dataset is returned as it is, borrowed.
    pub fn frames(&self) -> Cow<'_, Dataset> {
        if self.clip_len <= 1 {
            return Cow::Borrowed(self);
        }
        let (t, h) = (self.clip_len, self.frame_height());
        let plane = h * self.width;
        let mut pixels = Vec::with_capacity(self.pixels.len());
        for i in 0..self.len() {
            let clip = self.raw(i);
            for f in 0..t {
                for c in 0..self.channels {
                    let start = (c * t + f) * plane;
                    pixels.extend_from_slice(&clip[start..start + plane]);
                }
            }
        }
        Cow::Owned(Dataset {
            name: format!("{} frames", self.name),
            channels: self.channels,
            height: h,
            width: self.width,
            pixels,
            labels: self
                .labels
                .as_ref()
                .map(|l| l.iter().flat_map(|&y| std::iter::repeat_n(y, t)).collect()),
            num_classes: self.num_classes,
            mean: self.mean.clone(),
            std: self.std.clone(),
            clip_len: 1,
        })
    }

    /// Number of images.
    pub fn len(&self) -> usize {
        self.pixels.len().checked_div(self.image_len()).unwrap_or(0)
    }

    /// True when there are no images.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes per image (`channels * height * width`).
    pub fn image_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// The raw CHW bytes of image `i`.
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn raw(&self, i: usize) -> &[u8] {
        let n = self.image_len();
        &self.pixels[i * n..(i + 1) * n]
    }

    /// Image `i` as `[0, 1]` floats (not normalised).
    ///
    /// # Panics
    /// If `i >= self.len()`.
    pub fn image(&self, i: usize) -> Image {
        Image::from_u8(self.channels, self.height, self.width, self.raw(i))
    }

    /// Normalised `(x - mean[c]) / std[c]` tensor of the images at `indices`,
    /// without augmentation, for evaluation and feature extraction.
    ///
    /// # Shapes
    /// `(indices.len(), channels, height, width)`, `f32`.
    ///
    /// # Errors
    /// [`DataError::Config`] if an index is out of range;
    /// [`DataError::Candle`] if the tensor cannot be created on `device`.
    pub fn batch_tensor(&self, indices: &[usize], device: &Device) -> Result<Tensor> {
        let len = self.len();
        if let Some(&bad) = indices.iter().find(|&&i| i >= len) {
            return Err(DataError::config(
                "index",
                format!("image {bad} out of range for {} ({len} images)", self.name),
            ));
        }
        let lut = self.normalise_lut();
        let plane = self.height * self.width;
        let mut out = Vec::with_capacity(indices.len() * self.image_len());
        for &i in indices {
            for (c, chan) in self.raw(i).chunks_exact(plane).enumerate() {
                let table = &lut[c];
                out.extend(chan.iter().map(|&p| table[usize::from(p)]));
            }
        }
        let shape = (indices.len(), self.channels, self.height, self.width);
        Ok(Tensor::from_vec(out, shape, device)?)
    }

    /// Per channel, the normalised value of each of the 256 byte values.
    fn normalise_lut(&self) -> Vec<[f32; 256]> {
        (0..self.channels)
            .map(|c| {
                let mut t = [0f32; 256];
                for (p, v) in t.iter_mut().enumerate() {
                    *v = (p as f32 / 255.0 - self.mean[c]) / self.std[c];
                }
                t
            })
            .collect()
    }

    /// The labels of `indices`, or `None` when the dataset is unlabelled or an
    /// index is out of range.
    pub fn labels_of(&self, indices: &[usize]) -> Option<Vec<u32>> {
        let labels = self.labels.as_ref()?;
        indices.iter().map(|&i| labels.get(i).copied()).collect()
    }
}

/// Per-channel mean and population standard deviation of CHW `u8` images, in
/// `[0, 1]` units. A zero deviation (constant images) is reported as 1 so that
/// normalising never divides by zero.
pub fn channel_stats(channels: usize, plane: usize, pixels: &[u8]) -> (Vec<f32>, Vec<f32>) {
    let mut sum = vec![0u64; channels];
    let mut sq = vec![0u64; channels];
    let mut count = vec![0u64; channels];
    if channels > 0 && plane > 0 {
        for (k, chunk) in pixels.chunks_exact(plane).enumerate() {
            let c = k % channels;
            for &p in chunk {
                let p = u64::from(p);
                sum[c] += p;
                sq[c] += p * p;
            }
            count[c] += chunk.len() as u64;
        }
    }
    let mut mean = Vec::with_capacity(channels);
    let mut std = Vec::with_capacity(channels);
    for c in 0..channels {
        let n = count[c].max(1) as f64;
        let m = sum[c] as f64 / n;
        let var = (sq[c] as f64 / n - m * m).max(0.0);
        let s = var.sqrt() / 255.0;
        mean.push((m / 255.0) as f32);
        std.push(if s > 1e-8 { s as f32 } else { 1.0 });
    }
    (mean, std)
}

/// Loads a dataset by name.
///
/// Known names: `fashion-mnist`, `mnist`, `cifar10`, `cifar100`, found with
/// [`locate`](crate::locate::locate) (lookup order: `data_dir`,
/// `$SELFSUP_DATA/<name>`, `./data/<name>`, `/usr/share/datasets/<name>`).
/// `folder:<path>` loads an image folder instead (see
/// [`folder::load_folder`]); `data_dir` is then ignored.
///
/// # Errors
/// [`DataError::Config`] for an unknown name (listing the known ones),
/// [`DataError::NotFound`] when no lookup location has the files, and
/// [`DataError::Format`]/[`DataError::Io`] for unreadable or malformed files.
pub fn load(name: &str, split: Split, data_dir: Option<&Path>) -> Result<Dataset> {
    load_with(name, split, data_dir, &VideoOptions::default())
}

/// Like [`load`], with the settings of the video datasets: `video:<path>` (a video file
/// ffmpeg can read, a folder of extracted frames, or a folder of either; see
/// [`find_videos`](crate::video::find_videos)), cut into clips whose last
/// `opts.held_out` of every video is the test split, and `moving-fmnist`
/// ([`load_moving_fmnist`](crate::moving_fmnist::load_moving_fmnist)). Both are clip
/// datasets ([`Dataset::clip_len`]); videos from files are unlabelled.
///
/// # Errors
/// As [`load`], and for video that cannot be found or decoded, or bad `opts`.
pub fn load_with(
    name: &str,
    split: Split,
    data_dir: Option<&Path>,
    opts: &VideoOptions,
) -> Result<Dataset> {
    if let Some(path) = name.strip_prefix("folder:") {
        return folder::load_folder(Path::new(path), split);
    }
    if let Some(path) = name.strip_prefix("video:") {
        opts.validate()?;
        let videos = find_videos(Path::new(path))?
            .iter()
            .map(|source| read_video(source, Some((opts.size, opts.size))))
            .collect::<Result<Vec<_>>>()?;
        return clip_dataset(name, &videos, None, opts, split, false);
    }
    if name == "moving-fmnist" {
        return load_moving_fmnist(split, data_dir, opts);
    }
    let (mean, std) = normalization(name).ok_or_else(|| {
        DataError::config(
            "dataset",
            format!(
                "unknown dataset `{name}`; known: {}, moving-fmnist, folder:<path> or video:<path>",
                KNOWN_DATASETS.join(", ")
            ),
        )
    })?;
    match name {
        "fashion-mnist" | "mnist" => {
            let (images, labels) = idx::file_names(split);
            let dir = locate::locate(name, data_dir, &[images, labels])?;
            idx::load_split(&dir, split, name, 10, mean[0], std[0])
        }
        _ => {
            let kind = if name == "cifar10" {
                cifar::Kind::Cifar10
            } else {
                cifar::Kind::Cifar100
            };
            let files = kind.files(split);
            let dir = locate::locate(name, data_dir, &files)?;
            cifar::load_split(&dir, kind, split, mean, std)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn tiny() -> Dataset {
        // Two 2-channel 1x2 images.
        Dataset::new(
            "tiny",
            2,
            1,
            2,
            vec![0, 255, 51, 102, 255, 0, 0, 0],
            Some(vec![1, 0]),
            2,
            vec![0.5, 0.0],
            vec![0.5, 2.0],
        )
        .unwrap()
    }

    #[test]
    fn batch_tensor_normalises_in_nchw() {
        let d = tiny();
        assert_eq!(d.len(), 2);
        let t = d.batch_tensor(&[1, 0], &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[2, 2, 1, 2]);
        let v = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let want = [1.0, -1.0, 0.0, 0.0, -1.0, 1.0, 0.1, 0.2];
        for (a, b) in v.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{v:?}");
        }
        assert!(matches!(
            d.batch_tensor(&[2], &Device::Cpu),
            Err(DataError::Config { .. })
        ));
        assert_eq!(d.labels_of(&[1, 1, 0]), Some(vec![0, 0, 1]));
        assert_eq!(d.labels_of(&[5]), None);
        let img = d.image(0);
        assert_eq!(img.data, vec![0.0, 1.0, 0.2, 0.4]);
    }

    #[test]
    fn new_rejects_inconsistent_parts() {
        let ok = |px: usize, labels: Option<Vec<u32>>, mean: Vec<f32>| {
            Dataset::new("d", 1, 2, 2, vec![0; px], labels, 3, mean, vec![1.0]).is_ok()
        };
        assert!(ok(8, Some(vec![0, 2]), vec![0.0]));
        assert!(!ok(7, None, vec![0.0]));
        assert!(!ok(8, Some(vec![0]), vec![0.0]));
        assert!(!ok(8, Some(vec![0, 3]), vec![0.0]));
        assert!(!ok(8, None, vec![0.0, 0.0]));
        assert!(Dataset::new("d", 1, 1, 1, vec![0], None, 0, vec![0.0], vec![0.0]).is_err());
    }

    #[test]
    fn channel_stats_match_hand_computation() {
        // channel 0: 0 and 255 -> mean 0.5, std 0.5; channel 1 constant -> std 1.
        let (m, s) = channel_stats(2, 1, &[0, 7, 255, 7]);
        assert!((m[0] - 0.5).abs() < 1e-6 && (s[0] - 0.5).abs() < 1e-6);
        assert!((m[1] - 7.0 / 255.0).abs() < 1e-6 && s[1] == 1.0);
    }

    #[test]
    fn unknown_name_lists_known_ones() {
        let e = load("imagenet", Split::Train, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown dataset `imagenet`"), "{e}");
        for k in KNOWN_DATASETS {
            assert!(e.contains(k), "{e}");
        }
    }

    #[test]
    fn missing_dataset_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        // cifar100 is not installed anywhere on a test machine we control; make
        // sure an explicit empty data dir is listed first.
        match load("cifar100", Split::Test, Some(dir.path())) {
            Err(DataError::NotFound { tried, .. }) => assert_eq!(tried[0], dir.path()),
            Ok(_) => eprintln!("cifar100 is installed on this machine; skipping"),
            Err(e) => panic!("unexpected {e}"),
        }
    }

    /// The real Fashion-MNIST test split, where Debian's dataset-fashion-mnist
    /// installed it.
    #[test]
    fn real_fashion_mnist_test_split() {
        let dir = Path::new("/usr/share/datasets/fashion-mnist");
        if !dir.join("t10k-images-idx3-ubyte.gz").is_file() {
            eprintln!(
                "skipping: {} is absent (apt-get install dataset-fashion-mnist)",
                dir.display()
            );
            return;
        }
        let d = load("fashion-mnist", Split::Test, Some(dir)).unwrap();
        assert_eq!(d.len(), 10_000);
        assert_eq!((d.channels, d.height, d.width), (1, 28, 28));
        assert_eq!(d.num_classes, 10);
        let labels = d.labels.as_ref().unwrap();
        let mut counts = [0usize; 10];
        for &l in labels {
            counts[l as usize] += 1;
        }
        // The test split is balanced: 1000 images per class.
        assert_eq!(counts, [1000; 10]);
        // Reference values from Python's gzip module on the same files:
        //   labels[:8] == [9, 2, 1, 1, 6, 1, 4, 6]; sum(images[0]) == 33456
        assert_eq!(labels[..8], [9, 2, 1, 1, 6, 1, 4, 6]);
        assert_eq!(d.raw(0).iter().map(|&p| u32::from(p)).sum::<u32>(), 33456);
        // Pixel statistics are close to the published normalisation constants.
        let (m, s) = channel_stats(1, 28 * 28, &d.pixels);
        assert!((m[0] - 0.2860).abs() < 0.01, "mean {}", m[0]);
        assert!((s[0] - 0.3530).abs() < 0.01, "std {}", s[0]);
        let t = d.batch_tensor(&[0, 9999], &Device::Cpu).unwrap();
        assert_eq!(t.dims(), &[2, 1, 28, 28]);
    }
}
