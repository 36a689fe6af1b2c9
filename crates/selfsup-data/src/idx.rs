//! Reader for the IDX format of MNIST and Fashion-MNIST.
//!
//! An IDX file is a big-endian header (magic, then one `u32` per dimension)
//! followed by the raw bytes. Images use magic `0x00000803` (unsigned bytes,
//! 3 dimensions: count, rows, columns); labels use `0x00000801` (1 dimension).
//! Files may be gzip-compressed (`.gz`, as distributed) or raw; gzip is
//! recognised by its magic bytes, not the file name.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::dataset::{Dataset, Split};
use crate::error::{DataError, Result};

const IMAGES_MAGIC: u32 = 0x0000_0803;
const LABELS_MAGIC: u32 = 0x0000_0801;

/// Images decoded from an IDX file.
#[derive(Clone, Debug)]
pub struct IdxImages {
    /// Number of images.
    pub count: usize,
    /// Rows per image.
    pub height: usize,
    /// Columns per image.
    pub width: usize,
    /// `count * height * width` gray pixels, image after image.
    pub pixels: Vec<u8>,
}

/// The base names (without `.gz`) of a split's image and label files.
pub fn file_names(split: Split) -> (&'static str, &'static str) {
    match split {
        Split::Train => ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        Split::Test => ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    }
}

/// `dir/base` if it exists, else `dir/base.gz` if that exists.
pub fn resolve(dir: &Path, base: &str) -> Option<PathBuf> {
    let raw = dir.join(base);
    if raw.is_file() {
        return Some(raw);
    }
    let gz = dir.join(format!("{base}.gz"));
    gz.is_file().then_some(gz)
}

/// Reads a whole file, gunzipping it when it starts with the gzip magic.
///
/// # Errors
/// [`DataError::Io`] if it cannot be read, [`DataError::Format`] if the gzip
/// stream is truncated or corrupt.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    if bytes.len() >= 2 && bytes[0] == 0x1f && bytes[1] == 0x8b {
        let mut out = Vec::with_capacity(bytes.len().saturating_mul(4));
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(|e| {
                DataError::format(path, format!("truncated or corrupt gzip stream ({e})"))
            })?;
        Ok(out)
    } else {
        Ok(bytes)
    }
}

fn header(path: &Path, data: &[u8], magic: u32, ndims: usize) -> Result<Vec<usize>> {
    let word = |i: usize| {
        u32::from_be_bytes([
            data[4 * i],
            data[4 * i + 1],
            data[4 * i + 2],
            data[4 * i + 3],
        ])
    };
    let need = 4 * (1 + ndims);
    if data.len() >= 4 && word(0) != magic {
        return Err(DataError::format(
            path,
            format!("bad magic number {:#010x}, expected {magic:#010x}", word(0)),
        ));
    }
    if data.len() < need {
        return Err(DataError::format(
            path,
            format!(
                "file too short for an IDX header ({} bytes, need {need})",
                data.len()
            ),
        ));
    }
    Ok((1..=ndims).map(|i| word(i) as usize).collect())
}

/// Parses IDX image bytes (already decompressed). `path` is only used in errors.
///
/// # Errors
/// [`DataError::Format`] for a wrong magic number, a zero dimension, or a
/// payload whose length does not match the header.
pub fn parse_images(path: &Path, data: &[u8]) -> Result<IdxImages> {
    let dims = header(path, data, IMAGES_MAGIC, 3)?;
    let (count, height, width) = (dims[0], dims[1], dims[2]);
    if count == 0 || height == 0 || width == 0 {
        return Err(DataError::format(
            path,
            format!("header has a zero dimension ({count} images of {height}x{width})"),
        ));
    }
    let expected = count
        .checked_mul(height)
        .and_then(|v| v.checked_mul(width))
        .ok_or_else(|| DataError::format(path, "header dimensions overflow"))?;
    let payload = &data[16..];
    check_len(
        path,
        payload.len(),
        expected,
        &format!("{count} images of {height}x{width}"),
    )?;
    Ok(IdxImages {
        count,
        height,
        width,
        pixels: payload.to_vec(),
    })
}

