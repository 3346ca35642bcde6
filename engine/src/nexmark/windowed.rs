//! Windowed Nexmark queries, with the semantics of the `nexmark-flink` SQL:
//!
//! - q5: hopping windows of 10 s every 2 s; per window, the auction(s) with
//!   the most bids: `(auction, num, window start)`. Counted per (window,
//!   auction) with the window's maximum maintained as bids arrive (a
//!   specialised plan, not the generic window operator: firing a window must
//!   not touch each of its ~10^5 auctions).
//! - q7: tumbling 10 s windows; the highest bid(s) of each window. Computed in
//!   two steps: the highest bids per window of each of 64 partitions of the
//!   auction ids, then the highest of those per window.
//! - q8: tumbling 10 s windows; people who registered and created an auction
//!   as seller in the same window: `(id, name, window start)`.
//! - q11: session windows with a 10 s gap per bidder: `(bidder, bids, start,
//!   end)`.
//! - q12: processing-time tumbling 10 s windows per bidder: `(bidder, bids,
//!   start, end)`.
//!
//! The per-window maxima of q5 and q7 wait for the watermark to pass the
//! window's end before emitting: every partial result of the window has
//! arrived by then (an operator emits a window's results before forwarding
//! the watermark that fired it).

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;
use std::time::Duration;

use crate::api::either::Either;
use crate::api::functions::{
    CheckpointedFunction, KeyedContext, KeyedProcessFunction, OneInputOperator,
    OperatorStateRestore, ValueStateRef,
};
use crate::api::stream::DataStream;
use crate::runtime::collector::Emitter;
use crate::runtime::timers::TimeDomain;
use crate::runtime::window::{TimeWindow, WindowAssigner};

use super::auctions::{bids, slim_auctions, slim_bids};
use super::model::{Auction, Bid, Event, Person};
use super::text::Str;

const TEN_SECONDS: Duration = Duration::from_secs(10);

/// Per window (keyed by its start): the best value so far and the items that
/// have it, emitted when the watermark passes the window's end.
#[derive(Clone)]
struct MaxPerWindow<V, F> {
    window_ms: i64,
    _v: std::marker::PhantomData<fn(V)>,
    emit: F,
}

impl<V, F> KeyedProcessFunction<i64, (i64, u64, Vec<V>), V> for MaxPerWindow<V, F>
where
    V: Clone + rheon_net::codec::Codec + Send + Sync + 'static,
    F: Fn(&V) -> V + Clone + Send + Sync + 'static,
{
    /// (max, items with it)
    type State = (u64, Vec<V>);

    fn process_element(
        &mut self,
        start: &i64,
        (_, value, items): (i64, u64, Vec<V>),
        state: &mut ValueStateRef<'_, Self::State>,
        ctx: &mut KeyedContext<'_, i64>,
        _out: &mut Emitter<'_, V>,
    ) {
        match state.value_mut() {
            Some((max, best)) if value == *max => best.extend(items),
            Some((max, best)) => {
                if value > *max {
                    *max = value;
                    *best = items;
                }
            }
            None => {
                state.update((value, items));
                ctx.register_event_time_timer(start + self.window_ms - 1);
            }
        }
    }

    fn on_timer(
        &mut self,
        _start: &i64,
        _timestamp: i64,
        _domain: TimeDomain,
        state: &mut ValueStateRef<'_, Self::State>,
        _ctx: &mut KeyedContext<'_, i64>,
        out: &mut Emitter<'_, V>,
    ) {
        if let Some((_, best)) = state.value() {
            for item in best {
                out.emit((self.emit)(item));
            }
        }
        state.clear();
    }
}

/// Per window of one subtask: bids per auction, and the running maximum with
/// the auctions that have it.
#[derive(Clone, Default)]
struct WindowCounts {
    counts: FxHashMap<u64, u64>,
    max: u64,
    best: Vec<u64>,
}

/// q5's first step, behind a partitioning by auction: counts bids per
/// (window, auction) and keeps each window's maximum up to date as bids
/// arrive, so when the watermark passes a window's end its most-bid
/// auctions are known at once. Firing then costs one record per window,
/// not one per (auction, window) pair: with ~10^5 auctions per 10 s window
/// that difference is the window's latency. Bids of windows already emitted
/// are late and dropped, as the window operator drops them.
#[derive(Clone)]
struct HotAuctions {
    /// Window start -> its counts.
    windows: BTreeMap<i64, WindowCounts>,
    watermark: i64,
}

