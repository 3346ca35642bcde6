//! The throughput job: a parallel generator of fixed-size records, a keyed
//! exchange (or a rebalance, or none), and a discarding sink. It measures what
//! the runtime itself costs per record.

use rheon_net::codec::{Codec, DecodeError};

use crate::api::env::StreamEnv;
use crate::config::EngineConfig;
use crate::coordinator::messages::JobOutcome;
use crate::error::JobError;

/// A record of exactly `N` serialized bytes: a key and `N - 8` payload bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FixedRecord<const N: usize> {
    pub key: u64,
    pub payload: [u8; N],
}

impl<const N: usize> FixedRecord<N> {
    /// The number of payload bytes actually serialized.
    const PAYLOAD: usize = N - 8;

    pub fn new(key: u64) -> Self {
        let mut payload = [0u8; N];
        payload[..8].copy_from_slice(&key.to_le_bytes());
        FixedRecord { key, payload }
    }
}

impl<const N: usize> Codec for FixedRecord<N> {
    #[inline]
    fn encoded_len(&self) -> usize {
        N
    }
    #[inline]
    fn encode(&self, out: &mut [u8]) {
        out[..8].copy_from_slice(&self.key.to_le_bytes());
        out[8..N].copy_from_slice(&self.payload[..Self::PAYLOAD]);
    }
    #[inline]
    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        let key = u64::decode(input)?;
        if input.len() < Self::PAYLOAD {
            return Err(DecodeError::Truncated {
                expected: "the payload of a fixed-size record",
                needed_bytes: Self::PAYLOAD,
                remaining_bytes: input.len(),
            });
        }
        let mut payload = [0u8; N];
        payload[..Self::PAYLOAD].copy_from_slice(&input[..Self::PAYLOAD]);
        *input = &input[Self::PAYLOAD..];
        Ok(FixedRecord { key, payload })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exchange {
    /// Hash by key (`key_by`).
    Keyed,
    /// Round-robin.
    Rebalance,
    /// Chained: no exchange at all.
    Chained,
}

pub struct ThroughputOptions {
    pub records: u64,
    /// 16, 100 or 1024.
    pub record_bytes: usize,
    pub exchange: Exchange,
    pub keys: u64,
    pub config: EngineConfig,
}

pub struct ThroughputResult {
    pub records: u64,
    pub bytes: u64,
    pub outcome: JobOutcome,
}

fn run_sized<const N: usize>(options: &ThroughputOptions) -> Result<ThroughputResult, JobError> {
    let env = StreamEnv::new(options.config.clone());
    let keys = options.keys.max(1);
    let records = env.generate(options.records, move |i| {
        FixedRecord::<N>::new(i.wrapping_mul(0x9e37_79b9_7f4a_7c15) % keys)
    });
    match options.exchange {
        Exchange::Keyed => records
            .key_by(|r: &FixedRecord<N>| r.key)
            .into_stream()
            .filter(|_| true)
            .discard(),
        Exchange::Rebalance => records.rebalance().filter(|_| true).discard(),
        Exchange::Chained => records.filter(|_| true).discard(),
    };
    let outcome = env.execute("throughput")?;
    Ok(ThroughputResult {
        records: options.records,
        bytes: options.records * N as u64,
        outcome,
    })
}

/// Runs the job; record sizes other than 16, 100 and 1024 bytes are refused.
pub fn run(options: &ThroughputOptions) -> Result<ThroughputResult, JobError> {
    match options.record_bytes {
        16 => run_sized::<16>(options),
        100 => run_sized::<100>(options),
        1024 => run_sized::<1024>(options),
        other => Err(JobError::InvalidGraph {
            job: "throughput".into(),
            message: format!("record size {other} bytes is not supported; use 16, 100 or 1024"),
        }),
    }
}
