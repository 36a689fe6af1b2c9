//! Video input: any file the `ffmpeg` command line can read (scaled by ffmpeg and piped
//! to us as raw `rgb24` frames, so no native library is linked), and UCF101-style
//! folders of extracted frames.
//!
//! Every decoded frame is kept exactly once (`-vsync passthrough`, the count `ffprobe
//! -count_frames` reports): ffmpeg's default for raw output would repeat frames to fill
//! the timing gaps of variable-frame-rate files and pad the end.
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use rayon::prelude::*;

use crate::error::{DataError, Result};
use crate::folder::{is_hidden, is_image};

/// File extensions taken for videos when a folder is searched.
pub const VIDEO_EXTENSIONS: [&str; 9] = [
    "avi", "mp4", "mkv", "mov", "webm", "m4v", "mpg", "mpeg", "ogv",
];

/// A decoded video: frames in time order, each CHW `u8` (planes R, G, B), contiguous.
#[derive(Clone, Debug, PartialEq)]
pub struct Video {
    /// The file or folder it came from, for messages.
    pub name: String,
    /// Channels per frame (3).
    pub channels: usize,
    /// Rows per frame.
    pub height: usize,
    /// Columns per frame.
    pub width: usize,
    /// `len() · channels · height · width` bytes.
    pub frames: Vec<u8>,
}

impl Video {
    /// Bytes per frame.
    pub fn frame_len(&self) -> usize {
        self.channels * self.height * self.width
    }

    /// Number of frames.
    pub fn len(&self) -> usize {
        self.frames.len().checked_div(self.frame_len()).unwrap_or(0)
    }

    /// True when there are no frames.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The CHW bytes of frame `t`.
    ///
    /// # Panics
    /// If `t >= self.len()`.
    pub fn frame(&self, t: usize) -> &[u8] {
        let n = self.frame_len();
        &self.frames[t * n..(t + 1) * n]
    }
}

fn has_extension(path: &Path, extensions: &[&str]) -> bool {
    path.extension()
        .and_then(OsStr::to_str)
        .is_some_and(|e| extensions.iter().any(|x| e.eq_ignore_ascii_case(x)))
}

/// The largest frame side accepted (ffmpeg's own limit is about this).
const MAX_SIDE: usize = 16384;

fn check_size(size: Option<(usize, usize)>) -> Result<()> {
    match size {
        Some((w, h)) if w == 0 || h == 0 || w > MAX_SIDE || h > MAX_SIDE => Err(DataError::config(
            "video.size",
            format!("frames cannot be {w}x{h} (1 to {MAX_SIDE} pixels a side)"),
        )),
        _ => Ok(()),
    }
}

/// The ffprobe that goes with `ffmpeg`: `$SELFSUP_FFPROBE`, else `ffmpeg`'s path with its
/// trailing `ffmpeg` replaced by `ffprobe`, else `ffprobe` from `PATH`.
fn ffprobe_for(ffmpeg: &OsStr) -> OsString {
    if let Some(p) = std::env::var_os("SELFSUP_FFPROBE") {
        return p;
    }
    let path = Path::new(ffmpeg);
    let name = path.file_name().and_then(OsStr::to_str).unwrap_or("");
    let stem = name.strip_suffix(".exe").unwrap_or(name);
    match stem.strip_suffix("ffmpeg") {
        Some(prefix) => path
            .with_file_name(format!("{prefix}ffprobe{}", &name[stem.len()..]))
            .into_os_string(),
        None => "ffprobe".into(),
    }
}

/// Starts `cmd` with piped output; a missing program is a one-line hint to install it.
fn spawn(cmd: &mut Command, tool: &str, path: &Path) -> Result<Child> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => DataError::config(
                tool,
                format!(
                    "{} not found (SELFSUP_{} or PATH): install it, e.g. `apt-get install ffmpeg`, or use a folder of extracted frames",
                    cmd.get_program().to_string_lossy(),
                    tool.to_uppercase()
                ),
            ),
            _ => DataError::io(path, e),
        })
}

/// The last line a tool printed, without a leading `<path>: ` (the error names the path).
fn last_line(path: &Path, stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let line = text.lines().rev().map(str::trim).find(|l| !l.is_empty())?;
    let prefix = format!("{}: ", path.display());
    Some(line.strip_prefix(&prefix).unwrap_or(line).to_string())
}

