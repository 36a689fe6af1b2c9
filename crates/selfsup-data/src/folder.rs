//! Reader for a folder of `.jpg`/`.jpeg`/`.png` images.
//!
//! Two layouts are recognised (like torchvision's `ImageFolder`, with class
//! names sorted):
//! - **flat**: images directly in the folder; the dataset is unlabelled;
//! - **one subfolder per class**: `dir/<class>/*.png`; class `k` is the
//!   `k`-th subfolder name in sorted order.
//!
//! If the folder has both a `train/` and a `test/` subfolder, [`Split`] picks
//! one of them and the layout rules apply inside it; otherwise the same
//! folder serves both splits.
//!
//! All images must have the same size; the first one that differs is named in
//! the error (nothing is silently resized). If every image is grayscale the
//! dataset has 1 channel, otherwise 3 (RGB; alpha is dropped). The
//! normalisation mean and std are computed from the loaded images.

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::dataset::{channel_stats, Dataset, Split};
use crate::error::{DataError, Result};

/// Whether `p` names a png or jpg file (by extension, any case).
pub(crate) fn is_image(p: &Path) -> bool {
    p.extension()
        .and_then(|e| e.to_str())
        .map(|e| matches!(e.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png"))
        .unwrap_or(false)
}

/// Whether `p`'s name starts with a dot.
pub(crate) fn is_hidden(p: &Path) -> bool {
    p.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

/// Sorted image files and sorted subfolders of `dir` (hidden entries skipped).
fn list(dir: &Path) -> Result<(Vec<PathBuf>, Vec<PathBuf>)> {
    let rd = std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))?;
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    for entry in rd {
        let entry = entry.map_err(|e| DataError::io(dir, e))?;
        let p = entry.path();
        if is_hidden(&p) {
            continue;
        }
        if p.is_dir() {
            dirs.push(p);
        } else if is_image(&p) {
            files.push(p);
        }
    }
    files.sort();
    dirs.sort();
    Ok((files, dirs))
}

/// Loads an image folder (see the module docs for the layouts).
///
/// # Errors
/// [`DataError::Io`] if a folder cannot be listed or a file read;
/// [`DataError::Format`] if there are no images, a class folder is empty, the
/// layout mixes loose images with class folders, an image cannot be decoded,
/// or an image's size differs from the first one's (naming the file).
pub fn load_folder(dir: &Path, split: Split) -> Result<Dataset> {
    if !dir.is_dir() {
        return Err(DataError::format(dir, "not a folder of images"));
    }
    let root = {
        let (train, test) = (dir.join("train"), dir.join("test"));
        if train.is_dir() && test.is_dir() {
            match split {
                Split::Train => train,
                Split::Test => test,
            }
        } else {
            dir.to_path_buf()
        }
    };
    let (files, dirs) = list(&root)?;
    let (paths, labels, num_classes) = if !files.is_empty() {
        if !dirs.is_empty() {
            return Err(DataError::format(
                &root,
                "has both images and subfolders; use a flat folder (unlabelled) or one subfolder per class",
            ));
        }
        (files, None, 0)
    } else if !dirs.is_empty() {
        let mut paths = Vec::new();
        let mut labels = Vec::new();
        for (k, class_dir) in dirs.iter().enumerate() {
            let (class_files, _) = list(class_dir)?;
            if class_files.is_empty() {
                return Err(DataError::format(
                    class_dir,
                    "class folder has no .jpg/.jpeg/.png images",
                ));
            }
            labels.extend(std::iter::repeat_n(k as u32, class_files.len()));
            paths.extend(class_files);
        }
        (paths, Some(labels), dirs.len())
    } else {
        return Err(DataError::format(&root, "no .jpg/.jpeg/.png images found"));
    };

    let decoded: Vec<::image::DynamicImage> = paths
        .par_iter()
        .map(|p| {
            ::image::open(p).map_err(|e| match e {
                ::image::ImageError::IoError(io) => DataError::io(p, io),
                other => DataError::format(p, format!("cannot decode image: {other}")),
            })
        })
        .collect::<Result<_>>()?;

    let (w, h) = (decoded[0].width() as usize, decoded[0].height() as usize);
    for (p, img) in paths.iter().zip(&decoded) {
        let (iw, ih) = (img.width() as usize, img.height() as usize);
        if (iw, ih) != (w, h) {
            return Err(DataError::format(
                p,
                format!(
                    "image is {iw}x{ih} but {} is {w}x{h}; all images in a folder must have one size",
                    paths[0].display()
                ),
            ));
        }
    }
    let gray = decoded.iter().all(|i| !i.color().has_color());
    let channels = if gray { 1 } else { 3 };
    let plane = w * h;
    let mut pixels = vec![0u8; decoded.len() * channels * plane];
    pixels
        .par_chunks_mut(channels * plane)
        .zip(decoded.par_iter())
        .for_each(|(out, img)| {
            if gray {
                out.copy_from_slice(img.to_luma8().as_raw());
            } else {
                let rgb = img.to_rgb8();
                for (k, px) in rgb.as_raw().chunks_exact(3).enumerate() {
                    out[k] = px[0];
                    out[plane + k] = px[1];
                    out[2 * plane + k] = px[2];
                }
            }
        });
    let (mean, std) = channel_stats(channels, plane, &pixels);
    Dataset::new(
        &format!("folder:{}", dir.display()),
        channels,
        h,
        w,
        pixels,
        labels,
        num_classes,
        mean,
        std,
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn png_rgb(p: &Path, w: u32, h: u32, v: [u8; 3]) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        ::image::RgbImage::from_pixel(w, h, ::image::Rgb(v))
            .save(p)
            .unwrap();
    }

    fn png_gray(p: &Path, w: u32, h: u32, v: u8) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        ::image::GrayImage::from_pixel(w, h, ::image::Luma([v]))
            .save(p)
            .unwrap();
    }

    #[test]
    fn flat_folder_is_unlabelled_with_computed_stats() {
        let t = tempfile::tempdir().unwrap();
        png_gray(&t.path().join("b.png"), 3, 2, 255);
        png_gray(&t.path().join("a.png"), 3, 2, 0);
        std::fs::write(t.path().join("notes.txt"), "ignored").unwrap();
        let d = crate::load(
            &format!("folder:{}", t.path().display()),
            Split::Train,
            None,
        )
        .unwrap();
        assert_eq!((d.len(), d.channels, d.height, d.width), (2, 1, 2, 3));
        assert_eq!(d.labels, None);
        assert_eq!(d.num_classes, 0);
        // Sorted by name: a (black) first.
        assert_eq!(d.raw(0), &[0; 6]);
        assert_eq!(d.raw(1), &[255; 6]);
        assert!((d.mean[0] - 0.5).abs() < 1e-6 && (d.std[0] - 0.5).abs() < 1e-6);
    }

    #[test]
    fn class_subfolders_are_sorted_and_rgb_is_chw() {
        let t = tempfile::tempdir().unwrap();
        png_rgb(&t.path().join("zebra/1.png"), 2, 2, [10, 20, 30]);
        png_rgb(&t.path().join("ant/1.png"), 2, 2, [1, 2, 3]);
        png_gray(&t.path().join("ant/2.PNG"), 2, 2, 7);
        let d = load_folder(t.path(), Split::Test).unwrap();
        assert_eq!((d.len(), d.channels, d.num_classes), (3, 3, 2));
        assert_eq!(d.labels, Some(vec![0, 0, 1]));
        assert_eq!(d.raw(0), &[1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]);
        assert_eq!(d.raw(1), &[7; 12]); // gray expanded to RGB
        assert_eq!(d.raw(2)[8..], [30; 4]);
    }

    #[test]
    fn train_test_subfolders_pick_the_split() {
        let t = tempfile::tempdir().unwrap();
        png_gray(&t.path().join("train/cat/1.png"), 2, 2, 1);
        png_gray(&t.path().join("train/dog/1.png"), 2, 2, 2);
        png_gray(&t.path().join("test/cat/1.png"), 2, 2, 3);
        png_gray(&t.path().join("test/dog/1.png"), 2, 2, 4);
        png_gray(&t.path().join("test/dog/2.png"), 2, 2, 5);
        assert_eq!(load_folder(t.path(), Split::Train).unwrap().len(), 2);
        let d = load_folder(t.path(), Split::Test).unwrap();
        assert_eq!(d.labels, Some(vec![0, 1, 1]));
        assert_eq!(d.raw(2), &[5; 4]);
    }

    #[test]
    fn bad_folders_give_one_line_errors_naming_the_file() {
        let t = tempfile::tempdir().unwrap();
        png_gray(&t.path().join("a.png"), 4, 4, 0);
        png_gray(&t.path().join("b.png"), 4, 5, 0);
        let e = load_folder(t.path(), Split::Train).unwrap_err().to_string();
        assert!(e.contains("b.png: image is 4x5 but"), "{e}");
        assert!(e.contains("a.png is 4x4"), "{e}");
        assert!(!e.contains('\n'));

        std::fs::remove_file(t.path().join("b.png")).unwrap();
        std::fs::write(t.path().join("c.jpg"), b"not a jpeg").unwrap();
        let e = load_folder(t.path(), Split::Train).unwrap_err().to_string();
        assert!(e.contains("c.jpg: cannot decode image"), "{e}");
        assert!(!e.contains('\n'), "{e}");

        let empty = tempfile::tempdir().unwrap();
        let e = load_folder(empty.path(), Split::Train)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no .jpg/.jpeg/.png images found"), "{e}");
        std::fs::create_dir(empty.path().join("cls")).unwrap();
        let e = load_folder(empty.path(), Split::Train)
            .unwrap_err()
            .to_string();
        assert!(e.contains("cls: class folder has no"), "{e}");
        let e = load_folder(&empty.path().join("nope"), Split::Train)
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope: not a folder"), "{e}");
    }
}