const Q5_SIZE_MS: i64 = 10_000;
const Q5_SLIDE_MS: i64 = 2_000;

impl OneInputOperator<Bid, (i64, u64, Vec<(u64, u64, i64)>)> for HotAuctions {
    fn process(&mut self, bid: Bid, _out: &mut Emitter<'_, (i64, u64, Vec<(u64, u64, i64)>)>) {
        let ts = bid.date_time;
        let mut start = ts - ts.rem_euclid(Q5_SLIDE_MS);
        while start > ts - Q5_SIZE_MS {
            if start + Q5_SIZE_MS - 1 > self.watermark {
                let w = self.windows.entry(start).or_default();
                let count = w.counts.entry(bid.auction).or_default();
                *count += 1;
                if *count > w.max {
                    w.max = *count;
                    w.best.clear();
                }
                if *count == w.max {
                    w.best.push(bid.auction);
                }
            }
            start -= Q5_SLIDE_MS;
        }
    }

    fn on_watermark(
        &mut self,
        watermark: i64,
        out: &mut Emitter<'_, (i64, u64, Vec<(u64, u64, i64)>)>,
    ) {
        self.watermark = self.watermark.max(watermark);
        while let Some(entry) = self.windows.first_entry() {
            let start = *entry.key();
            if start + Q5_SIZE_MS - 1 > watermark {
                break;
            }
            let w = entry.remove();
            let rows = w.best.into_iter().map(|a| (a, w.max, start)).collect();
            out.emit((start, w.max, rows));
        }
    }
}

/// What one subtask of [`HotAuctions`] checkpoints: its watermark and, per
/// open window, the count per auction.
type HotAuctionsSnapshot = (i64, Vec<(i64, Vec<(u64, u64)>)>);

/// The counts are per auction, so a restore takes every subtask's snapshot
/// (union) and keeps the auctions it owns: that holds at another
/// parallelism too. The restored watermark is the least of the old
/// subtasks': a window one of them had already emitted is gone from every
/// snapshot, and only a bid late for it (none in an in-order stream) could
/// open it again.
impl CheckpointedFunction for HotAuctions {
    fn snapshot_state(&mut self, _checkpoint_id: u64) -> Result<Vec<Vec<u8>>, String> {
        let windows = self
            .windows
            .iter()
            .map(|(&start, w)| (start, w.counts.iter().map(|(&a, &n)| (a, n)).collect()))
            .collect();
        let snapshot: HotAuctionsSnapshot = (self.watermark, windows);
        Ok(vec![rheon_net::codec::encode_to_vec(&snapshot)])
    }

    fn restore_state(&mut self, restore: &OperatorStateRestore<'_>) -> Result<(), String> {
        self.windows.clear();
        let mut watermark = None::<i64>;
        for element in restore.union() {
            let (subtask_watermark, windows): HotAuctionsSnapshot =
                rheon_net::codec::decode_exact(element)
                    .map_err(|e| format!("the checkpointed q5 counts do not decode: {e}"))?;
            watermark = Some(watermark.map_or(subtask_watermark, |w| w.min(subtask_watermark)));
            for (start, counts) in windows {
                let w = self.windows.entry(start).or_default();
                for (auction, count) in counts {
                    if restore.owns_key(&auction) {
                        *w.counts.entry(auction).or_default() += count;
                    }
                }
            }
        }
        self.watermark = watermark.unwrap_or(i64::MIN);
        for w in self.windows.values_mut() {
            w.max = w.counts.values().copied().max().unwrap_or(0);
            w.best = w
                .counts
                .iter()
                .filter(|&(_, &n)| n == w.max)
                .map(|(&a, _)| a)
                .collect();
        }
        self.windows.retain(|_, w| !w.counts.is_empty());
        Ok(())
    }
}

/// q5: `(auction, num, window start)` for the most-bid auction(s) of each
/// 10 s window sliding by 2 s: per-subtask maxima kept as bids arrive
/// (bids partitioned by auction), then the maximum of those per window.
pub fn q5(events: &DataStream<Event>) -> DataStream<(u64, u64, i64)> {
    slim_bids(events)
        .key_by(|b: &Bid| b.auction)
        .into_stream()
        .transform_checkpointed(
            "q5 bids per auction and window, maxima per subtask",
            HotAuctions {
                windows: BTreeMap::new(),
                watermark: i64::MIN,
            },
        )
        .key_by(|r: &(i64, u64, Vec<(u64, u64, i64)>)| r.0)
        .process(MaxPerWindow {
            window_ms: Q5_SIZE_MS,
            _v: std::marker::PhantomData,
            emit: |r: &(u64, u64, i64)| *r,
        })
        .name("q5 hottest auctions per window")
}