/// `<path>: <tool> cannot read it: <the last line it printed>`.
fn tool_failed(tool: &str, path: &Path, status: ExitStatus, stderr: &[u8]) -> DataError {
    let why = last_line(path, stderr).unwrap_or_else(|| status.to_string());
    DataError::format(path, format!("{tool} cannot read it: {why}"))
}

fn no_video_stream(path: &Path) -> DataError {
    DataError::format(path, "video has no frames (no video stream)")
}

/// The first video stream's `(width, height)` as ffmpeg outputs it (display rotation
/// applied), or `None` if the file has no video stream.
fn probe_size(ffprobe: &OsStr, path: &Path) -> Result<Option<(usize, usize)>> {
    let mut cmd = Command::new(ffprobe);
    cmd.args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .args(["stream=width,height:stream_side_data=rotation", "-of"])
        .args(["default=noprint_wrappers=1"])
        .arg(path);
    let out = spawn(&mut cmd, "ffprobe", path)?
        .wait_with_output()
        .map_err(|e| DataError::io(path, e))?;
    if !out.status.success() {
        return Err(tool_failed("ffprobe", path, out.status, &out.stderr));
    }
    Ok(parse_probe(&String::from_utf8_lossy(&out.stdout)))
}

/// `(width, height)` from ffprobe's `key=value` lines; a quarter-turn display rotation
/// swaps them, as ffmpeg turns frames upright. `None` without a size (no video stream).
fn parse_probe(text: &str) -> Option<(usize, usize)> {
    let field = |key: &str| {
        text.lines()
            .filter_map(|l| l.trim().split_once('='))
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.trim().parse::<f64>().ok())
    };
    let (w, h) = (field("width")?, field("height")?);
    if w < 1.0 || h < 1.0 {
        return None;
    }
    let (w, h) = (w as usize, h as usize);
    let quarter = field("rotation").is_some_and(|r| (r.round() as i64).rem_euclid(180) == 90);
    Some(if quarter { (h, w) } else { (w, h) })
}

/// Reads `frame_len`-byte HWC frames from `src` until it ends, appending them as CHW to
/// `out`; returns the bytes of a trailing partial frame.
fn read_frames(src: &mut impl Read, frame_len: usize, out: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut buf = vec![0u8; frame_len];
    loop {
        let mut filled = 0;
        while filled < frame_len {
            match src.read(&mut buf[filled..]) {
                Ok(0) => return Ok(filled),
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        push_planar(&buf, out);
    }
}

/// Appends interleaved `RGBRGB…` pixels as planes `RR…GG…BB…`.
fn push_planar(hwc: &[u8], out: &mut Vec<u8>) {
    let plane = hwc.len() / 3;
    let start = out.len();
    out.resize(start + 3 * plane, 0);
    let (r, gb) = out[start..].split_at_mut(plane);
    let (g, b) = gb.split_at_mut(plane);
    for (((px, r), g), b) in hwc.chunks_exact(3).zip(r).zip(g).zip(b) {
        (*r, *g, *b) = (px[0], px[1], px[2]);
    }
}

/// Decodes a video file with the `ffmpeg` command line (`$SELFSUP_FFMPEG` if set), scaled
/// by ffmpeg to `size = (width, height)`, or at its own size for `None` (then read
/// with `ffprobe`, see [`decode_video_with`]).
///
/// # Errors
/// One-line [`DataError`]s naming the file for a missing file, a file ffmpeg cannot
/// read and a video without frames; a [`DataError::Config`] for a missing ffmpeg or a
/// zero `size`.
pub fn decode_video(path: &Path, size: Option<(usize, usize)>) -> Result<Video> {
    let ffmpeg = std::env::var_os("SELFSUP_FFMPEG").unwrap_or_else(|| "ffmpeg".into());
    decode_video_with(&ffmpeg, path, size)
}

/// [`decode_video`] with the ffmpeg program given. ffprobe is `$SELFSUP_FFPROBE` if set,
/// else the program's path with its trailing `ffmpeg` replaced by `ffprobe`.
///
/// # Errors
/// As [`decode_video`].
pub fn decode_video_with(
    ffmpeg: &OsStr,
    path: &Path,
    size: Option<(usize, usize)>,
) -> Result<Video> {
    check_size(size)?;
    if path.is_dir() {
        return Err(DataError::format(path, "is a folder, not a video file"));
    }
    if !path.exists() {
        return Err(DataError::format(path, "no such video file"));
    }
    std::fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let ffprobe = ffprobe_for(ffmpeg);
    let (width, height) = match size {
        Some(s) => s,
        None => probe_size(&ffprobe, path)?.ok_or_else(|| no_video_stream(path))?,
    };
    if width > MAX_SIDE || height > MAX_SIDE {
        return Err(DataError::format(
            path,
            format!("frames are {width}x{height}, over {MAX_SIDE} pixels a side"),
        ));
    }
    let mut cmd = Command::new(ffmpeg);
    cmd.args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-map", "0:v:0", "-vsync", "passthrough", "-vf"])
        .arg(format!("scale={width}:{height}"))
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]);
    let mut child = spawn(&mut cmd, "ffmpeg", path)?;
    // Drain stderr beside stdout, so a chatty ffmpeg never blocks on a full pipe.
    let stderr = child.stderr.take();
    let stderr = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut s) = stderr {
            let _ = s.read_to_end(&mut buf);
        }
        buf
    });
    let frame_len = 3 * width * height;
    let mut frames = Vec::new();
    let read = match child.stdout.take() {
        Some(mut out) => read_frames(&mut out, frame_len, &mut frames),
        None => Ok(0),
    };
    if read.is_err() {
        let _ = child.kill();
    }
    let status = child.wait().map_err(|e| DataError::io(path, e))?;
    let stderr = stderr.join().unwrap_or_default();
    let partial = read.map_err(|e| DataError::io(path, e))?;
    if !status.success() {
        if frames.is_empty() {
            // Tell a video without frames from a file ffmpeg cannot read.
            let stream = match size {
                None => Ok(Some((width, height))),
                Some(_) => probe_size(&ffprobe, path),
            };
            match stream {
                Ok(Some(_)) => {
                    let why = last_line(path, &stderr).unwrap_or_else(|| status.to_string());
                    return Err(DataError::format(
                        path,
                        format!("video has no frames (ffmpeg decoded none: {why})"),
                    ));
                }
                Ok(None) => return Err(no_video_stream(path)),
                Err(_) => {}
            }
        }
        return Err(tool_failed("ffmpeg", path, status, &stderr));
    }
    if partial != 0 {
        return Err(DataError::format(
            path,
            format!("ffmpeg's output ends inside a {width}x{height} rgb24 frame"),
        ));
    }
    if frames.is_empty() {
        return Err(DataError::format(path, "video has no frames"));
    }
    frames.shrink_to_fit();
    Ok(Video {
        name: path.display().to_string(),
        channels: 3,
        height,
        width,
        frames,
    })
}

