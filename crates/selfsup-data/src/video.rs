//! Video input: any file the `ffmpeg` command line can read (scaled by ffmpeg and piped
//! to us as raw `rgb24` frames, so no native library is linked), and UCF101-style
//! folders of extracted frames.
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{DataError, Result};

/// File extensions taken for videos when a folder is searched.
pub const VIDEO_EXTENSIONS: [&str; 9] = [
    "avi", "mp4", "mkv", "mov", "webm", "m4v", "mpg", "mpeg", "ogv",
];
/// File extensions taken for frames.
pub const FRAME_EXTENSIONS: [&str; 3] = ["png", "jpg", "jpeg"];

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

/// The program named by `var`, or `default`.
fn program(var: &str, default: &str) -> OsString {
    std::env::var_os(var).unwrap_or_else(|| default.into())
}

fn check_size(size: Option<(usize, usize)>) -> Result<()> {
    match size {
        Some((w, h)) if w == 0 || h == 0 => Err(DataError::config(
            "video.size",
            format!("frames cannot be {w}x{h}"),
        )),
        _ => Ok(()),
    }
}

/// Runs `cmd`, returning its standard output, or a one-line error naming `path`: a
/// missing program, or the last line ffmpeg printed on failure.
fn run(mut cmd: Command, tool: &str, path: &Path) -> Result<Vec<u8>> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => DataError::config(
                tool,
                format!(
                    "{} not found (set SELFSUP_{} or PATH): install ffmpeg (e.g. `apt-get install ffmpeg`), or give a folder of extracted frames",
                    cmd.get_program().to_string_lossy(),
                    tool.to_uppercase()
                ),
            ),
            _ => DataError::io(path, e),
        })?;
    let mut out = Vec::new();
    let mut err = Vec::new();
    let read = child
        .stdout
        .take()
        .map_or(Ok(0), |mut s| s.read_to_end(&mut out));
    let read_err = child
        .stderr
        .take()
        .map_or(Ok(0), |mut s| s.read_to_end(&mut err));
    let status = child.wait().map_err(|e| DataError::io(path, e))?;
    read.and(read_err).map_err(|e| DataError::io(path, e))?;
    if !status.success() {
        let text = String::from_utf8_lossy(&err);
        let last = text
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(DataError::format(
            path,
            format!("{tool} cannot read it ({status}): {}", last.trim()),
        ));
    }
    Ok(out)
}

/// The first video stream's `(width, height)`, from `ffprobe`.
fn probe_size(ffprobe: &OsStr, path: &Path) -> Result<(usize, usize)> {
    let mut cmd = Command::new(ffprobe);
    cmd.args(["-v", "error", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=width,height", "-of", "csv=p=0"])
        .arg(path);
    let out = run(cmd, "ffprobe", path)?;
    let text = String::from_utf8_lossy(&out);
    let mut dims = text.trim().split(',').map(|d| d.trim().parse::<usize>());
    match (dims.next(), dims.next()) {
        (Some(Ok(w)), Some(Ok(h))) if w > 0 && h > 0 => Ok((w, h)),
        _ => Err(DataError::format(
            path,
            "video has no frames (no video stream)",
        )),
    }
}

/// Decodes a video file with the `ffmpeg` command line (or `$SELFSUP_FFMPEG`), scaled to
/// `size = (width, height)` by ffmpeg, or at its own size for `None`.
///
/// # Errors
/// One-line [`DataError`]s for a missing file, a missing ffmpeg, a file ffmpeg cannot
/// read, and a video without frames.
pub fn decode_video(path: &Path, size: Option<(usize, usize)>) -> Result<Video> {
    decode_video_with(
        &program("SELFSUP_FFMPEG", "ffmpeg"),
        &program("SELFSUP_FFPROBE", "ffprobe"),
        path,
        size,
    )
}

/// [`decode_video`] with the ffmpeg and ffprobe programs given.
///
/// # Errors
/// As [`decode_video`].
pub fn decode_video_with(
    ffmpeg: &OsStr,
    ffprobe: &OsStr,
    path: &Path,
    size: Option<(usize, usize)>,
) -> Result<Video> {
    check_size(size)?;
    if !path.is_file() {
        return Err(DataError::format(path, "no such video file"));
    }
    let (width, height) = match size {
        Some(s) => s,
        None => probe_size(ffprobe, path)?,
    };
    let mut cmd = Command::new(ffmpeg);
    cmd.args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-map", "0:v:0", "-vf"])
        .arg(format!("scale={width}:{height}"))
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"]);
    let hwc = run(cmd, "ffmpeg", path)?;
    let frame_len = 3 * width * height;
    if hwc.is_empty() {
        return Err(DataError::format(path, "video has no frames"));
    }
    if hwc.len() % frame_len != 0 {
        return Err(DataError::format(
            path,
            format!(
                "ffmpeg returned {} bytes, not a whole number of {width}x{height} rgb24 frames",
                hwc.len()
            ),
        ));
    }
    Ok(Video {
        name: path.display().to_string(),
        channels: 3,
        height,
        width,
        frames: hwc.chunks_exact(frame_len).flat_map(planar).collect(),
    })
}

/// Interleaved `RGBRGB…` pixels to planes `RR…GG…BB…`.
fn planar(hwc: &[u8]) -> Vec<u8> {
    (0..3)
        .flat_map(|c| hwc.iter().skip(c).step_by(3).copied())
        .collect()
}

/// The frame files directly in `dir`, sorted by name.
fn frame_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && has_extension(p, &FRAME_EXTENSIONS))
        .collect();
    files.sort();
    Ok(files)
}