/// Parses IDX label bytes (already decompressed). `path` is only used in errors.
///
/// # Errors
/// [`DataError::Format`] for a wrong magic number or a payload whose length
/// does not match the header.
pub fn parse_labels(path: &Path, data: &[u8]) -> Result<Vec<u8>> {
    let dims = header(path, data, LABELS_MAGIC, 1)?;
    let payload = &data[8..];
    check_len(path, payload.len(), dims[0], &format!("{} labels", dims[0]))?;
    Ok(payload.to_vec())
}

fn check_len(path: &Path, actual: usize, expected: usize, what: &str) -> Result<()> {
    if actual < expected {
        Err(DataError::format(
            path,
            format!("truncated: header promises {what} ({expected} bytes) but only {actual} bytes follow"),
        ))
    } else if actual > expected {
        Err(DataError::format(
            path,
            format!(
                "header promises {what} ({expected} bytes) but {} extra bytes follow",
                actual - expected
            ),
        ))
    } else {
        Ok(())
    }
}

/// Reads an IDX image file (raw or gzip).
///
/// # Errors
/// See [`read_maybe_gz`] and [`parse_images`].
pub fn read_images(path: &Path) -> Result<IdxImages> {
    parse_images(path, &read_maybe_gz(path)?)
}

/// Reads an IDX label file (raw or gzip).
///
/// # Errors
/// See [`read_maybe_gz`] and [`parse_labels`].
pub fn read_labels(path: &Path) -> Result<Vec<u8>> {
    parse_labels(path, &read_maybe_gz(path)?)
}

