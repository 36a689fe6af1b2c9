//! Reader for the binary versions of CIFAR-10 and CIFAR-100
//! (<https://www.cs.toronto.edu/~kriz/cifar.html>).
//!
//! Each file is a sequence of fixed-size records: the label byte(s), then a
//! 32x32 RGB image stored channel-major (1024 red, 1024 green, 1024 blue
//! bytes, rows top to bottom). CIFAR-10 records have one label byte; CIFAR-100
//! records have a coarse (20 superclasses) then a fine (100 classes) label
//! byte, and the fine label is used.
//!
//! Expected layout inside the dataset folder (as the official tarballs
//! extract): `cifar-10-batches-bin/data_batch_{1..5}.bin` and
//! `cifar-10-batches-bin/test_batch.bin`; `cifar-100-binary/train.bin` and
//! `cifar-100-binary/test.bin`.

use std::path::Path;

use crate::dataset::{Dataset, Split};
use crate::error::{DataError, Result};

/// Image side length.
pub const SIDE: usize = 32;
/// Bytes of pixels per record.
pub const IMAGE_BYTES: usize = 3 * SIDE * SIDE;

/// Which CIFAR variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// 10 classes, one label byte per record.
    Cifar10,
    /// 100 fine classes, coarse + fine label bytes per record.
    Cifar100,
}

impl Kind {
    /// The dataset name used by [`crate::load`].
    pub fn name(self) -> &'static str {
        match self {
            Kind::Cifar10 => "cifar10",
            Kind::Cifar100 => "cifar100",
        }
    }

    /// Number of (fine) classes.
    pub fn num_classes(self) -> usize {
        match self {
            Kind::Cifar10 => 10,
            Kind::Cifar100 => 100,
        }
    }

    /// Label bytes before each image.
    pub fn label_bytes(self) -> usize {
        match self {
            Kind::Cifar10 => 1,
            Kind::Cifar100 => 2,
        }
    }

    /// Bytes per record.
    pub fn record_len(self) -> usize {
        self.label_bytes() + IMAGE_BYTES
    }

    /// The files of `split`, relative to the dataset folder.
    pub fn files(self, split: Split) -> Vec<&'static str> {
        match (self, split) {
            (Kind::Cifar10, Split::Train) => vec![
                "cifar-10-batches-bin/data_batch_1.bin",
                "cifar-10-batches-bin/data_batch_2.bin",
                "cifar-10-batches-bin/data_batch_3.bin",
                "cifar-10-batches-bin/data_batch_4.bin",
                "cifar-10-batches-bin/data_batch_5.bin",
            ],
            (Kind::Cifar10, Split::Test) => vec!["cifar-10-batches-bin/test_batch.bin"],
            (Kind::Cifar100, Split::Train) => vec!["cifar-100-binary/train.bin"],
            (Kind::Cifar100, Split::Test) => vec!["cifar-100-binary/test.bin"],
        }
    }
}

/// Parses one CIFAR binary file's bytes, appending pixels and labels.
/// `path` is only used in errors.
///
/// # Errors
/// [`DataError::Format`] if the file is empty, not a whole number of records
/// (truncated), or holds a label out of range.
pub fn parse_file(
    path: &Path,
    data: &[u8],
    kind: Kind,
    pixels: &mut Vec<u8>,
    labels: &mut Vec<u32>,
) -> Result<()> {
    let rec = kind.record_len();
    if data.is_empty() || data.len() % rec != 0 {
        return Err(DataError::format(
            path,
            format!(
                "size {} bytes is not a whole number of {rec}-byte {} records (truncated or wrong file?)",
                data.len(),
                kind.name()
            ),
        ));
    }
    let n = data.len() / rec;
    pixels.reserve(n * IMAGE_BYTES);
    labels.reserve(n);
    let fine = kind.label_bytes() - 1;
    for (i, r) in data.chunks_exact(rec).enumerate() {
        if kind == Kind::Cifar100 && r[0] >= 20 {
            return Err(DataError::format(
                path,
                format!(
                    "record {i}: coarse label {} out of range for 20 superclasses",
                    r[0]
                ),
            ));
        }
        let label = r[fine];
        if usize::from(label) >= kind.num_classes() {
            return Err(DataError::format(
                path,
                format!(
                    "record {i}: label {label} out of range for {} classes",
                    kind.num_classes()
                ),
            ));
        }
        labels.push(u32::from(label));
        pixels.extend_from_slice(&r[kind.label_bytes()..]);
    }
    Ok(())
}

