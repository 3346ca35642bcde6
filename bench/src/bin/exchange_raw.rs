//! Raw exchange throughput: records move from a producer executor pinned to core 0 to a
//! consumer executor pinned to core 1 through one credit-based channel
//! (`OutputChannel` -> `InputGate`), encoded with `Codec` into `BufferBuilder` on the
//! producer and decoded on the consumer. For each record size it prints records/s and
//! GB/s of payload, next to a plain memcpy of the same total bytes in 32 KiB chunks
//! measured in the same run. Figures are the median of `--runs`.

use std::time::{Duration, Instant};

use anyhow::anyhow;
use clap::Parser;
use glommio::{LocalExecutorBuilder, Placement};
use rheon_net::{
    BufferBuilder, ChannelConfig, ChannelId, Codec, ConnectionManager, DecodeError, Envelope,
    Event, InputGate, SegmentPool, SEGMENT_SIZE_BYTES_DEFAULT,
};

#[derive(Parser, Debug)]
#[command(about = "Raw exchange throughput between two pinned executors")]
struct Args {
    /// Records per size and run.
    #[arg(long, default_value_t = 5_000_000)]
    records: u64,
    /// Runs per size; the median is printed.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Microseconds an idle executor spins before parking (glommio
    /// `spin_before_park`); 0 parks at once. Parking puts a futex/eventfd wake-up on
    /// every credit round trip and dominates small-buffer throughput.
    #[arg(long, default_value_t = 1000)]
    spin_us: u64,
}

/// Segments the producer reserves (the consumer's credits bound what is in flight).
const PRODUCER_SEGMENTS: usize = 16;
const IO_MEMORY_BYTES: usize = 512 << 10;

/// A record of `8 + PAD` payload bytes: a u64 key and padding.
struct Record<const PAD: usize> {
    key: u64,
    pad: [u8; PAD],
}

impl<const PAD: usize> Codec for Record<PAD> {
    #[inline]
    fn encoded_len(&self) -> usize {
        8 + PAD
    }
    #[inline]
    fn encode(&self, out: &mut [u8]) {
        out[..8].copy_from_slice(&self.key.to_le_bytes());
        out[8..8 + PAD].copy_from_slice(&self.pad);
    }
    #[inline]
    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        let key = u64::decode(input)?;
        let Some((pad, rest)) = input.split_first_chunk::<PAD>() else {
            return Err(DecodeError::Truncated {
                expected: "padding",
                needed_bytes: PAD,
                remaining_bytes: input.len(),
            });
        };
        *input = rest;
        Ok(Record { key, pad: *pad })
    }
}

/// Moves `records` records of `8 + PAD` bytes once; returns the consumer's elapsed time
/// from the first envelope to the end of the partition.
fn exchange_once<const PAD: usize>(records: u64, spin: Duration) -> anyhow::Result<Duration> {
    let config = ChannelConfig::default();
    let manager = ConnectionManager::new(config.clone());
    let id = ChannelId {
        attempt: 0,
        edge: 0,
        producer: 0,
        consumer: 0,
    };
    let out_ep = manager.output_endpoint(id);
    let in_ep = manager.input_endpoint(id);
    let producer = LocalExecutorBuilder::new(Placement::Fixed(0))
        .name("producer")
        .io_memory(IO_MEMORY_BYTES)
        .spin_before_park(spin)
        .spawn(move || async move {
            let segments = SegmentPool::new(SEGMENT_SIZE_BYTES_DEFAULT, PRODUCER_SEGMENTS);
            let pool = segments.reserve(PRODUCER_SEGMENTS)?;
            let out = out_ep.open(pool.clone());
            let mut rec = Record::<PAD> {
                key: 0,
                pad: [0x5a; PAD],
            };
            let mut b = BufferBuilder::new(pool.take().await);
            for key in 0..records {
                rec.key = key;
                if !b.try_append(&rec)? {
                    out.send_buffer(b.finish());
                    b = BufferBuilder::new(pool.take().await);
                    b.try_append(&rec)?;
                }
            }
            if !b.is_empty() {
                out.send_buffer(b.finish());
            }
            out.send_event(Event::EndOfPartition);
            out.drained().await?;
            Ok::<_, rheon_net::NetError>(())
        })
        .map_err(|e| anyhow!("spawn producer executor: {e}"))?;
    let consumer = LocalExecutorBuilder::new(Placement::Fixed(1))
        .name("consumer")
        .io_memory(IO_MEMORY_BYTES)
        .spin_before_park(spin)
        .spawn(move || async move {
            let gate = InputGate::open(vec![in_ep], &config);
            let mut start = None;
            let mut expected = 0u64;
            let mut checksum = 0u64;
            while let Some((ch, env)) = gate.next().await? {
                start.get_or_insert_with(Instant::now);
                if let Envelope::Data { buffer, .. } = env {
                    for mut payload in buffer.records() {
                        let r = Record::<PAD>::decode(&mut payload)?;
                        if r.key != expected {
                            return Err(anyhow!("record {} arrived as {}", expected, r.key));
                        }
                        checksum = checksum.wrapping_add(u64::from(r.pad[PAD - 1]));
                        expected += 1;
                    }
                    gate.release(ch, buffer);
                }
            }
            let elapsed = start.map_or(Duration::ZERO, |s| s.elapsed());
            if expected != records {
                return Err(anyhow!("received {expected} of {records} records"));
            }
            std::hint::black_box(checksum);
            Ok(elapsed)
        })
        .map_err(|e| anyhow!("spawn consumer executor: {e}"))?;
    producer
        .join()
        .map_err(|e| anyhow!("producer executor: {e}"))??;
    consumer
        .join()
        .map_err(|e| anyhow!("consumer executor: {e}"))?
}