/// Loads one split of an MNIST-like dataset from `dir`.
///
/// # Errors
/// [`DataError::Format`] when a file is missing or malformed, when the label
/// count differs from the image count (naming the label file), or when a
/// label is `>= num_classes`.
pub fn load_split(
    dir: &Path,
    split: Split,
    name: &str,
    num_classes: usize,
    mean: f32,
    std: f32,
) -> Result<Dataset> {
    let (img_base, lbl_base) = file_names(split);
    let img_path = resolve(dir, img_base)
        .ok_or_else(|| DataError::format(&dir.join(img_base), "file not found (nor .gz)"))?;
    let lbl_path = resolve(dir, lbl_base)
        .ok_or_else(|| DataError::format(&dir.join(lbl_base), "file not found (nor .gz)"))?;
    let (images, labels) = rayon::join(|| read_images(&img_path), || read_labels(&lbl_path));
    let (images, labels) = (images?, labels?);
    if labels.len() != images.count {
        return Err(DataError::format(
            &lbl_path,
            format!(
                "has {} labels but {} has {} images",
                labels.len(),
                img_path.display(),
                images.count
            ),
        ));
    }
    if let Some((i, &l)) = labels
        .iter()
        .enumerate()
        .find(|(_, &l)| usize::from(l) >= num_classes)
    {
        return Err(DataError::format(
            &lbl_path,
            format!("label {l} at index {i} is out of range for {num_classes} classes"),
        ));
    }
    Dataset::new(
        name,
        1,
        images.height,
        images.width,
        images.pixels,
        Some(labels.into_iter().map(u32::from).collect()),
        num_classes,
        vec![mean],
        vec![std],
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    pub(crate) fn idx_images(count: u32, h: u32, w: u32, fill: impl Fn(usize) -> u8) -> Vec<u8> {
        let mut v = Vec::new();
        for x in [IMAGES_MAGIC, count, h, w] {
            v.extend_from_slice(&x.to_be_bytes());
        }
        v.extend((0..(count * h * w) as usize).map(fill));
        v
    }

    pub(crate) fn idx_labels(labels: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
        v.extend_from_slice(&(labels.len() as u32).to_be_bytes());
        v.extend_from_slice(labels);
        v
    }

    pub(crate) fn gz(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, data).unwrap();
        p
    }

    #[test]
    fn good_files_gz_and_raw() {
        let dir = tempfile::tempdir().unwrap();
        // Test split raw, train split gzipped.
        write(
            dir.path(),
            "t10k-images-idx3-ubyte",
            &idx_images(3, 2, 4, |i| i as u8),
        );
        write(
            dir.path(),
            "t10k-labels-idx1-ubyte",
            &idx_labels(&[0, 9, 4]),
        );
        write(
            dir.path(),
            "train-images-idx3-ubyte.gz",
            &gz(&idx_images(2, 5, 3, |i| 200 - i as u8)),
        );
        write(
            dir.path(),
            "train-labels-idx1-ubyte.gz",
            &gz(&idx_labels(&[7, 1])),
        );

        let test = load_split(dir.path(), Split::Test, "t", 10, 0.5, 0.25).unwrap();
        assert_eq!(
            (test.len(), test.channels, test.height, test.width),
            (3, 1, 2, 4)
        );
        assert_eq!(test.labels.as_deref(), Some(&[0u32, 9, 4][..]));
        assert_eq!(test.pixels, (0..24).map(|i| i as u8).collect::<Vec<_>>());
        assert_eq!(
            (test.mean.clone(), test.std.clone()),
            (vec![0.5], vec![0.25])
        );

        let train = load_split(dir.path(), Split::Train, "t", 10, 0.5, 0.25).unwrap();
        assert_eq!((train.len(), train.height, train.width), (2, 5, 3));
        assert_eq!(train.pixels[0], 200);
        assert_eq!(train.pixels[29], 171);
        assert_eq!(train.labels.as_deref(), Some(&[7u32, 1][..]));
    }

    #[test]
    fn wrong_magic_is_one_line_naming_file() {
        let dir = tempfile::tempdir().unwrap();
        // A label file where an image file is expected.
        let p = write(dir.path(), "x-images", &idx_labels(&[1, 2, 3]));
        let e = read_images(&p).unwrap_err().to_string();
        assert!(e.contains("x-images"), "{e}");
        assert!(
            e.contains("bad magic number 0x00000801, expected 0x00000803"),
            "{e}"
        );
        assert!(!e.contains('\n'));
        let p = write(dir.path(), "tiny", &[0, 0]);
        let e = read_labels(&p).unwrap_err().to_string();
        assert!(e.contains("tiny") && e.contains("too short"), "{e}");
    }

    #[test]
    fn truncated_gz_is_format_error() {
        let dir = tempfile::tempdir().unwrap();
        let full = gz(&idx_images(50, 8, 8, |i| (i * 7) as u8));
        for cut in [full.len() - 4, full.len() / 2, 12] {
            let p = write(dir.path(), "train-images-idx3-ubyte.gz", &full[..cut]);
            let e = read_images(&p).unwrap_err();
            assert!(matches!(e, DataError::Format { .. }), "{e:?}");
            let s = e.to_string();
            assert!(s.contains("train-images-idx3-ubyte.gz"), "{s}");
            assert!(!s.contains('\n'), "{s}");
        }
        // Truncated raw payload.
        let raw = idx_images(5, 4, 4, |_| 1);
        let p = write(dir.path(), "raw", &raw[..raw.len() - 3]);
        let s = read_images(&p).unwrap_err().to_string();
        assert!(s.contains("truncated") && s.contains("77 bytes"), "{s}");
    }

    #[test]
    fn count_mismatch_names_label_file() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "t10k-images-idx3-ubyte.gz",
            &gz(&idx_images(3, 2, 2, |_| 0)),
        );
        write(
            dir.path(),
            "t10k-labels-idx1-ubyte.gz",
            &gz(&idx_labels(&[1, 2])),
        );
        let e = load_split(dir.path(), Split::Test, "t", 10, 0.5, 0.5).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("t10k-labels-idx1-ubyte.gz: has 2 labels but"),
            "{s}"
        );
        assert!(s.contains("has 3 images"), "{s}");
        assert!(!s.contains('\n'));
        // Out-of-range label.
        write(
            dir.path(),
            "t10k-labels-idx1-ubyte.gz",
            &gz(&idx_labels(&[1, 2, 10])),
        );
        let s = load_split(dir.path(), Split::Test, "t", 10, 0.5, 0.5)
            .unwrap_err()
            .to_string();
        assert!(s.contains("label 10 at index 2"), "{s}");
    }
}