/// Loads one split from the dataset folder `dir`.
///
/// # Errors
/// [`DataError::Io`] if a file cannot be read, [`DataError::Format`] if one
/// is malformed (see [`parse_file`]).
pub fn load_split(
    dir: &Path,
    kind: Kind,
    split: Split,
    mean: Vec<f32>,
    std: Vec<f32>,
) -> Result<Dataset> {
    let mut pixels = Vec::new();
    let mut labels = Vec::new();
    for f in kind.files(split) {
        let path = dir.join(f);
        let data = std::fs::read(&path).map_err(|e| DataError::io(&path, e))?;
        parse_file(&path, &data, kind, &mut pixels, &mut labels)?;
    }
    Dataset::new(
        kind.name(),
        3,
        SIDE,
        SIDE,
        pixels,
        Some(labels),
        kind.num_classes(),
        mean,
        std,
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
pub(crate) mod tests {
    use super::*;

    /// `n` records whose pixels encode the record index and channel.
    pub(crate) fn records(kind: Kind, n: usize, label: impl Fn(usize) -> u8) -> Vec<u8> {
        let mut v = Vec::new();
        for i in 0..n {
            if kind == Kind::Cifar100 {
                v.push((i % 20) as u8);
            }
            v.push(label(i));
            for c in 0..3 {
                v.extend(std::iter::repeat_n((i * 3 + c) as u8, SIDE * SIDE));
            }
        }
        v
    }

    fn write_split(dir: &Path, kind: Kind, split: Split, n: usize) {
        for f in kind.files(split) {
            let p = dir.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, records(kind, n, |i| (i % 10) as u8 + 1)).unwrap();
        }
    }

    #[test]
    fn cifar10_good_files() {
        let t = tempfile::tempdir().unwrap();
        write_split(t.path(), Kind::Cifar10, Split::Train, 3);
        let d = load_split(
            t.path(),
            Kind::Cifar10,
            Split::Train,
            vec![0.5; 3],
            vec![0.25; 3],
        )
        .unwrap();
        assert_eq!(d.len(), 15); // 5 batches x 3 records
        assert_eq!(
            (d.channels, d.height, d.width, d.num_classes),
            (3, 32, 32, 10)
        );
        assert_eq!(d.labels.as_ref().unwrap()[..4], [1, 2, 3, 1]);
        // image 1 of the first batch: channel c filled with 3 + c.
        let img = d.raw(1);
        assert_eq!((img[0], img[1024], img[2047], img[3071]), (3, 4, 4, 5));
    }

    #[test]
    fn cifar100_uses_fine_label() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("cifar-100-binary");
        std::fs::create_dir_all(&p).unwrap();
        std::fs::write(
            p.join("test.bin"),
            records(Kind::Cifar100, 4, |i| 90 + i as u8),
        )
        .unwrap();
        let d = load_split(
            t.path(),
            Kind::Cifar100,
            Split::Test,
            vec![0.5; 3],
            vec![0.25; 3],
        )
        .unwrap();
        assert_eq!(d.labels, Some(vec![90, 91, 92, 93]));
        assert_eq!(d.num_classes, 100);
        assert_eq!(d.raw(3)[0], 9);
    }

    #[test]
    fn truncated_and_bad_labels_are_format_errors() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("cifar-10-batches-bin");
        std::fs::create_dir_all(&p).unwrap();
        let full = records(Kind::Cifar10, 2, |_| 0);
        std::fs::write(p.join("test_batch.bin"), &full[..full.len() - 1]).unwrap();
        let e = load_split(
            t.path(),
            Kind::Cifar10,
            Split::Test,
            vec![0.5; 3],
            vec![0.25; 3],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("test_batch.bin: size 6145 bytes"), "{e}");
        assert!(e.contains("3073-byte cifar10 records"), "{e}");
        assert!(!e.contains('\n'));
        std::fs::write(
            p.join("test_batch.bin"),
            records(Kind::Cifar10, 2, |i| 9 + i as u8),
        )
        .unwrap();
        let e = load_split(
            t.path(),
            Kind::Cifar10,
            Split::Test,
            vec![0.5; 3],
            vec![0.25; 3],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("record 1: label 10 out of range"), "{e}");
        // Missing file is an Io error naming it.
        let e = load_split(
            t.path(),
            Kind::Cifar10,
            Split::Train,
            vec![0.5; 3],
            vec![0.25; 3],
        )
        .unwrap_err();
        assert!(matches!(e, DataError::Io { .. }));
        assert!(e.to_string().contains("data_batch_1.bin"));
    }
}
