//! Tests of video decoding, frame folders and `find_videos`, on the opencv-doc videos.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use super::*;

const VTEST: &str = "/usr/share/doc/opencv-doc/examples/data/vtest.avi";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("selfsup-video-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs the ffmpeg CLI to make a test file.
fn ffmpeg(args: &[&str]) {
    let ok = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y"])
        .args(args)
        .status()
        .unwrap()
        .success();
    assert!(ok, "ffmpeg {args:?}");
}

fn one_line(e: DataError) -> String {
    let s = e.to_string();
    assert!(!s.contains('\n'), "{s}");
    s
}

#[test]
fn vtest_decodes_to_its_exact_frame_count_and_size() {
    let v = decode_video(Path::new(VTEST), None).unwrap();
    assert_eq!((v.len(), v.channels, v.height, v.width), (795, 3, 576, 768));
    assert_eq!(v.frames.len(), 795 * 3 * 576 * 768);
    assert!(v.name.ends_with("vtest.avi"));
    let small = decode_video(Path::new(VTEST), Some((64, 48))).unwrap();
    assert_eq!(
        (small.len(), small.channels, small.height, small.width),
        (795, 3, 48, 64)
    );
    assert_eq!(small.frames.len(), 795 * 3 * 48 * 64);
}

/// Every decoded frame once: `ffprobe -count_frames` gives the same `nb_read_frames`.
/// ffmpeg's default for raw output would give 271 for Megamind (a repeated last
/// frame) and 449 for tree, whose 444 packets are mostly empty "repeat" packets.
#[test]
fn opencv_videos_decode_to_exactly_the_decoded_frame_counts() {
    let dir = Path::new(VTEST).with_file_name("");
    for (name, frames) in [("Megamind.avi", 270), ("tree.avi", 68)] {
        let v = decode_video(&dir.join(name), Some((32, 24))).unwrap();
        assert_eq!((v.len(), v.height, v.width), (frames, 24, 32), "{name}");
        assert_eq!(v.frames.len(), frames * 3 * 24 * 32, "{name}");
    }
}

#[test]
fn frames_are_planar_rgb_and_survive_a_png_folder_round_trip() {
    let dir = scratch("red");
    let file = dir.join("red.mkv");
    let src = "color=c=red:s=16x8:d=0.5:r=10";
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        src,
        "-c:v",
        "ffv1",
        file.to_str().unwrap(),
    ]);
    let v = decode_video(&file, None).unwrap();
    assert_eq!((v.len(), v.channels, v.height, v.width), (5, 3, 8, 16));
    for t in 0..5 {
        let f = v.frame(t);
        assert!(f[..128].iter().all(|&p| p > 240), "R plane of frame {t}");
        assert!(
            f[128..].iter().all(|&p| p < 15),
            "G and B planes of frame {t}"
        );
    }

    let frames = dir.join("frames");
    assert_eq!(write_frame_folder(&v, &frames).unwrap(), 5);
    assert!(frames.join("frame_000001.png").is_file() && frames.join("frame_000005.png").is_file());
    let back = read_frame_folder(&frames, None).unwrap();
    assert_eq!((back.len(), back.height, back.width), (5, 8, 16));
    assert_eq!(back.frames, v.frames);
    let e = one_line(write_frame_folder(&v, &frames).unwrap_err());
    assert!(e.contains("frames: already holds frames"), "{e}");
    let half = read_frame_folder(&frames, Some((8, 4))).unwrap();
    assert_eq!((half.len(), half.height, half.width), (5, 4, 8));
    assert_eq!(read_video(&frames, None).unwrap(), back);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn variable_frame_rate_keeps_every_decoded_frame_once() {
    let dir = scratch("vfr");
    let file = dir.join("vfr.mkv");
    // 10 frames with a 1 s gap after the third: ffmpeg's default would pad it.
    let src = "testsrc=s=32x16:r=10:d=1";
    let pts = "setpts=(N*0.1+gte(N\\,3)*1.0)/TB";
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        src,
        "-vf",
        pts,
        "-c:v",
        "ffv1",
        file.to_str().unwrap(),
    ]);
    assert_eq!(decode_video(&file, Some((8, 4))).unwrap().len(), 10);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_quarter_turn_swaps_the_probed_size() {
    assert_eq!(parse_probe("width=32\nheight=16\n"), Some((32, 16)));
    assert_eq!(
        parse_probe("width=32\nheight=16\nrotation=-90\n"),
        Some((16, 32))
    );
    assert_eq!(
        parse_probe("width=32\nheight=16\nrotation=180\n"),
        Some((32, 16))
    );
    assert_eq!(parse_probe(""), None);
    assert_eq!(parse_probe("width=N/A\nheight=N/A\n"), None);
    if std::env::var_os("SELFSUP_FFPROBE").is_none() {
        let probe = |p: &str| ffprobe_for(OsStr::new(p)).into_string().unwrap();
        assert_eq!(probe("ffmpeg"), "ffprobe");
        assert_eq!(probe("/opt/ff/bin/ffmpeg"), "/opt/ff/bin/ffprobe");
        assert_eq!(probe("/opt/ff/ffmpeg.exe"), "/opt/ff/ffprobe.exe");
        assert_eq!(probe("/opt/ff/my-decoder"), "ffprobe");
    }

    // A real file with a display rotation comes out upright (16 wide, 32 high).
    let dir = scratch("rotate");
    let (plain, turned) = (dir.join("plain.mp4"), dir.join("turned.mp4"));
    let src = "testsrc=s=32x16:r=10:d=0.3";
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        src,
        "-c:v",
        "mpeg4",
        plain.to_str().unwrap(),
    ]);
    let (plain_s, turned_s) = (plain.to_str().unwrap(), turned.to_str().unwrap());
    ffmpeg(&[
        "-i",
        plain_s,
        "-c",
        "copy",
        "-metadata:s:v:0",
        "rotate=90",
        turned_s,
    ]);
    let v = decode_video(&turned, None).unwrap();
    assert_eq!(v.len(), 3);
    // Older and newer ffmpeg differ in whether `-metadata rotate` sets a rotation.
    let probed = probe_size(&ffprobe_for(OsStr::new("ffmpeg")), &turned).unwrap();
    if probed == Some((16, 32)) {
        assert_eq!((v.width, v.height), (16, 32));
    } else {
        eprintln!("this ffmpeg does not rotate by metadata; checked the parser only");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_input_gives_one_line_errors_naming_the_problem() {
    let dir = scratch("bad");
    for size in [None, Some((8, 8))] {
        let missing = OsStr::new("/nonexistent/ffmpeg");
        let e = one_line(decode_video_with(missing, Path::new(VTEST), size).unwrap_err());
        assert!(
            e.contains("not found") && e.contains("apt-get install ffmpeg"),
            "{e}"
        );
        assert!(e.contains("/nonexistent/ff"), "{e}");
    }

    let garbage = dir.join("garbage.avi");
    std::fs::write(&garbage, b"not a video at all, just bytes").unwrap();
    for size in [None, Some((8, 8))] {
        let e = one_line(decode_video(&garbage, size).unwrap_err());
        assert!(e.starts_with(garbage.to_str().unwrap()), "{e}");
        assert!(e.contains("cannot read it: Invalid data"), "{e}");
    }

    // Audio only: ffprobe finds no video stream, ffmpeg maps none.
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
    // A video stream without frames: ffmpeg exits with an error, not with no output.
    let empty = dir.join("empty.avi");
    let src = "color=c=red:s=16x8:r=10:d=1";
    ffmpeg(&[
        "-f",
        "lavfi",
        "-i",
        src,
        "-vf",
        "trim=end_frame=0",
        "-c:v",
        "ffv1",
        empty.to_str().unwrap(),
    ]);
    for file in [&silent, &empty] {
        for size in [None, Some((8, 8))] {
            let e = one_line(decode_video(file, size).unwrap_err());
            let name = file.to_str().unwrap();
            assert!(
                e.starts_with(&format!("{name}: video has no frames")),
                "{e}"
            );
        }
    }

    let e = one_line(decode_video(&dir.join("missing.avi"), None).unwrap_err());
    assert!(e.contains("missing.avi: no such video file"), "{e}");
    let e = one_line(decode_video(&dir, None).unwrap_err());
    assert!(e.contains("is a folder"), "{e}");
    for size in [(0, 8), (8, 0), (8, 100_000)] {
        let e = one_line(decode_video(Path::new(VTEST), Some(size)).unwrap_err());
        assert!(e.contains("video.size"), "{e}");
    }

    let no_frames = dir.join("no-frames");
    std::fs::create_dir_all(&no_frames).unwrap();
    let e = one_line(read_frame_folder(&no_frames, None).unwrap_err());
    assert!(e.contains("no-frames: video has no frames"), "{e}");

    let mixed = dir.join("mixed");
    std::fs::create_dir_all(&mixed).unwrap();
    image::RgbImage::new(4, 4)
        .save(mixed.join("a.png"))
        .unwrap();
    image::RgbImage::new(4, 5)
        .save(mixed.join("b.png"))
        .unwrap();
    let e = one_line(read_frame_folder(&mixed, None).unwrap_err());
    assert!(
        e.contains("b.png: frame is 4x5") && e.contains("a.png is 4x4"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn find_videos_takes_files_frame_folders_and_folders_of_either() {
    let dir = scratch("find");
    let root = dir.join("videos");
    for sub in ["a", "b"] {
        std::fs::create_dir_all(root.join(sub)).unwrap();
        image::RgbImage::new(2, 2)
            .save(root.join(sub).join("0001.jpg"))
            .unwrap();
    }
    std::fs::write(root.join("c.AVI"), b"x").unwrap();
    std::fs::write(root.join("notes.txt"), b"x").unwrap();
    std::fs::create_dir_all(root.join(".hidden")).unwrap();
    std::fs::write(root.join(".hidden").join("d.avi"), b"x").unwrap();
    let names: Vec<String> = find_videos(&root)
        .unwrap()
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["a", "b", "c.AVI"]);
    assert_eq!(find_videos(&root.join("a")).unwrap(), vec![root.join("a")]);
    assert_eq!(
        find_videos(Path::new(VTEST)).unwrap(),
        vec![PathBuf::from(VTEST)]
    );

    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = one_line(find_videos(&empty).unwrap_err());
    assert!(e.contains("empty: holds no video"), "{e}");
    let e = one_line(find_videos(&dir.join("nothing")).unwrap_err());
    assert!(e.contains("nothing: no such video file or folder"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
