//! Engine-level exchange throughput: the `throughput` job (parallel generator of
//! fixed-size records -> keyed or rebalance exchange -> filter -> discard) on two
//! pinned executors at parallelism 2, so records cross between the cores. For each
//! record size (16 B, 100 B, 1 KiB) and exchange it prints records/s in total and per
//! core and GB/s, next to a plain memcpy of the same byte volume measured in the same
//! run: 32 KiB chunks copied from a 256 MiB source (out of cache) and from a 32 KiB
//! source (in cache). Figures are the median of `--runs`.
//!
//! Targets: keyed 16 B >= 20 M records/s per core; 1 KiB >= half the out-of-cache
//! memcpy bandwidth.

use std::time::Instant;

use anyhow::anyhow;
use clap::Parser;
use rheon::jobs::throughput::{run, Exchange, ThroughputOptions};
use rheon::EngineConfig;
use rheon_bench::{gb_per_s, median_duration, verdict, ChunkedCopy};

#[derive(Parser, Debug)]
#[command(about = "Engine-level exchange throughput between two executors on different cores")]
struct Args {
    /// Records per run for every size; by default 50 M (16 B), 25 M (100 B) and
    /// 5 M (1 KiB), about 1-3 s per run.
    #[arg(long)]
    records: Option<u64>,
    /// Runs per setting; the median is printed.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Distinct keys of the generated records.
    #[arg(long, default_value_t = 1 << 16)]
    keys: u64,
    /// Executors (each pinned to a core); the parallelism is the same.
    #[arg(long, default_value_t = 2)]
    executors: usize,
    /// Record sizes to run (any of 16, 100, 1024).
    #[arg(long, value_delimiter = ',', default_values_t = vec![16usize, 100, 1024])]
    sizes: Vec<usize>,
    /// Source size of the out-of-cache memcpy, MiB.
    #[arg(long, default_value_t = 256)]
    memcpy_source_mib: usize,
}

const CHUNK: usize = 32 << 10;
const TARGET_KEYED_16B_PER_CORE: f64 = 20e6;

fn default_records(size: usize) -> u64 {
    match size {
        16 => 50_000_000,
        100 => 25_000_000,
        _ => 5_000_000,
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.runs > 0, "--runs must be at least 1");
    for &s in &args.sizes {
        anyhow::ensure!(
            matches!(s, 16 | 100 | 1024),
            "record size {s} is not supported; use 16, 100 or 1024"
        );
    }
    let config = EngineConfig::default()
        .with_executors(args.executors)
        .with_parallelism(args.executors as u32);
    let cores = args.executors as f64;
    println!(
        "exchange: throughput job, {} executors x parallelism {}, {} keys, median of {} runs, \
         buffer timeout {:?}, segment {} B; memcpy: {} KiB chunks from a {} MiB source (out of cache) \
         and from a {} KiB source (in cache), one thread",
        config.executors,
        config.parallelism(),
        args.keys,
        args.runs,
        config.buffer_timeout,
        config.segment_size_bytes,
        CHUNK >> 10,
        args.memcpy_source_mib,
        CHUNK >> 10,
    );
    println!(
        "{:>6} {:>9} {:>10} {:>14} {:>14} {:>8} {:>9} | {:>13} {:>11} {:>9} | target",
        "size",
        "exchange",
        "records",
        "records/s",
        "rec/s/core",
        "GB/s",
        "run ms",
        "memcpy GB/s",
        "in-cache",
        "% memcpy"
    );
    let mut copy_out = ChunkedCopy::new(args.memcpy_source_mib << 20, CHUNK);
    let mut copy_in = ChunkedCopy::new(CHUNK, CHUNK);
    for &size in &args.sizes {
        let records = args.records.unwrap_or_else(|| default_records(size));
        for exchange in [Exchange::Keyed, Exchange::Rebalance] {
            let mut engine = Vec::new();
            let mut job = Vec::new();
            let mut memcpy_out = Vec::new();
            let mut memcpy_in = Vec::new();
            let mut bytes = 0;
            for _ in 0..args.runs {
                let options = ThroughputOptions {
                    records,
                    record_bytes: size,
                    exchange,
                    keys: args.keys,
                    config: config.clone(),
                };
                let start = Instant::now();
                let result = run(&options).map_err(|e| anyhow!("throughput job: {e}"))?;
                engine.push(start.elapsed());
                job.push(result.outcome.elapsed);
                bytes = result.bytes;
                let received: u64 = result
                    .outcome
                    .vertices
                    .iter()
                    .filter(|v| v.name.contains("Discard"))
                    .map(|v| v.records_in)
                    .sum();
                if received != 0 && received != records {
                    return Err(anyhow!("the sink received {received} of {records} records"));
                }
                memcpy_out.push(copy_out.run(bytes));
                memcpy_in.push(copy_in.run(bytes));
            }
            let elapsed = median_duration(&job);
            let wall = median_duration(&engine);
            let rps = records as f64 / elapsed.as_secs_f64();
            let gbs = gb_per_s(bytes, elapsed);
            let mc_out = gb_per_s(bytes, median_duration(&memcpy_out));
            let mc_in = gb_per_s(bytes, median_duration(&memcpy_in));
            let target = match (exchange, size) {
                (Exchange::Keyed, 16) => format!(
                    ">= 20 M rec/s/core: {}",
                    verdict(rps / cores >= TARGET_KEYED_16B_PER_CORE)
                ),
                (_, 1024) => format!(
                    ">= 1/2 memcpy ({:.2} GB/s): {}",
                    mc_out / 2.0,
                    verdict(gbs >= mc_out / 2.0)
                ),
                _ => "-".to_string(),
            };
            println!(
                "{:>5}B {:>9} {:>10} {:>14.0} {:>14.0} {:>8.3} {:>9.1} | {:>13.3} {:>11.3} {:>8.1}% | {}",
                size,
                format!("{exchange:?}").to_lowercase(),
                records,
                rps,
                rps / cores,
                gbs,
                wall.as_secs_f64() * 1e3,
                mc_out,
                mc_in,
                100.0 * gbs / mc_out,
                target
            );
        }
    }
    println!(
        "records/s and GB/s use the job's elapsed time (JobOutcome::elapsed); run ms is the wall \
         time of run() including cluster start and stop. Per core = total / executors."
    );
    Ok(())
}