/// The frame files directly in `dir`, sorted by name (hidden files skipped).
fn frame_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let p = entry.map_err(|e| DataError::io(dir, e))?.path();
        if !is_hidden(&p) && p.is_file() && is_image(&p) {
            files.push(p);
        }
    }
    files.sort();
    Ok(files)
}

/// One frame file as RGB, resized to `size` if given.
fn load_frame(file: &Path, size: Option<(usize, usize)>) -> Result<image::RgbImage> {
    let img = image::open(file)
        .map_err(|e| match e {
            image::ImageError::IoError(io) => DataError::io(file, io),
            other => DataError::format(file, format!("cannot decode frame: {other}")),
        })?
        .to_rgb8();
    Ok(match size {
        Some((w, h)) if (img.width() as usize, img.height() as usize) != (w, h) => {
            let filter = image::imageops::FilterType::Triangle;
            image::imageops::resize(&img, w as u32, h as u32, filter)
        }
        _ => img,
    })
}

/// A folder of extracted frames (png or jpg, in file-name order, UCF101 style), as RGB,
/// resized to `size = (width, height)` if given.
///
/// # Errors
/// If the folder has no frames, a frame cannot be decoded, or a frame's size differs
/// from the first one's (naming the file).
pub fn read_frame_folder(dir: &Path, size: Option<(usize, usize)>) -> Result<Video> {
    check_size(size)?;
    let files = frame_files(dir)?;
    let Some(first) = files.first() else {
        return Err(DataError::format(
            dir,
            "video has no frames (no png or jpg files)",
        ));
    };
    let mut frames = Vec::new();
    let mut shape = None;
    // Decode in parallel, a bounded batch at a time.
    for batch in files.chunks(64) {
        let decoded = batch
            .par_iter()
            .map(|f| load_frame(f, size))
            .collect::<Result<Vec<_>>>()?;
        for (file, img) in batch.iter().zip(&decoded) {
            let dims = (img.width() as usize, img.height() as usize);
            let (w, h) = *shape.get_or_insert(dims);
            if dims != (w, h) {
                return Err(DataError::format(
                    file,
                    format!(
                        "frame is {}x{} but {} is {w}x{h}; all frames of a video must have one size",
                        dims.0,
                        dims.1,
                        first.display()
                    ),
                ));
            }
            push_planar(img.as_raw(), &mut frames);
        }
    }
    let (width, height) = shape.unwrap_or((0, 0));
    Ok(Video {
        name: dir.display().to_string(),
        channels: 3,
        height,
        width,
        frames,
    })
}

