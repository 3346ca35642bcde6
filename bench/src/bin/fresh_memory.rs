//! What memory a process never touched costs to touch: the floor under a
//! restore's first run in a fresh process.
//!
//! A restore builds its hash tables in new memory (about 2.2 GiB for the
//! `checkpoint` bench's 1 GiB of state: 2^19 keys per key group need 2^20
//! buckets of 17 bytes). Each page of it is zeroed by the kernel at its first
//! write; on a virtual machine whose balloon driver reports free pages to the
//! host (virtio-balloon `VIRTIO_BALLOON_F_REPORTING`: the kernel hands free
//! 2 MiB blocks back about 2 s after they were freed), the host must also
//! provide the memory again at that write. This program measures that cost
//! alone, with no restore around it: `--processes` fresh processes, one after
//! the other, alternately started as soon as the previous one ended and after
//! a pause of `--pause-ms` (long enough for freed memory to be reported).
//! Each maps `--mib` MiB of anonymous memory (on transparent huge pages unless
//! `--small-pages`), writes one byte in every 4 KiB page from `--threads`
//! threads (each its own contiguous share, as the restore's subtasks each
//! build their own key groups' tables), then writes them all again (no fault
//! left: a pass over memory already there), unmaps it, and maps and touches
//! it once more in the same process (memory the process just gave back).
//! Prints each process's three times and, for each kind of start, the median
//! first touch.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use memmap2::{Advice, MmapMut, MmapOptions};
use rheon_bench::median_duration;

#[derive(Parser, Debug)]
#[command(about = "The cost of touching memory a process never touched")]
struct Args {
    /// MiB mapped and touched (the checkpoint bench's restore builds about 2200).
    #[arg(long, default_value_t = 2200)]
    mib: usize,
    /// Threads touching it, each a contiguous share.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Fresh processes, run one after the other (odd ones after the pause).
    #[arg(long, default_value_t = 6)]
    processes: usize,
    /// Pause before every other process, in ms.
    #[arg(long, default_value_t = 3000)]
    pause_ms: u64,
    /// 4 KiB pages only (no `MADV_HUGEPAGE`).
    #[arg(long)]
    small_pages: bool,
    /// Run one measurement in this process and print it as `child` times in
    /// nanoseconds (what the parent process starts).
    #[arg(long, hide = true)]
    child: bool,
}

const PAGE: usize = 4096;

/// Maps `len` bytes of anonymous memory, advised onto huge pages if `huge`.
fn map(len: usize, huge: bool) -> anyhow::Result<MmapMut> {
    let memory = MmapOptions::new()
        .len(len)
        .map_anon()
        .with_context(|| format!("mapping {len} bytes of anonymous memory"))?;
    if huge {
        memory
            .advise(Advice::HugePage)
            .context("madvise(MADV_HUGEPAGE)")?;
    }
    Ok(memory)
}

/// Writes `value` into one byte of every page, the shares on `threads` threads.
fn touch(memory: &mut MmapMut, threads: usize, value: u8) -> Duration {
    let share = memory.len().div_ceil(threads).next_multiple_of(PAGE);
    let started = Instant::now();
    std::thread::scope(|scope| {
        for chunk in memory.chunks_mut(share) {
            scope.spawn(move || {
                for page in chunk.chunks_mut(PAGE) {
                    // Volatile, so that the compiler cannot drop a write
                    // nothing reads.
                    // SAFETY: `page` is a non-empty slice of the mapping.
                    unsafe { std::ptr::write_volatile(page.as_mut_ptr(), value) };
                }
            });
        }
    });
    started.elapsed()
}

/// One process's figures: first touch, touched again, touch after an unmap.
fn measure(args: &Args) -> anyhow::Result<[Duration; 3]> {
    let len = args.mib << 20;
    let huge = !args.small_pages;
    let threads = args.threads.max(1);
    let mut first = map(len, huge)?;
    let fresh = touch(&mut first, threads, 1);
    let again = touch(&mut first, threads, 2);
    drop(first);
    let mut second = map(len, huge)?;
    let remapped = touch(&mut second, threads, 3);
    Ok([fresh, again, remapped])
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.child {
        let times = measure(&args)?;
        println!(
            "child {} {} {}",
            times[0].as_nanos(),
            times[1].as_nanos(),
            times[2].as_nanos()
        );
        return Ok(());
    }
    let exe = std::env::current_exe().context("the path of this program")?;
    let pages = if args.small_pages {
        "4 KiB pages"
    } else {
        "transparent huge pages (madvise)"
    };
    println!(
        "{} MiB on {pages}, touched by {} threads, in {} fresh processes:",
        args.mib, args.threads, args.processes
    );
    let pause = Duration::from_millis(args.pause_ms);
    let mut all: [Vec<Duration>; 3] = Default::default();
    let mut first_touch: [Vec<Duration>; 2] = Default::default();
    for process in 0..args.processes {
        let paused = process % 2 == 1;
        if paused {
            std::thread::sleep(pause);
        }
        let mut command = Command::new(&exe);
        command.args([
            "--child",
            "--mib",
            &args.mib.to_string(),
            "--threads",
            &args.threads.to_string(),
        ]);
        if args.small_pages {
            command.arg("--small-pages");
        }
        let output = command
            .output()
            .with_context(|| format!("running {}", exe.display()))?;
        if !output.status.success() {
            bail!(
                "process {process} failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let times: Vec<Duration> = stdout
            .split_whitespace()
            .skip(1)
            .map(|n| n.parse().map(Duration::from_nanos))
            .collect::<Result<_, _>>()
            .with_context(|| format!("process {process} printed {stdout:?}"))?;
        let [fresh, again, remapped] = times[..] else {
            bail!("process {process} printed {stdout:?}, expected three times");
        };
        let start = if paused {
            format!("after {pause:.1?}")
        } else {
            "at once".to_owned()
        };
        println!(
            "  process {process} ({start}): first touch {fresh:.2?} ({:.2} GB/s), touched again {again:.2?}, \
             after unmapping and mapping again {remapped:.2?}",
            (args.mib << 20) as f64 / fresh.as_secs_f64() / 1e9
        );
        for (list, time) in all.iter_mut().zip([fresh, again, remapped]) {
            list.push(time);
        }
        first_touch[usize::from(paused)].push(fresh);
    }
    for (times, start) in first_touch.iter().zip(["at once", "after the pause"]) {
        if !times.is_empty() {
            println!(
                "first touch of processes started {start}: median {:.2?} of {:.2?}",
                median_duration(times),
                times
            );
        }
    }
    println!(
        "all processes, medians: first touch {:.2?}, touched again {:.2?}, after unmapping {:.2?}",
        median_duration(&all[0]),
        median_duration(&all[1]),
        median_duration(&all[2])
    );
    Ok(())
}
