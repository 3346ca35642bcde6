//! What named keyed state costs per record in a keyed process function,
//! through the engine (noisy host: kinds interleaved in each round, medians).
//!
//! Job: generator of `--records` records over `--keys` keys, keyed process
//! function, discarding sink; parallelism 2 on 2 executors. Each kind does one
//! state operation per record and emits nothing:
//! - `value-ref`: the function's `type State` (`ValueStateRef::value_mut`),
//!   the baseline;
//! - `value`: a named `ValueState<u64>`, read and updated;
//! - `list`: a `ListState<u64>`, one `add` (folded into its sum every 16
//!   elements, so lists stay short);
//! - `map`: a `MapState<u64, u64>`, one `get` and one `put` of one of 8 user
//!   keys;
//! - `reducing`: a `ReducingState<u64>` (max), one `add`;
//! - `aggregating`: an `AggregatingState` (sum and count), one `add`.
//!
//! With `--checkpoint-ms`, every run also takes incremental checkpoints at
//! that interval, so the states log their changes (marked keys, logged once
//! per checkpoint; map entries one by one).

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use rheon::{
    AggregateFunction, AggregatingState, CheckpointConfig, Emitter, EngineConfig, KeyedContext,
    KeyedProcessFunction, KeyedStates, ListState, MapState, ReducingState, StreamEnv, ValueState,
    ValueStateRef,
};
use rheon_bench::{checkpoint_root, median_f64, spread_key};

const PARALLELISM: u32 = 2;

#[derive(Parser)]
#[command(about = "Records per second of keyed process functions using each kind of named state")]
struct Args {
    #[arg(long, default_value_t = 20_000_000)]
    records: u64,
    #[arg(long, default_value_t = 1 << 16)]
    keys: u64,
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Incremental checkpoints at this interval (none when absent).
    #[arg(long)]
    checkpoint_ms: Option<u64>,
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    ValueRef,
    Value,
    List,
    Map,
    Reducing,
    Aggregating,
}

const KINDS: [Kind; 6] = [
    Kind::ValueRef,
    Kind::Value,
    Kind::List,
    Kind::Map,
    Kind::Reducing,
    Kind::Aggregating,
];

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::ValueRef => "value-ref",
            Kind::Value => "value",
            Kind::List => "list",
            Kind::Map => "map",
            Kind::Reducing => "reducing",
            Kind::Aggregating => "aggregating",
        }
    }
}

#[derive(Clone)]
struct SumCount;

impl AggregateFunction for SumCount {
    type In = u64;
    type Acc = (u64, u64);
    type Out = u64;
    fn create_accumulator(&self) -> (u64, u64) {
        (0, 0)
    }
    fn add(&self, value: u64, acc: &mut (u64, u64)) {
        acc.0 += value;
        acc.1 += 1;
    }
    fn get_result(&self, acc: &(u64, u64)) -> u64 {
        acc.0 / acc.1.max(1)
    }
}

#[derive(Clone)]
struct Bench {
    kind: Kind,
    value: ValueState<u64>,
    list: ListState<u64>,
    map: MapState<u64, u64>,
    max: ReducingState<u64>,
    mean: AggregatingState<SumCount>,
}

impl Bench {
    fn new(kind: Kind) -> Self {
        Bench {
            kind,
            value: ValueState::new("value"),
            list: ListState::new("list"),
            map: MapState::new("map"),
            max: ReducingState::new("max", |acc: &mut u64, v| *acc = (*acc).max(v)),
            mean: AggregatingState::new("mean", SumCount),
        }
    }
}

impl KeyedProcessFunction<u64, u64, u64> for Bench {
    type State = u64;

    fn open(&mut self, states: &mut KeyedStates<u64>) -> Result<(), String> {
        match self.kind {
            Kind::ValueRef => Ok(()),
            Kind::Value => states.value(&mut self.value),
            Kind::List => states.list(&mut self.list),
            Kind::Map => states.map(&mut self.map),
            Kind::Reducing => states.reducing(&mut self.max),
            Kind::Aggregating => states.aggregating(&mut self.mean),
        }
    }

    fn process_element(
        &mut self,
        _key: &u64,
        record: u64,
        state: &mut ValueStateRef<'_, u64>,
        ctx: &mut KeyedContext<'_, u64>,
        _out: &mut Emitter<'_, u64>,
    ) {
        match self.kind {
            Kind::ValueRef => match state.value_mut() {
                Some(count) => *count += 1,
                None => state.update(1),
            },
            Kind::Value => {
                let mut value = ctx.value(&self.value);
                let next = value.value().map_or(1, |c| c + 1);
                value.update(next);
            }
            Kind::List => {
                let mut list = ctx.list(&self.list);
                list.add(record);
                if list.len() == 16 {
                    let sum = list.get().iter().sum();
                    list.update(vec![sum]);
                }
            }
            Kind::Map => {
                let mut map = ctx.map(&self.map);
                let user_key = record % 8;
                let n = map.get(&user_key).map_or(1, |n| n + 1);
                map.put(user_key, n);
            }
            Kind::Reducing => ctx.reducing(&self.max).add(record),
            Kind::Aggregating => ctx.aggregating(&self.mean).add(record),
        }
    }
}

/// One run: records per second.
fn run(args: &Args, kind: Kind, round: usize) -> anyhow::Result<f64> {
    let mut config = EngineConfig::default()
        .with_executors(PARALLELISM as usize)
        .with_parallelism(PARALLELISM);
    let root = args.checkpoint_ms.map(|ms| {
        let root = checkpoint_root(&format!("keyed-state-{}-{round}", kind.name()));
        let mut c = CheckpointConfig::every(Duration::from_millis(ms), &root);
        c.incremental = true;
        config = config.clone().with_checkpoints(c);
        root
    });
    let env = StreamEnv::new(config);
    let keys = args.keys;
    env.generate(args.records, move |k| spread_key(k, keys))
        .key_by(|k: &u64| *k)
        .process(Bench::new(kind))
        .discard();
    let started = Instant::now();
    env.execute(kind.name())
        .with_context(|| format!("the {} run failed", kind.name()))?;
    let elapsed = started.elapsed();
    if let Some(root) = root {
        let _ = std::fs::remove_dir_all(root);
    }
    Ok(args.records as f64 / elapsed.as_secs_f64())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!(
        "keyed process function, {} records over {} keys, parallelism {PARALLELISM}, {}",
        args.records,
        args.keys,
        match args.checkpoint_ms {
            Some(ms) => format!("incremental checkpoints every {ms} ms"),
            None => "no checkpoints".to_owned(),
        }
    );
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); KINDS.len()];
    for round in 0..args.runs {
        for (i, &kind) in KINDS.iter().enumerate() {
            let rate = run(&args, kind, round)?;
            println!("run {round} {}: {:.2} M records/s", kind.name(), rate / 1e6);
            rates[i].push(rate);
        }
    }
    let baseline = median_f64(&rates[0]);
    println!(
        "medians of {} (M records/s, and against value-ref):",
        args.runs
    );
    for (i, kind) in KINDS.iter().enumerate() {
        let median = median_f64(&rates[i]);
        println!(
            "  {:<12} {:>6.2}  {:>5.0}%",
            kind.name(),
            median / 1e6,
            100.0 * median / baseline
        );
    }
    Ok(())
}
