//! `cargo xtask prepare-video`: a video file to a folder of PNG frames.
use std::path::Path;

use crate::cli::PrepareVideoArgs;
use anyhow::{bail, Context, Result};
use selfsup::data::video::{decode_video, write_frame_folder};

/// Parses `WIDTHxHEIGHT`.
fn parse_size(text: &str) -> Result<(usize, usize)> {
    let parsed = text
        .split_once(['x', 'X'])
        .and_then(|(w, h)| Some((w.trim().parse().ok()?, h.trim().parse().ok()?)));
    match parsed {
        Some((w, h)) if w > 0 && h > 0 => Ok((w, h)),
        _ => bail!("invalid setting `size`: expected WIDTHxHEIGHT such as 64x48, got {text:?}"),
    }
}

/// Fails if `out` already holds extracted frames, before any decoding work.
fn check_out(out: &Path) -> Result<()> {
    if !out.is_dir() {
        return Ok(());
    }
    let entries = std::fs::read_dir(out).with_context(|| format!("{}", out.display()))?;
    for entry in entries {
        let name = entry
            .with_context(|| format!("{}", out.display()))?
            .file_name();
        let name = name.to_string_lossy();
        if name.starts_with("frame_") && name.ends_with(".png") {
            bail!(
                "{}: already holds frames ({name}); choose an empty folder",
                out.display()
            );
        }
    }
    Ok(())
}

pub fn run(args: PrepareVideoArgs) -> Result<()> {
    let size = args.size.as_deref().map(parse_size).transpose()?;
    check_out(&args.out)?;
    let video = decode_video(&args.input, size)?;
    let frames = write_frame_folder(&video, &args.out)?;
    println!(
        "wrote {frames} frames of {}x{} to {}",
        video.width,
        video.height,
        args.out.display()
    );
    Ok(())
}
