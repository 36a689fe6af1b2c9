//! End-to-end tests of video input through the `xtask` binary, on the real test videos
//! of Debian's `opencv-doc` (decoded by the `ffmpeg` command line; CI installs both).
#![allow(clippy::unwrap_used, clippy::expect_used)]
mod common;
use common::{assert_clean_error, xtask};
use std::path::Path;

const VTEST: &str = "/usr/share/doc/opencv-doc/examples/data/vtest.avi";

fn pngs(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "png"))
        .collect();
    files.sort();
    files
}

#[test]
fn prepare_video_extracts_every_frame_and_shuffle_learn_trains_on_the_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let frames = tmp.path().join("vtest");
    let out = xtask(&[
        "prepare-video",
        VTEST,
        "--out",
        frames.to_str().unwrap(),
        "--size",
        "32x24",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let files = pngs(&frames);
    assert_eq!(files.len(), 795);
    assert!(files[0].ends_with("frame_000001.png") && files[794].ends_with("frame_000795.png"));
    let first = image::open(&files[0]).unwrap();
    assert_eq!((first.width(), first.height()), (32, 24));
    // A second extraction into the same folder is refused and changes nothing.
    let again = xtask(&["prepare-video", VTEST, "--out", frames.to_str().unwrap()]);
    assert_clean_error(&again, &["already holds frames"]);
    assert_eq!(pngs(&frames).len(), 795);

    let run = tmp.path().join("run");
    let dataset = format!("video:{}", frames.display());
    let out = xtask(&[
        "pretrain",
        "--method",
        "shuffle-learn",
        "--dataset",
        &dataset,
        "--frame-size",
        "16",
        "--clip-len",
        "8",
        "--width",
        "4",
        "--batch-size",
        "8",
        "--max-steps",
        "3",
        "--out",
        run.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("eval.json")).unwrap()).unwrap();
    let top1 = eval["pretext_top1"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&top1), "{eval}");
    // Unlabelled video has no probes to report.
    assert!(eval.get("linear_probe_top1").is_none(), "{eval}");
}

#[test]
fn bad_video_input_gives_one_clean_line() {
    assert_clean_error(
        &xtask(&[
            "prepare-video",
            "/nonexistent/clip.avi",
            "--out",
            "/tmp/never",
        ]),
        &["/nonexistent/clip.avi", "no such video file"],
    );
    assert_clean_error(
        &xtask(&[
            "prepare-video",
            VTEST,
            "--out",
            "/tmp/never",
            "--size",
            "64",
        ]),
        &["size", "WIDTHxHEIGHT"],
    );
    let tmp = tempfile::tempdir().unwrap();
    let garbage = tmp.path().join("garbage.avi");
    std::fs::write(&garbage, b"not a video").unwrap();
    assert_clean_error(
        &xtask(&[
            "pretrain",
            "--method",
            "shuffle-learn",
            "--dataset",
            &format!("video:{}", garbage.display()),
        ]),
        &["garbage.avi", "ffmpeg"],
    );
    assert_clean_error(
        &xtask(&[
            "pretrain",
            "--method",
            "odd-one-out",
            "--dataset",
            "video:/nonexistent/videos",
        ]),
        &["/nonexistent/videos", "no such video"],
    );
    assert_clean_error(
        &xtask(&[
            "pretrain",
            "--method",
            "shuffle-learn",
            "--dataset",
            &format!("video:{VTEST}"),
            "--clip-len",
            "2",
        ]),
        &["video.clip_len", "at least 3"],
    );
    // Still images are not video.
    let images = tmp.path().join("images");
    std::fs::create_dir_all(&images).unwrap();
    for i in 0..4 {
        image::RgbImage::new(8, 8)
            .save(images.join(format!("{i}.png")))
            .unwrap();
    }
    assert_clean_error(
        &xtask(&[
            "pretrain",
            "--method",
            "shuffle-learn",
            "--dataset",
            &format!("folder:{}", images.display()),
            "--batch-size",
            "2",
        ]),
        &["shuffle-learn learns from video", "moving-fmnist"],
    );
}
