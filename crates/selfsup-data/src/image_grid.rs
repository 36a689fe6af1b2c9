//! Tiles images into one PNG, for looking at what a model does (inpainting's
//! masked input, reconstruction and original, side by side).

use crate::error::{DataError, Result};
use crate::image::Image;
use std::path::Path;

/// Pixels of white space between tiles and around the grid.
pub const GRID_GAP: usize = 2;

/// Writes `rows` of images as one PNG at `path`, row `r` and column `c` holding
/// `rows[r][c]`. Every tile gets the largest height and width among the images
/// (smaller images sit in the top-left corner), with [`GRID_GAP`] white pixels
/// between and around the tiles. Values are clamped to `[0, 1]` and stored as
/// 8 bits: a grayscale PNG when every image has one channel, RGB otherwise (gray
/// images then repeat their channel). The file is written to a temporary name in
/// the same folder and renamed into place.
///
/// # Errors
/// [`DataError::Config`] when there is no image or an image has other than 1 or 3
/// channels; [`DataError::Io`] or [`DataError::Format`] when the file cannot be
/// encoded or written.
pub fn write_png_grid(path: &Path, rows: &[Vec<Image>]) -> Result<()> {
    let images = || rows.iter().flatten();
    if images().next().is_none() {
        return Err(DataError::config("grid", "there are no images to write"));
    }
    if let Some(bad) = images().find(|i| i.channels != 1 && i.channels != 3) {
        return Err(DataError::config(
            "grid",
            format!("images need 1 or 3 channels, got {}", bad.channels),
        ));
    }
    let tile_h = images().map(|i| i.height).max().unwrap_or(0);
    let tile_w = images().map(|i| i.width).max().unwrap_or(0);
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let channels = if images().all(|i| i.channels == 1) {
        1
    } else {
        3
    };
    let height = GRID_GAP + rows.len() * (tile_h + GRID_GAP);
    let width = GRID_GAP + cols * (tile_w + GRID_GAP);
    let mut pixels = vec![u8::MAX; height * width * channels];
    for (r, row) in rows.iter().enumerate() {
        for (c, img) in row.iter().enumerate() {
            let (y0, x0) = (
                GRID_GAP + r * (tile_h + GRID_GAP),
                GRID_GAP + c * (tile_w + GRID_GAP),
            );
            for y in 0..img.height {
                for x in 0..img.width {
                    let at = ((y0 + y) * width + x0 + x) * channels;
                    for k in 0..channels {
                        let v = img.get(k.min(img.channels - 1), y, x);
                        pixels[at + k] = (v.clamp(0.0, 1.0) * 255.0).round() as u8;
                    }
                }
            }
        }
    }
    let color = if channels == 1 {
        image::ExtendedColorType::L8
    } else {
        image::ExtendedColorType::Rgb8
    };
    let mut png = Vec::new();
    image::ImageEncoder::write_image(
        image::codecs::png::PngEncoder::new(&mut png),
        &pixels,
        width as u32,
        height as u32,
        color,
    )
    .map_err(|e| DataError::format(path, format!("cannot encode PNG: {e}")))?;
    let name = path
        .file_name()
        .map_or_else(|| "grid.png".into(), |n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    std::fs::write(&tmp, &png).map_err(|e| DataError::io(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        DataError::io(path, e)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn ramp(channels: usize, height: usize, width: usize, scale: f32) -> Image {
        let n = channels * height * width;
        Image {
            channels,
            height,
            width,
            data: (0..n).map(|i| scale * i as f32 / n as f32).collect(),
        }
    }

    #[test]
    fn writes_a_grid_that_reads_back_with_the_right_size_and_pixels() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grid.png");
        let rows = vec![
            vec![ramp(1, 4, 5, 1.0), ramp(1, 4, 5, 0.5)],
            vec![ramp(1, 3, 5, 2.0)],
        ];
        write_png_grid(&path, &rows).unwrap();
        let back = image::open(&path).unwrap();
        assert_eq!(back.color(), image::ColorType::L8);
        let gray = back.to_luma8();
        assert_eq!(gray.dimensions(), (2 + 2 * 7, 2 + 2 * 6));
        let at = |x: usize, y: usize| gray.get_pixel(x as u32, y as u32)[0];
        for (r, c, img) in [
            (0, 0, &rows[0][0]),
            (0, 1, &rows[0][1]),
            (1, 0, &rows[1][0]),
        ] {
            for y in 0..img.height {
                for x in 0..img.width {
                    let want = (img.get(0, y, x).clamp(0.0, 1.0) * 255.0).round() as u8;
                    assert_eq!(at(2 + c * 7 + x, 2 + r * 6 + y), want);
                }
            }
        }
        assert_eq!(at(0, 0), 255, "gap");
        assert_eq!(at(2, 2 + 6 + 3), 255, "below the shorter tile");
        assert_eq!(at(2 + 7, 2 + 6), 255, "the missing tile");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn mixed_channels_give_rgb_and_bad_input_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rgb.png");
        let rgb = ramp(3, 2, 2, 1.0);
        write_png_grid(&path, &[vec![ramp(1, 2, 2, 1.0), rgb.clone()]]).unwrap();
        let back = image::open(&path).unwrap().to_rgb8();
        assert_eq!(back.dimensions(), (10, 6));
        let gray = (ramp(1, 2, 2, 1.0).get(0, 1, 0) * 255.0).round() as u8;
        assert_eq!(back.get_pixel(2, 3).0, [gray; 3]);
        let want = [0, 1, 2].map(|k| (rgb.get(k, 1, 1) * 255.0).round() as u8);
        assert_eq!(back.get_pixel(4 + 2 + 1, 3).0, want);
        let e = write_png_grid(&path, &[]).unwrap_err().to_string();
        assert!(e.contains("no images"), "{e}");
        let e = write_png_grid(&path, &[vec![ramp(2, 2, 2, 1.0)]])
            .unwrap_err()
            .to_string();
        assert!(e.contains("1 or 3 channels"), "{e}");
    }
}