/// Partitions of the first q7 step.
const Q7_PARTITIONS: u64 = 64;

/// q7: the highest bid(s) of each 10 s tumbling window.
pub fn q7(events: &DataStream<Event>) -> DataStream<Bid> {
    bids(events)
        .key_by(|b: &Bid| b.auction % Q7_PARTITIONS)
        .window(WindowAssigner::tumbling(TEN_SECONDS), |b: &Bid| b.date_time)
        .aggregate(
            || (0u64, Vec::<Bid>::new()),
            |(max, best): &mut (u64, Vec<Bid>), b: &Bid| {
                if best.is_empty() || b.price > *max {
                    *max = b.price;
                    best.clear();
                    best.push(b.clone());
                } else if b.price == *max {
                    best.push(b.clone());
                }
            },
            |_part: &u64, w: TimeWindow, (max, best): &(u64, Vec<Bid>)| {
                (w.start, *max, best.clone())
            },
        )
        .name("q7 highest bids per partition and window")
        .key_by(|r: &(i64, u64, Vec<Bid>)| r.0)
        .process(MaxPerWindow {
            window_ms: 10_000,
            _v: std::marker::PhantomData,
            emit: |b: &Bid| b.clone(),
        })
        .name("q7 highest bids per window")
}

/// q8: `(person id, name, window start)` for people who registered and
/// opened an auction as seller in the same 10 s tumbling window.
pub fn q8(events: &DataStream<Event>) -> DataStream<(u64, Str, i64)> {
    // Only ids, names and times cross the exchange.
    let persons = events
        .flat_map(|e: Event| match e {
            Event::Person(p) => Some(Person {
                email_address: Str::new(),
                credit_card: Str::new(),
                city: Str::new(),
                state: Str::new(),
                extra: Str::new(),
                ..p
            }),
            _ => None,
        })
        .name("persons: id, name, time");
    persons
        .connect(&slim_auctions(events))
        .key_by(|p: &Person| p.id, |a: &Auction| a.seller)
        .into_keyed()
        .window(
            WindowAssigner::tumbling(TEN_SECONDS),
            |e: &Either<Person, Auction>| match e {
                Either::Left(p) => p.date_time,
                Either::Right(a) => a.date_time,
            },
        )
        .process(
            |id: &u64,
             w: TimeWindow,
             records: &[Either<Person, Auction>],
             out: &mut Emitter<'_, (u64, Str, i64)>| {
                if !records.iter().any(|e| matches!(e, Either::Right(_))) {
                    return;
                }
                // GROUP BY id, name: each distinct name once.
                let mut names: Vec<&Str> = records
                    .iter()
                    .filter_map(|e| match e {
                        Either::Left(p) => Some(&p.name),
                        Either::Right(_) => None,
                    })
                    .collect();
                names.sort_unstable();
                names.dedup();
                for name in names {
                    out.emit((*id, name.clone(), w.start));
                }
            },
        )
        .name("q8 new sellers per window")
}

/// q11: `(bidder, bids, session start, session end)` with a 10 s gap.
pub fn q11(events: &DataStream<Event>) -> DataStream<(u64, u64, i64, i64)> {
    slim_bids(events)
        .key_by(|b: &Bid| b.bidder)
        .window(WindowAssigner::session(TEN_SECONDS), |b: &Bid| b.date_time)
        .aggregate_with_merge(
            || 0u64,
            |count: &mut u64, _b: &Bid| *count += 1,
            |a: u64, b: u64| a + b,
            |bidder: &u64, w: TimeWindow, count: &u64| (*bidder, *count, w.start, w.end),
        )
        .name("q11 bids per bidder session")
}

/// q12: `(bidder, bids, start, end)` per processing-time 10 s window.
pub fn q12(events: &DataStream<Event>) -> DataStream<(u64, u64, i64, i64)> {
    slim_bids(events)
        .key_by(|b: &Bid| b.bidder)
        .window_processing_time(WindowAssigner::tumbling(TEN_SECONDS))
        .aggregate(
            || 0u64,
            |count: &mut u64, _b: &Bid| *count += 1,
            |bidder: &u64, w: TimeWindow, count: &u64| (*bidder, *count, w.start, w.end),
        )
        .name("q12 bids per bidder and processing-time window")
}
