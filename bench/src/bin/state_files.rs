//! The small state files of a checkpoint: what making them durable costs.
//!
//! An incremental checkpoint writes a base file per slice of every keyed state
//! of a subtask at its first checkpoint (and after a rescaled restore): for a
//! job of small state, many files of a few KiB. Writes `--files` files of
//! `--entries` (u64, u64) entries each in a fresh directory, median of `--runs`
//! rounds, the two ways alternating within each round:
//!
//! - one at a time: `write_atomically` per file (fsync, rename, directory
//!   fsync each), as the checkpoint writer did;
//! - staged: `stage` each file, then one `commit` (their fsyncs at once
//!   through an io_uring, one directory fsync), as it does now.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use rheon_bench::median_duration;
use rheon_state::snapshot::{commit, stage, write_atomically, SnapshotMeta};
use rheon_state::KeyGroupRange;

#[derive(Parser, Debug)]
#[command(about = "Durable writes of a checkpoint's small state files")]
struct Args {
    /// Files per round (a first checkpoint of 8 states of a subtask: 64).
    #[arg(long, default_value_t = 64)]
    files: usize,
    /// Entries per file, spread over 8 key groups.
    #[arg(long, default_value_t = 240)]
    entries: u64,
    /// Rounds; medians are printed.
    #[arg(long, default_value_t = 9)]
    runs: usize,
    /// Directory for the files (removed at the end).
    #[arg(long, default_value = "/tmp/rheon-state-files-bench")]
    dir: PathBuf,
}

const KEY_GROUPS: u32 = 8;

fn meta() -> SnapshotMeta {
    SnapshotMeta::new(
        "bench",
        "u64->u64",
        128,
        KeyGroupRange::new(0, KEY_GROUPS - 1),
    )
}

/// The entries of key group `group`: a file's share.
fn group_entries(entries: u64, group: u32) -> Vec<(u64, u64)> {
    (0..entries)
        .filter(|k| k % KEY_GROUPS as u64 == group as u64)
        .map(|k| (k, k * 7))
        .collect()
}

fn one_at_a_time(dir: &Path, args: &Args, groups: &[Vec<(u64, u64)>]) -> anyhow::Result<Duration> {
    let started = Instant::now();
    for file in 0..args.files {
        write_atomically::<u64, u64, _>(&dir.join(format!("one-{file}.snap")), meta(), |mut w| {
            for (group, entries) in (0..).zip(groups) {
                w.write_key_group(group, entries.iter().map(|(k, v)| (k, v)))?;
            }
            w.finish()
        })?;
    }
    Ok(started.elapsed())
}

fn staged(dir: &Path, args: &Args, groups: &[Vec<(u64, u64)>]) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut files = Vec::with_capacity(args.files);
    for file in 0..args.files {
        let path = dir.join(format!("staged-{file}.snap"));
        let (staged, _) = stage::<u64, u64, _>(&path, meta(), |mut w| {
            for (group, entries) in (0..).zip(groups) {
                w.write_key_group(group, entries.iter().map(|(k, v)| (k, v)))?;
            }
            w.finish()
        })?;
        files.push(staged);
    }
    commit(files)?;
    Ok(started.elapsed())
}

/// `min .. max` of `values`, in ms.
fn spread(values: &[Duration]) -> String {
    let ms = |d: Option<&Duration>| d.map_or(0.0, |d| d.as_secs_f64() * 1e3);
    let (min, max) = (values.iter().min(), values.iter().max());
    format!("{:.2} .. {:.2} ms", ms(min), ms(max))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let groups: Vec<Vec<(u64, u64)>> = (0..KEY_GROUPS)
        .map(|g| group_entries(args.entries, g))
        .collect();
    let (mut ones, mut stageds) = (Vec::new(), Vec::new());
    let mut bytes = 0;
    for round in 0..args.runs {
        let _ = std::fs::remove_dir_all(&args.dir);
        std::fs::create_dir_all(&args.dir)
            .with_context(|| format!("cannot create {}", args.dir.display()))?;
        // Alternate which goes first: the host's noise falls on both.
        if round % 2 == 0 {
            ones.push(one_at_a_time(&args.dir, &args, &groups)?);
            stageds.push(staged(&args.dir, &args, &groups)?);
        } else {
            stageds.push(staged(&args.dir, &args, &groups)?);
            ones.push(one_at_a_time(&args.dir, &args, &groups)?);
        }
        bytes = std::fs::metadata(args.dir.join("one-0.snap"))?.len();
    }
    let _ = std::fs::remove_dir_all(&args.dir);
    let (one, staged) = (median_duration(&ones), median_duration(&stageds));
    println!(
        "{} files of {} entries ({bytes} bytes each), median of {} rounds:",
        args.files, args.entries, args.runs
    );
    println!(
        "  one at a time (fsync, rename, directory fsync each): {:>8.2} ms  ({:.0} us a file; {})",
        one.as_secs_f64() * 1e3,
        one.as_secs_f64() * 1e6 / args.files as f64,
        spread(&ones)
    );
    println!(
        "  staged, one commit (parallel fsyncs, a directory fsync): {:>8.2} ms  ({:.0} us a file; {})",
        staged.as_secs_f64() * 1e3,
        staged.as_secs_f64() * 1e6 / args.files as f64,
        spread(&stageds)
    );
    println!(
        "  staged / one at a time: {:.2}",
        staged.as_secs_f64() / one.as_secs_f64()
    );
    Ok(())
}
