//! Keyed-state snapshot files: write and restore throughput.
//!
//! Builds `--state-bytes` of keyed state (u64 key -> [u8; 100] value, 108 payload bytes
//! per entry) over `--max-parallelism` key groups, split between 2 subtasks as the
//! engine splits them, each in a `KeyGroupedMap`. Then, median of `--runs`:
//!
//! - write: the two snapshot files from the maps (grouped form), one writer thread per
//!   subtask and single-threaded; to the page cache, and durable (`write_atomically`:
//!   `O_DIRECT`, fsync, rename, directory fsync); and the flat form (counting sort, then write);
//! - restore at parallelism 2 (same), 3 and 1 (rescaled), one thread per new subtask and
//!   single-threaded: zero-copy (open + mmap + checksum + rkyv validation, summing the
//!   keys so every entry is touched) and full deserialization into a `KeyGroupedMap`;
//! - cold: the same restores at parallelism 1 after dropping the files from the page
//!   cache with `posix_fadvise(DONTNEED)`.
//!
//! GB/s are of file bytes (10^9 B/s).

use std::fs::File;
use std::io::BufWriter;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use rheon_bench::{gb_per_s, median_duration, verdict};
use rheon_state::key_group::{assign_to_key_group, operator_index_for_key_group};
use rheon_state::snapshot::{
    partition_by_key_group, plan_restore, restore_into_map, write_atomically, SnapshotFile,
    SnapshotMeta, SnapshotWriter,
};
use rheon_state::{KeyGroupRange, KeyGroupedMap};
use rustc_hash::FxHashMap;

const VALUE_BYTES: usize = 100;
type Value = [u8; VALUE_BYTES];
const ENTRY_PAYLOAD_BYTES: u64 = 8 + VALUE_BYTES as u64;
const OLD_PARALLELISM: u32 = 2;
const RESTORE_TARGET: Duration = Duration::from_secs(1);

#[derive(Parser, Debug)]
#[command(about = "Snapshot file write and restore throughput")]
struct Args {
    /// Keyed state to build, in bytes of key + value payload (suffixes K, M, G: powers of
    /// 1024).
    #[arg(long, default_value = "1G", value_parser = parse_size)]
    state_bytes: u64,
    /// Runs per figure; the median is printed.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Number of key groups.
    #[arg(long, default_value_t = 128)]
    max_parallelism: u32,
    /// Directory for the snapshot files (removed at the end).
    #[arg(long, default_value = "/tmp/rheon-snapshot-bench")]
    dir: PathBuf,
}

fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, shift) = match text.chars().last() {
        Some('K' | 'k') => (&text[..text.len() - 1], 10),
        Some('M' | 'm') => (&text[..text.len() - 1], 20),
        Some('G' | 'g') => (&text[..text.len() - 1], 30),
        _ => (text, 0),
    };
    let value: u64 = digits
        .parse()
        .map_err(|e| format!("{text:?} is not a size like 1G, 512M or 1000000: {e}"))?;
    value
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} overflows u64"))
}

fn value_of(key: u64) -> Value {
    let mut value = [0u8; VALUE_BYTES];
    for (i, chunk) in value.chunks_mut(8).enumerate() {
        let word = key
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(i as u32 * 7);
        chunk.copy_from_slice(&word.to_le_bytes()[..chunk.len()]);
    }
    value
}

fn meta(max_parallelism: u32, range: KeyGroupRange) -> SnapshotMeta {
    SnapshotMeta::new("bench", "u64:[u8;100]/v1", max_parallelism, range)
}

fn path_of(dir: &Path, subtask: u32) -> PathBuf {
    dir.join(format!("bench-{subtask}.snap"))
}

/// Writes subtask `i`'s map to the page cache (no fsync); returns the file's bytes.
fn write_cached(path: &Path, map: &KeyGroupedMap<u64, Value>) -> anyhow::Result<u64> {
    let file = File::create(path).with_context(|| format!("create {}", path.display()))?;
    let writer = SnapshotWriter::<_, u64, Value>::new(
        BufWriter::with_capacity(1 << 16, file),
        meta(map.max_parallelism(), map.key_group_range()),
        path,
    )?;
    Ok(writer.write_map(map)?.1.size_bytes)
}

fn write_durable(path: &Path, map: &KeyGroupedMap<u64, Value>) -> anyhow::Result<u64> {
    let m = meta(map.max_parallelism(), map.key_group_range());
    Ok(write_atomically(path, m, |w| w.write_map(map))?.size_bytes)
}