/// What `video:<path>` names: a video file; a folder that holds frames; or any other
/// folder, searched recursively (in name order) for video files and frame folders.
///
/// # Errors
/// If `path` does not exist or holds no video.
pub fn find_videos(path: &Path) -> Result<Vec<PathBuf>> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    if !path.is_dir() {
        return Err(DataError::format(path, "no such video file or folder"));
    }
    let mut found = Vec::new();
    collect_videos(path, &mut found)?;
    if found.is_empty() {
        return Err(DataError::format(
            path,
            format!(
                "holds no video ({}) and no folder of frames (png, jpg)",
                VIDEO_EXTENSIONS.join(", ")
            ),
        ));
    }
    Ok(found)
}

fn collect_videos(dir: &Path, found: &mut Vec<PathBuf>) -> Result<()> {
    if !frame_files(dir)?.is_empty() {
        found.push(dir.to_path_buf());
        return Ok(());
    }
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| DataError::io(dir, e))? {
        let p = entry.map_err(|e| DataError::io(dir, e))?.path();
        if !is_hidden(&p) {
            entries.push(p);
        }
    }
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            collect_videos(&entry, found)?;
        } else if has_extension(&entry, &VIDEO_EXTENSIONS) {
            found.push(entry);
        }
    }
    Ok(())
}

/// Reads one source from [`find_videos`]: a folder as frames, a file through ffmpeg.
///
/// # Errors
/// As [`read_frame_folder`] and [`decode_video`].
pub fn read_video(path: &Path, size: Option<(usize, usize)>) -> Result<Video> {
    if path.is_dir() {
        read_frame_folder(path, size)
    } else {
        decode_video(path, size)
    }
}

/// Writes frame `t` as `dir/frame_<t+1, 6 digits>.png` through a temporary file.
fn write_png(video: &Video, t: usize, dir: &Path) -> Result<()> {
    let (chw, plane, c) = (video.frame(t), video.height * video.width, video.channels);
    let hwc: Vec<u8> = (0..plane)
        .flat_map(|p| (0..c).map(move |k| chw[k * plane + p]))
        .collect();
    let color = if c == 1 {
        image::ExtendedColorType::L8
    } else {
        image::ExtendedColorType::Rgb8
    };
    let path = dir.join(format!("frame_{:06}.png", t + 1));
    let tmp = dir.join(format!(".frame_{:06}.png.tmp", t + 1));
    let (w, h) = (video.width as u32, video.height as u32);
    if let Err(e) = image::save_buffer_with_format(&tmp, &hwc, w, h, color, image::ImageFormat::Png)
    {
        let _ = std::fs::remove_file(&tmp);
        return Err(match e {
            image::ImageError::IoError(io) => DataError::io(&tmp, io),
            other => DataError::format(&path, other.to_string()),
        });
    }
    std::fs::rename(&tmp, &path).map_err(|e| DataError::io(&path, e))
}

/// Writes every frame of `video` into `dir` (created) as `frame_000001.png`, … , each
/// through a temporary file and a rename; returns the frame count.
///
/// # Errors
/// If `dir` already holds frames (nothing is overwritten), the video is neither 1- nor
/// 3-channel, or on I/O errors.
pub fn write_frame_folder(video: &Video, dir: &Path) -> Result<usize> {
    if !matches!(video.channels, 1 | 3) {
        return Err(DataError::format(
            dir,
            format!("cannot write {}-channel frames as PNG", video.channels),
        ));
    }
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    if !frame_files(dir)?.is_empty() {
        return Err(DataError::format(
            dir,
            "already holds frames; choose an empty folder",
        ));
    }
    (0..video.len())
        .into_par_iter()
        .try_for_each(|t| write_png(video, t, dir))?;
    Ok(video.len())
}

#[cfg(test)]
#[path = "video_tests.rs"]
mod tests;