/// Copies `total_bytes` in 32 KiB chunks from a ring of source segments to a ring of
/// destination segments (as many as the producer has), on this thread.
fn memcpy_once(total_bytes: u64) -> Duration {
    let chunk = SEGMENT_SIZE_BYTES_DEFAULT;
    let src: Vec<Vec<u8>> = (0..PRODUCER_SEGMENTS)
        .map(|i| vec![i as u8; chunk])
        .collect();
    let mut dst: Vec<Vec<u8>> = (0..PRODUCER_SEGMENTS).map(|_| vec![0u8; chunk]).collect();
    let chunks = total_bytes.div_ceil(chunk as u64);
    let start = Instant::now();
    for i in 0..chunks {
        let k = (i % PRODUCER_SEGMENTS as u64) as usize;
        dst[k].copy_from_slice(&src[k]);
        std::hint::black_box(&mut dst[k]);
    }
    start.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn run_size<const PAD: usize>(args: &Args) -> anyhow::Result<()> {
    let size_bytes = 8 + PAD as u64;
    let total_bytes = args.records * size_bytes;
    let mut exchange = Vec::new();
    let mut memcpy = Vec::new();
    for _ in 0..args.runs {
        exchange.push(exchange_once::<PAD>(
            args.records,
            Duration::from_micros(args.spin_us),
        )?);
        memcpy.push(memcpy_once(total_bytes));
    }
    let (ex, mc) = (median(exchange), median(memcpy));
    let records_per_s = args.records as f64 / ex.as_secs_f64();
    let gb_per_s = total_bytes as f64 / ex.as_secs_f64() / 1e9;
    let memcpy_gb_per_s = total_bytes as f64 / mc.as_secs_f64() / 1e9;
    println!(
        "{:>6} B  {:>12.0} records/s  {:>7.3} GB/s  {:>8.1} ms   | memcpy 32 KiB chunks {:>7.3} GB/s  ({:.1}% of memcpy)",
        size_bytes,
        records_per_s,
        gb_per_s,
        ex.as_secs_f64() * 1e3,
        memcpy_gb_per_s,
        100.0 * gb_per_s / memcpy_gb_per_s
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.runs > 0, "--runs must be at least 1");
    println!(
        "exchange_raw: {} records per size, median of {} runs, core 0 -> core 1, segment {} B, \
         spin before park {} us, channel {:?}",
        args.records,
        args.runs,
        SEGMENT_SIZE_BYTES_DEFAULT,
        args.spin_us,
        ChannelConfig::default()
    );
    run_size::<8>(&args)?;
    run_size::<92>(&args)?;
    run_size::<1016>(&args)?;
    Ok(())
}
