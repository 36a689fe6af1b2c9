//! Progress bars (indicatif). They draw on a terminal and stay silent otherwise.
use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `len` steps labelled `label`, with rate and ETA.
pub fn progress_bar(len: u64, label: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ETA {eta}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(label.to_string());
    bar
}