/// Runs `f(i)` for every subtask on its own thread; returns the wall time and the results.
fn on_threads<T: Send>(
    n: u32,
    f: impl Fn(u32) -> anyhow::Result<T> + Sync,
) -> anyhow::Result<(Duration, Vec<T>)> {
    let start = Instant::now();
    let results = std::thread::scope(|scope| {
        let f = &f;
        let handles: Vec<_> = (0..n).map(|i| scope.spawn(move || f(i))).collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("bench thread panicked"))
            .collect::<anyhow::Result<Vec<T>>>()
    })?;
    Ok((start.elapsed(), results))
}

/// Runs `f(i)` for every subtask in turn on this thread.
fn sequential<T>(
    n: u32,
    f: impl Fn(u32) -> anyhow::Result<T>,
) -> anyhow::Result<(Duration, Vec<T>)> {
    let start = Instant::now();
    let results = (0..n).map(f).collect::<anyhow::Result<Vec<T>>>()?;
    Ok((start.elapsed(), results))
}

/// Zero-copy restore of new subtask `i` of `p`: opens the old files, then checks and
/// validates every owned key group, summing keys and a value byte so every entry is read.
/// Returns (entries, checksum of the data).
fn restore_zero_copy(dir: &Path, max_p: u32, p: u32, i: u32) -> anyhow::Result<(u64, u64)> {
    let files = open_files(dir)?;
    let range = KeyGroupRange::for_operator(max_p, p, i);
    let plan = plan_restore(&files, max_p, range)?;
    plan.will_need();
    let (mut entries, mut sum) = (0u64, 0u64);
    for (key_group, file) in plan.iter() {
        for (key, value) in file.archived_entries::<u64, Value>(key_group)? {
            entries += 1;
            sum = sum.wrapping_add(key.to_native() ^ u64::from(value[VALUE_BYTES - 1]));
        }
    }
    Ok((entries, sum))
}

/// Full restore of new subtask `i` of `p` into a `KeyGroupedMap`.
fn restore_map(
    dir: &Path,
    max_p: u32,
    p: u32,
    i: u32,
) -> anyhow::Result<KeyGroupedMap<u64, Value>> {
    let files = open_files(dir)?;
    let range = KeyGroupRange::for_operator(max_p, p, i);
    Ok(restore_into_map::<u64, Value>(&files, max_p, range)?)
}

/// Full restore of new subtask `i` of `p` into one `FxHashMap` per key group, each
/// presized from the index's entry count (the histogram), which `KeyGroupedMap` cannot do
/// yet.
fn restore_presized(
    dir: &Path,
    max_p: u32,
    p: u32,
    i: u32,
) -> anyhow::Result<Vec<FxHashMap<u64, Value>>> {
    let files = open_files(dir)?;
    let range = KeyGroupRange::for_operator(max_p, p, i);
    let plan = plan_restore(&files, max_p, range)?;
    plan.will_need();
    let mut maps = Vec::with_capacity(range.len() as usize);
    for (key_group, file) in plan.iter() {
        let count = file.key_group_entry(key_group)?.entry_count as usize;
        let mut map = FxHashMap::with_capacity_and_hasher(count, Default::default());
        for (key, value) in file.archived_entries::<u64, Value>(key_group)? {
            map.insert(key.to_native(), *value);
        }
        maps.push(map);
    }
    Ok(maps)
}

fn open_files(dir: &Path) -> anyhow::Result<Vec<SnapshotFile>> {
    (0..OLD_PARALLELISM)
        .map(|i| Ok(SnapshotFile::open(path_of(dir, i))?))
        .collect()
}

/// Drops the files' pages from the page cache (they are clean after the fsync).
fn drop_from_page_cache(dir: &Path) -> anyhow::Result<()> {
    for i in 0..OLD_PARALLELISM {
        let file = File::open(path_of(dir, i))?;
        // SAFETY: posix_fadvise only reads its arguments; the fd is open for the call.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if rc != 0 {
            bail!(
                "posix_fadvise(DONTNEED) failed: {}",
                std::io::Error::from_raw_os_error(rc)
            );
        }
    }
    Ok(())
}

