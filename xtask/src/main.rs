//! `cargo xtask`: the selfsup command line.
//!
//! - `pretrain`: pretrain an encoder with a self-supervised method, evaluate and export it.
//! - `eval`: kNN and linear-probe evaluation of a run, or of a random-init baseline.
//! - `download`: fetch a dataset from its official source, verifying SHA-256.
//! - `bench`: training and augmentation throughput, side by side with PyTorch (`--epoch`:
//!   a whole training epoch, data pipeline included).
//! - `prepare-video`: extract a video's frames into a folder (UCF101 style).
mod bench;
mod bench_bank;
mod bench_dist;
mod bench_epoch;
mod bench_profile;
mod cli;
mod eval_cmd;
mod malloc;
mod prepare_video;
mod pretrain;
mod report;

use clap::Parser;

fn main() {
    malloc::tune();
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Pretrain(args) => pretrain::run(*args),
        cli::Command::Eval(args) => eval_cmd::run(args),
        cli::Command::Download(args) => download(args),
        cli::Command::Bench(args) => bench::run(args),
        cli::Command::PrepareVideo(args) => prepare_video::run(args),
    };
    if let Err(e) = result {
        eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
        std::process::exit(1);
    }
}

fn download(args: cli::DownloadArgs) -> anyhow::Result<()> {
    let root = args
        .data_dir
        .unwrap_or_else(|| std::path::PathBuf::from("data"));
    let dir = selfsup::data::download_dataset(&args.dataset, &root)?;
    println!("{} is in {}", args.dataset, dir.display());
    Ok(())
}