/// A folder of extracted frames (png or jpg, in file-name order, UCF101 style), as RGB,
/// resized to `size = (width, height)` if given.
///
/// # Errors
/// If the folder has no frames, a frame cannot be decoded, or frames differ in size.
pub fn read_frame_folder(dir: &Path, size: Option<(usize, usize)>) -> Result<Video> {
    check_size(size)?;
    let files = frame_files(dir)?;
    if files.is_empty() {
        return Err(DataError::format(
            dir,
            "video has no frames (no png or jpg files)",
        ));
    }
    let mut frames = Vec::new();
    let mut shape = None;
    for file in &files {
        let img = image::open(file)
            .map_err(|e| DataError::format(file, format!("cannot decode frame: {e}")))?
            .to_rgb8();
        let img = match size {
            Some((w, h)) if (img.width() as usize, img.height() as usize) != (w, h) => {
                image::imageops::resize(
                    &img,
                    w as u32,
                    h as u32,
                    image::imageops::FilterType::Triangle,
                )
            }
            _ => img,
        };
        let dims = (img.width() as usize, img.height() as usize);
        match shape {
            None => shape = Some(dims),
            Some(first) if first != dims => {
                return Err(DataError::format(
                    file,
                    format!(
                        "frame is {}x{} but the first frame is {}x{}",
                        dims.0, dims.1, first.0, first.1
                    ),
                ))
            }
            Some(_) => {}
        }
        frames.extend(planar(img.as_raw()));
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
                "holds no video ({}) and no folder of frames ({})",
                VIDEO_EXTENSIONS.join(", "),
                FRAME_EXTENSIONS.join(", ")
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
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
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

/// Writes every frame of `video` into `dir` (created) as `frame_000001.png`, … , each
/// through a temporary file and a rename; returns the frame count.
///
/// # Errors
/// If `dir` already holds frames (nothing is overwritten), or on I/O errors.
pub fn write_frame_folder(video: &Video, dir: &Path) -> Result<usize> {
    std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    if !frame_files(dir)?.is_empty() {
        return Err(DataError::format(
            dir,
            "already holds frames; choose an empty folder",
        ));
    }
    let plane = video.height * video.width;
    for t in 0..video.len() {
        let chw = video.frame(t);
        let hwc: Vec<u8> = (0..plane)
            .flat_map(|p| (0..video.channels).map(move |c| chw[c * plane + p]))
            .collect();
        let path = dir.join(format!("frame_{:06}.png", t + 1));
        let tmp = dir.join(format!(".frame_{:06}.png.tmp", t + 1));
        let color = if video.channels == 1 {
            image::ExtendedColorType::L8
        } else {
            image::ExtendedColorType::Rgb8
        };
        image::save_buffer_with_format(
            &tmp,
            &hwc,
            video.width as u32,
            video.height as u32,
            color,
            image::ImageFormat::Png,
        )
        .map_err(|e| DataError::format(&tmp, e.to_string()))?;
        std::fs::rename(&tmp, &path).map_err(|e| DataError::io(&path, e))?;
    }
    Ok(video.len())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const VTEST: &str = "/usr/share/doc/opencv-doc/examples/data/vtest.avi";

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("selfsup-video-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn ffmpeg(args: &[&str]) {
        let ok = Command::new("ffmpeg")
            .args(["-v", "error", "-y"])
            .args(args)
            .status()
            .unwrap()
            .success();
        assert!(ok, "ffmpeg {args:?}");
    }

    #[test]
    fn vtest_decodes_to_its_exact_frame_count_and_size() {
        let v = decode_video(Path::new(VTEST), None).unwrap();
        assert_eq!((v.len(), v.channels, v.height, v.width), (795, 3, 576, 768));
        assert_eq!(v.frames.len(), 795 * 3 * 576 * 768);
        let small = decode_video(Path::new(VTEST), Some((64, 48))).unwrap();
        assert_eq!((small.len(), small.height, small.width), (795, 48, 64));
    }

    #[test]
    fn frames_are_planar_rgb_and_survive_a_png_folder_round_trip() {
        let dir = scratch("red");
        let file = dir.join("red.mkv");
        let file_s = file.to_str().unwrap();
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "color=c=red:s=16x8:d=0.5:r=10",
            "-c:v",
            "ffv1",
            file_s,
        ]);
        let v = decode_video(&file, None).unwrap();
        assert_eq!((v.len(), v.height, v.width), (5, 8, 16));
        let f = v.frame(4);
        assert!(f[..128].iter().all(|&p| p > 240), "R plane");
        assert!(f[128..].iter().all(|&p| p < 15), "G and B planes");

        let frames = dir.join("frames");
        assert_eq!(write_frame_folder(&v, &frames).unwrap(), 5);
        assert_eq!(read_frame_folder(&frames, None).unwrap().frames, v.frames);
        let e = write_frame_folder(&v, &frames).unwrap_err().to_string();
        assert!(e.contains("already holds frames"), "{e}");
        let half = read_frame_folder(&frames, Some((8, 4))).unwrap();
        assert_eq!((half.len(), half.height, half.width), (5, 4, 8));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_input_gives_one_line_errors_naming_the_problem() {
        let dir = scratch("bad");
        let one_line = |e: DataError| {
            let s = e.to_string();
            assert!(!s.contains('\n'), "{s}");
            s
        };
        let e = one_line(
            decode_video_with(
                OsStr::new("/nonexistent/ffmpeg"),
                OsStr::new("/nonexistent/ffprobe"),
                Path::new(VTEST),
                Some((8, 8)),
            )
            .unwrap_err(),
        );
        assert!(
            e.contains("/nonexistent/ffmpeg not found") && e.contains("apt-get install ffmpeg"),
            "{e}"
        );

        let garbage = dir.join("garbage.avi");
        std::fs::write(&garbage, b"not a video at all, just bytes").unwrap();
        let e = one_line(decode_video(&garbage, Some((8, 8))).unwrap_err());
        assert!(
            e.contains("garbage.avi") && e.contains("ffmpeg cannot read it"),
            "{e}"
        );

        let silent = dir.join("silent.mkv");
        ffmpeg(&[
            "-f",
            "lavfi",
            "-i",
            "anullsrc",
            "-t",
            "0.5",
            silent.to_str().unwrap(),
        ]);
        for size in [None, Some((8, 8))] {
            let e = one_line(decode_video(&silent, size).unwrap_err());
            assert!(e.contains("silent.mkv"), "{e}");
        }
        let e = one_line(decode_video(&dir.join("missing.avi"), None).unwrap_err());
        assert!(e.contains("missing.avi: no such video file"), "{e}");
        let e = one_line(decode_video(Path::new(VTEST), Some((0, 8))).unwrap_err());
        assert!(e.contains("video.size"), "{e}");

        let empty = dir.join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        let e = one_line(find_videos(&empty).unwrap_err());
        assert!(e.contains("holds no video"), "{e}");
        let e = one_line(read_frame_folder(&empty, None).unwrap_err());
        assert!(e.contains("no frames"), "{e}");

        let mixed = dir.join("mixed");
        std::fs::create_dir_all(&mixed).unwrap();
        image::RgbImage::new(4, 4)
            .save(mixed.join("a.png"))
            .unwrap();
        image::RgbImage::new(4, 5)
            .save(mixed.join("b.png"))
            .unwrap();
        let e = one_line(read_frame_folder(&mixed, None).unwrap_err());
        assert!(e.contains("b.png") && e.contains("4x5"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn find_videos_takes_files_frame_folders_and_folders_of_either() {
        let dir = scratch("find");
        for sub in ["a", "b"] {
            std::fs::create_dir_all(dir.join("frames").join(sub)).unwrap();
            image::RgbImage::new(2, 2)
                .save(dir.join("frames").join(sub).join("0001.jpg"))
                .unwrap();
        }
        std::fs::write(dir.join("frames").join("c.AVI"), b"x").unwrap();
        std::fs::write(dir.join("frames").join("notes.txt"), b"x").unwrap();
        let found = find_videos(&dir.join("frames")).unwrap();
        let names: Vec<String> = found
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["a", "b", "c.AVI"]);
        assert_eq!(
            find_videos(&dir.join("frames/a")).unwrap(),
            vec![dir.join("frames/a")]
        );
        assert_eq!(
            find_videos(Path::new(VTEST)).unwrap(),
            vec![PathBuf::from(VTEST)]
        );
        assert!(find_videos(&dir.join("nothing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