/// Median of `runs` measurements of `f`, which returns the time to count and a value
/// dropped outside the measurement.
fn median_of<T>(
    runs: usize,
    mut f: impl FnMut() -> anyhow::Result<(Duration, T)>,
) -> anyhow::Result<(Duration, T)> {
    let mut times = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs {
        let (time, value) = f()?;
        times.push(time);
        last = Some(value); // the previous value drops here, untimed
    }
    Ok((median_duration(&times), last.expect("at least one run")))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let max_p = args.max_parallelism;
    let dir = args.dir.clone();
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let entry_count = args.state_bytes / ENTRY_PAYLOAD_BYTES;

    // Build the state of 2 subtasks.
    let start = Instant::now();
    let mut maps: Vec<KeyGroupedMap<u64, Value>> = (0..OLD_PARALLELISM)
        .map(|i| {
            KeyGroupedMap::new(
                KeyGroupRange::for_operator(max_p, OLD_PARALLELISM, i),
                max_p,
            )
        })
        .collect();
    for key in 0..entry_count {
        let key_group = assign_to_key_group(&key, max_p);
        let subtask = operator_index_for_key_group(max_p, OLD_PARALLELISM, key_group);
        maps[subtask as usize].insert(key_group, key, value_of(key));
    }
    println!(
        "state: {entry_count} entries of u64 -> [u8; {VALUE_BYTES}] ({:.2} GiB payload), \
         {max_p} key groups, {OLD_PARALLELISM} subtasks ({} + {} entries); built in {:.2?}",
        (entry_count * ENTRY_PAYLOAD_BYTES) as f64 / (1u64 << 30) as f64,
        maps[0].len(),
        maps[1].len(),
        start.elapsed()
    );
    println!(
        "runs: {} (medians); cores: {}",
        args.runs,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();

    // Write.
    let maps = &maps;
    let dir_ref = dir.as_path();
    println!("write (grouped form, from KeyGroupedMap)        time      GB/s");
    let (t, sizes) = median_of(args.runs, || {
        on_threads(OLD_PARALLELISM, |i| {
            write_cached(&path_of(dir_ref, i), &maps[i as usize])
        })
    })?;
    let file_bytes: u64 = sizes.iter().sum();
    println!(
        "  page cache, 1 writer thread per subtask  {:>10.2?}  {:>8.2}",
        t,
        gb_per_s(file_bytes, t)
    );
    let (t, _) = median_of(args.runs, || {
        sequential(OLD_PARALLELISM, |i| {
            write_cached(&path_of(dir_ref, i), &maps[i as usize])
        })
    })?;
    println!(
        "  page cache, single-threaded              {:>10.2?}  {:>8.2}",
        t,
        gb_per_s(file_bytes, t)
    );
    let (t, _) = median_of(args.runs, || {
        sequential(OLD_PARALLELISM, |i| {
            let map = &maps[i as usize];
            let writer = SnapshotWriter::<_, u64, Value>::new(
                std::io::sink(),
                meta(map.max_parallelism(), map.key_group_range()),
                "sink",
            )?;
            Ok(writer.write_map(map)?.1.size_bytes)
        })
    })?;
    println!(
        "  serialize + checksum only (io::sink), 1 thread {:>7.2?}  {:>8.2}",
        t,
        gb_per_s(file_bytes, t)
    );
    let (t, _) = median_of(args.runs, || {
        on_threads(OLD_PARALLELISM, |i| {
            write_durable(&path_of(dir_ref, i), &maps[i as usize])
        })
    })?;
    println!(
        "  durable (fsync), 1 thread per subtask    {:>10.2?}  {:>8.2}",
        t,
        gb_per_s(file_bytes, t)
    );
    println!(
        "  files: {file_bytes} bytes ({:.3} GiB)",
        file_bytes as f64 / (1u64 << 30) as f64
    );

    // Flat form: (key group, key, value) in arrival order, counting sort, write. Measured
    // once per run on subtask 0's share (single-threaded).
    {
        let range = maps[0].key_group_range();
        let mut partition_times = Vec::new();
        let mut write_times = Vec::new();
        let mut bytes = 0;
        for _ in 0..args.runs {
            let mut flat: Vec<(u32, (u64, Value))> = Vec::with_capacity(maps[0].len());
            for key in 0..entry_count {
                let key_group = assign_to_key_group(&key, max_p);
                if range.contains(key_group) {
                    flat.push((key_group, (key, value_of(key))));
                }
            }
            let start = Instant::now();
            let partition = partition_by_key_group(range, flat);
            partition_times.push(start.elapsed());
            let start = Instant::now();
            let path = dir.join("flat.snap");
            let file = File::create(&path)?;
            let writer = SnapshotWriter::<_, u64, Value>::new(
                BufWriter::with_capacity(1 << 16, file),
                meta(max_p, range),
                &path,
            )?;
            bytes = writer.write_partition(&partition)?.1.size_bytes;
            write_times.push(start.elapsed());
            drop(partition);
        }
        let (tp, tw) = (
            median_duration(&partition_times),
            median_duration(&write_times),
        );
        println!(
            "flat form, subtask 0 ({:.2} GiB): counting sort {:.2?} ({:.2} GB/s), write {:.2?} \
             ({:.2} GB/s)",
            bytes as f64 / (1u64 << 30) as f64,
            tp,
            gb_per_s(bytes, tp),
            tw,
            gb_per_s(bytes, tw)
        );
        std::fs::remove_file(dir.join("flat.snap"))?;
    }
    println!();

    // Restore (warm page cache: the files were just written).
    println!(
        "restore from {OLD_PARALLELISM} files, warm page cache        threads/subtask      single-threaded   target <{RESTORE_TARGET:?}"
    );
    for p in [OLD_PARALLELISM, 3, 1] {
        let label = if p == OLD_PARALLELISM {
            "same"
        } else {
            "rescaled"
        };
        let (t_par, counts) = median_of(args.runs, || {
            on_threads(p, |i| restore_zero_copy(dir_ref, max_p, p, i))
        })?;
        let restored: u64 = counts.iter().map(|c| c.0).sum();
        if restored != entry_count {
            bail!("zero-copy restore at p={p} saw {restored} entries, expected {entry_count}");
        }
        let (t_seq, _) = median_of(args.runs, || {
            sequential(p, |i| restore_zero_copy(dir_ref, max_p, p, i))
        })?;
        println!(
            "  p={p} ({label:8}) zero-copy (mmap+crc+validate) {:>10.2?} {:>6.2} GB/s {:>10.2?} {:>6.2} GB/s  {}",
            t_par,
            gb_per_s(file_bytes, t_par),
            t_seq,
            gb_per_s(file_bytes, t_seq),
            verdict(t_seq < RESTORE_TARGET)
        );
        let (t_par, restored) = median_of(args.runs, || {
            on_threads(p, |i| restore_map(dir_ref, max_p, p, i))
        })?;
        let n: usize = restored.iter().map(KeyGroupedMap::len).sum();
        if n as u64 != entry_count {
            bail!("map restore at p={p} restored {n} entries, expected {entry_count}");
        }
        drop(restored);
        let (t_seq, _) = median_of(args.runs, || {
            sequential(p, |i| restore_map(dir_ref, max_p, p, i))
        })?;
        println!(
            "  p={p} ({label:8}) into KeyGroupedMap            {:>10.2?} {:>6.2} GB/s {:>10.2?} {:>6.2} GB/s  {}",
            t_par,
            gb_per_s(file_bytes, t_par),
            t_seq,
            gb_per_s(file_bytes, t_seq),
            verdict(t_seq < RESTORE_TARGET)
        );
        let (t_seq, restored) = median_of(args.runs, || {
            sequential(p, |i| restore_presized(dir_ref, max_p, p, i))
        })?;
        let n: usize = restored.iter().flatten().map(FxHashMap::len).sum();
        if n as u64 != entry_count {
            bail!("presized restore at p={p} restored {n} entries, expected {entry_count}");
        }
        drop(restored);
        println!(
            "  p={p} ({label:8}) into presized FxHashMaps       {:>10} {:>11} {:>10.2?} {:>6.2} GB/s  {}",
            "",
            "",
            t_seq,
            gb_per_s(file_bytes, t_seq),
            verdict(t_seq < RESTORE_TARGET)
        );
    }

    // Cold-ish: the files were fsynced by the durable write; drop their pages, then
    // restore everything on one thread (p=1).
    println!();
    println!("restore at p=1 after posix_fadvise(DONTNEED) (cold-ish), single-threaded");
    let (t, _) = median_of(args.runs, || {
        drop_from_page_cache(dir_ref)?;
        sequential(1, |i| restore_zero_copy(dir_ref, max_p, 1, i))
    })?;
    println!(
        "  zero-copy (mmap+crc+validate)  {:>10.2?} {:>6.2} GB/s  {}",
        t,
        gb_per_s(file_bytes, t),
        verdict(t < RESTORE_TARGET)
    );
    let (t, _) = median_of(args.runs, || {
        drop_from_page_cache(dir_ref)?;
        sequential(1, |i| restore_map(dir_ref, max_p, 1, i))
    })?;
    println!(
        "  into KeyGroupedMap             {:>10.2?} {:>6.2} GB/s  {}",
        t,
        gb_per_s(file_bytes, t),
        verdict(t < RESTORE_TARGET)
    );

    for i in 0..OLD_PARALLELISM {
        std::fs::remove_file(path_of(&dir, i))?;
    }
    let _ = std::fs::remove_dir(&dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("3k"), Ok(3 << 10));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("1T").is_err());
        assert!(parse_size("").is_err());
    }
}
