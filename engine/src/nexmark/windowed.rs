//! Windowed Nexmark queries, with the semantics of the `nexmark-flink` SQL:
//!
//! - q5: hopping windows of 10 s every 2 s; per window, the auction(s) with
//!   the most bids: `(auction, num, window start)`. Counted per (window,
//!   auction) with the window's maximum maintained as bids arrive (a
//!   specialised plan, not the generic window operator: firing a window must
//!   not touch each of its ~10^5 auctions).
//! - q7: tumbling 10 s windows; the highest bid(s) of each window. Computed in
//!   two steps (Flink's local-global aggregation): chained to the source,
//!   each subtask keeps the highest bids per window of its own events and
//!   sends, at each watermark, those it has not sent yet; then the highest
//!   of those per window. Only bids that lead where they were generated
//!   cross the exchange, not every bid.
//! - q8: tumbling 10 s windows; people who registered and created an auction
//!   as seller in the same window: `(id, name, window start)`. Only `(id,
//!   time, name)` of persons and `(seller, time)` of auctions cross the
//!   exchange, and an auction only when its subtask has not just sent one of
//!   the same seller and window. The join keeps per window the persons in a
//!   list and the sellers in a set, and matches them when the window closes,
//!   rather than keeping state and a timer per key and window in the
//!   generic window operator.
//! - q11: session windows with a 10 s gap per bidder: `(bidder, bids, start,
//!   end)`.
//! - q12: processing-time tumbling 10 s windows per bidder: `(bidder, bids,
//!   start, end)`.
//!
//! The per-window maxima of q5 and q7 wait for the watermark to pass the
//! window's end before emitting: every partial result of the window has
//! arrived by then (an operator emits a window's results before forwarding
//! the watermark that fired it).

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

use rustc_hash::{FxHashMap, FxHashSet};
use std::time::Duration;

use crate::api::functions::{
    CheckpointedFunction, KeyedContext, KeyedProcessFunction, OneInputOperator,
    OperatorStateRestore, ValueStateRef,
};
use crate::api::stream::DataStream;
use crate::runtime::collector::Emitter;
use crate::runtime::timers::TimeDomain;
use crate::runtime::window::{TimeWindow, WindowAssigner};

use super::auctions::bid_fields;
use super::model::{Bid, Event};
use super::text::Str;

const TEN_SECONDS: Duration = Duration::from_secs(10);

/// Per window (keyed by its start): the best value so far and the items that
/// have it, emitted when the watermark passes the window's end. Partial
/// results fold in as single items would: a higher value replaces the
/// items, an equal one adds to them. A partial result without items carries
/// nothing; one for a window already emitted is late and dropped, as the
/// window operator drops a late record.
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
        if items.is_empty() || start + self.window_ms - 1 <= ctx.current_watermark() {
            return;
        }
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

/// One window's running maximum count and the auctions that have it.
#[derive(Clone, Default)]
struct WindowBest {
    max: u64,
    best: Vec<u64>,
}

impl WindowBest {
    /// `auction`'s count in the window rose to `count`.
    #[inline]
    fn offer(&mut self, auction: u64, count: u64) {
        if count > self.max {
            self.max = count;
            self.best.clear();
        }
        if count == self.max {
            self.best.push(auction);
        }
    }
}

/// An open window of one subtask: its maximum, and where its counts are.
#[derive(Clone, Default)]
struct OpenWindow {
    best: WindowBest,
    /// `Some(slot)`: an auction's count is `counts[auction][slot]`; `None`
    /// (more windows open than slots): it is in `overflow`.
    slot: Option<usize>,
    overflow: FxHashMap<u64, u64>,
}

/// Window slots in an auction's count array: a bid falls in 5 windows, and
/// an in-order stream keeps about that many open; more go to per-window maps.
const Q5_SLOTS: usize = 8;

/// q5's first step, behind a partitioning by auction: counts bids per
/// (window, auction) and keeps each window's maximum up to date as bids
/// arrive, so when the watermark passes a window's end its most-bid
/// auctions are known at once. Firing then costs one record per window,
/// not one per (auction, window) pair: with ~10^5 auctions per 10 s window
/// that difference is the window's latency. Bids of windows already emitted
/// are late and dropped, as the window operator drops them.
///
/// An auction's counts in all open windows sit in one array (a window owns
/// a slot while open), so a bid costs one hash lookup for its 5 windows,
/// not 5: with ~10^5 auctions the lookups miss the cache, and they were the
/// query's cost. A fired window's slot is zeroed in one pass over the map,
/// which takes milliseconds with 10^5 auctions; so the pass does not run at
/// the watermark that fires the window (it would hold back that window's
/// result, which needs the watermark downstream), but at a later one that
/// fires nothing. Until then the slot is dirty: no window takes it (a window
/// that finds its slot dirty counts in a per-window map instead).
#[derive(Clone)]
struct HotAuctions {
    /// Auction -> its bid count in each slotted window.
    counts: FxHashMap<u64, [u32; Q5_SLOTS]>,
    /// The start of the window holding each slot.
    slot_owner: [Option<i64>; Q5_SLOTS],
    /// Slots of fired windows not zeroed yet, and the watermark that fired
    /// the newest of them.
    dirty: [bool; Q5_SLOTS],
    dirty_since: i64,
    /// Window start -> the open window.
    windows: BTreeMap<i64, OpenWindow>,
    watermark: i64,
}

const Q5_SIZE_MS: i64 = 10_000;
const Q5_SLIDE_MS: i64 = 2_000;
const Q5_WINDOWS_PER_BID: usize = (Q5_SIZE_MS / Q5_SLIDE_MS) as usize;

impl HotAuctions {
    fn new() -> Self {
        HotAuctions {
            counts: FxHashMap::default(),
            slot_owner: [None; Q5_SLOTS],
            dirty: [false; Q5_SLOTS],
            dirty_since: i64::MIN,
            windows: BTreeMap::new(),
            watermark: i64::MIN,
        }
    }

    /// The window starting at `start`, opened (with a free slot if there is
    /// one) if it is not open yet.
    fn open(&mut self, start: i64) -> &mut OpenWindow {
        let (slot_owner, dirty) = (&mut self.slot_owner, &self.dirty);
        self.windows.entry(start).or_insert_with(|| {
            let slot = (start / Q5_SLIDE_MS).rem_euclid(Q5_SLOTS as i64) as usize;
            let free = slot_owner[slot].is_none() && !dirty[slot];
            if free {
                slot_owner[slot] = Some(start);
            }
            OpenWindow {
                slot: free.then_some(slot),
                ..OpenWindow::default()
            }
        })
    }

    /// Every open window's counts, by start.
    fn window_counts(&self) -> Vec<(i64, Vec<(u64, u64)>)> {
        let mut by_slot: [Vec<(u64, u64)>; Q5_SLOTS] = Default::default();
        for (&auction, counts) in &self.counts {
            for (slot, &n) in counts.iter().enumerate() {
                if n > 0 {
                    by_slot[slot].push((auction, u64::from(n)));
                }
            }
        }
        self.windows
            .iter()
            .map(|(&start, w)| {
                let counts = match w.slot {
                    Some(slot) => std::mem::take(&mut by_slot[slot]),
                    None => w.overflow.iter().map(|(&a, &n)| (a, n)).collect(),
                };
                (start, counts)
            })
            .collect()
    }
}

/// What q5 reads of a bid: its auction and its time.
type AuctionAndTime = (u64, i64);

impl OneInputOperator<AuctionAndTime, (i64, u64, Vec<(u64, u64, i64)>)> for HotAuctions {
    fn process(
        &mut self,
        (auction, ts): AuctionAndTime,
        _out: &mut Emitter<'_, (i64, u64, Vec<(u64, u64, i64)>)>,
    ) {
        let last = ts - ts.rem_euclid(Q5_SLIDE_MS);
        // The bid's open windows' slots (or overflow windows, counted here).
        let mut slotted = [(0i64, 0usize); Q5_WINDOWS_PER_BID];
        let mut n_slotted = 0;
        let mut start = last;
        while start > ts - Q5_SIZE_MS {
            if start + Q5_SIZE_MS - 1 > self.watermark {
                let w = self.open(start);
                match w.slot {
                    Some(slot) => {
                        slotted[n_slotted] = (start, slot);
                        n_slotted += 1;
                    }
                    None => {
                        let count = w.overflow.entry(auction).or_default();
                        *count += 1;
                        let count = *count;
                        w.best.offer(auction, count);
                    }
                }
            }
            start -= Q5_SLIDE_MS;
        }
        if n_slotted == 0 {
            return;
        }
        let counts = self.counts.entry(auction).or_insert([0; Q5_SLOTS]);
        for &(start, slot) in &slotted[..n_slotted] {
            counts[slot] += 1;
            let count = u64::from(counts[slot]);
            if let Some(w) = self.windows.get_mut(&start) {
                w.best.offer(auction, count);
            }
        }
    }

    fn on_watermark(
        &mut self,
        watermark: i64,
        out: &mut Emitter<'_, (i64, u64, Vec<(u64, u64, i64)>)>,
    ) {
        self.watermark = self.watermark.max(watermark);
        let mut fired = false;
        while let Some(entry) = self.windows.first_entry() {
            let start = *entry.key();
            if start + Q5_SIZE_MS - 1 > watermark {
                break;
            }
            let w = entry.remove();
            if let Some(slot) = w.slot {
                self.slot_owner[slot] = None;
                self.dirty[slot] = true;
                self.dirty_since = watermark;
            }
            let max = w.best.max;
            let rows = w.best.best.into_iter().map(|a| (a, max, start)).collect();
            out.emit((start, max, rows));
            fired = true;
        }
        // At a later watermark that fires nothing (or at the end of the
        // input, with nothing left to hold back): zero the fired windows'
        // slots, and forget auctions with no count left.
        let settled = watermark.saturating_sub(self.dirty_since) >= Q5_SLIDE_MS / 2;
        let end = watermark == i64::MAX;
        if ((!fired && settled) || end) && self.dirty.contains(&true) {
            self.zero_dirty_slots();
        }
    }
}

impl HotAuctions {
    fn zero_dirty_slots(&mut self) {
        let dirty = std::mem::replace(&mut self.dirty, [false; Q5_SLOTS]);
        self.counts.retain(|_, counts| {
            for (slot, count) in counts.iter_mut().enumerate() {
                if dirty[slot] {
                    *count = 0;
                }
            }
            counts.iter().any(|&n| n > 0)
        });
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
        let snapshot: HotAuctionsSnapshot = (self.watermark, self.window_counts());
        Ok(vec![rheon_net::codec::encode_to_vec(&snapshot)])
    }

    fn restore_state(&mut self, restore: &OperatorStateRestore<'_>) -> Result<(), String> {
        let mut watermark = None::<i64>;
        let mut restored: BTreeMap<i64, FxHashMap<u64, u64>> = BTreeMap::new();
        for element in restore.union() {
            let (subtask_watermark, windows): HotAuctionsSnapshot =
                rheon_net::codec::decode_exact(element)
                    .map_err(|e| format!("the checkpointed q5 counts do not decode: {e}"))?;
            watermark = Some(watermark.map_or(subtask_watermark, |w| w.min(subtask_watermark)));
            for (start, counts) in windows {
                let window = restored.entry(start).or_default();
                for (auction, count) in counts {
                    if restore.owns_key(&auction) {
                        *window.entry(auction).or_default() += count;
                    }
                }
            }
        }
        self.rebuild(watermark.unwrap_or(i64::MIN), restored)
    }
}

impl HotAuctions {
    /// Replaces the state with these windows' counts: slots (or per-window
    /// maps) and maxima as if the bids had been counted here.
    fn rebuild(
        &mut self,
        watermark: i64,
        windows: BTreeMap<i64, FxHashMap<u64, u64>>,
    ) -> Result<(), String> {
        *self = HotAuctions::new();
        self.watermark = watermark;
        for (start, counts) in windows {
            if counts.is_empty() {
                continue;
            }
            let slot = self.open(start).slot;
            let mut best = WindowBest::default();
            for (&auction, &count) in &counts {
                best.offer(auction, count);
            }
            match slot {
                Some(slot) => {
                    for (&auction, &count) in &counts {
                        let count = u32::try_from(count).map_err(|_| {
                            format!("the checkpointed q5 count {count} of auction {auction} does not fit 32 bits")
                        })?;
                        self.counts.entry(auction).or_insert([0; Q5_SLOTS])[slot] = count;
                    }
                }
                None => self.windows.get_mut(&start).expect("opened").overflow = counts,
            }
            self.windows.get_mut(&start).expect("opened").best = best;
        }
        Ok(())
    }
}

/// q5: `(auction, num, window start)` for the most-bid auction(s) of each
/// 10 s window sliding by 2 s: per-subtask maxima kept as bids arrive
/// (bids partitioned by auction), then the maximum of those per window.
pub fn q5(events: &DataStream<Event>) -> DataStream<(u64, u64, i64)> {
    let bids = bid_fields(events, "auctions and times of bids", |b| {
        (b.auction, b.date_time)
    });
    bids.key_by(|b: &AuctionAndTime| b.0)
        .into_stream()
        .transform_checkpointed(
            "q5 bids per auction and window, maxima per subtask",
            HotAuctions::new(),
        )
        .key_by(|r: &(i64, u64, Vec<(u64, u64, i64)>)| r.0)
        .process(MaxPerWindow {
            window_ms: Q5_SIZE_MS,
            _v: std::marker::PhantomData,
            emit: |r: &(u64, u64, i64)| *r,
        })
        .name("q5 hottest auctions per window")
}

const Q7_SIZE_MS: i64 = 10_000;

/// A window's highest price seen by one subtask, and the bids at that price
/// it has not sent yet.
#[derive(Clone)]
struct TopBids {
    max: u64,
    unsent: Vec<Bid>,
}

impl TopBids {
    /// A higher price replaces the unsent bids (the ones sent are replaced
    /// downstream when this one arrives), an equal one joins them.
    fn offer(&mut self, bid: Bid) {
        if bid.price > self.max {
            self.max = bid.price;
            self.unsent.clear();
            self.unsent.push(bid);
        } else if bid.price == self.max {
            self.unsent.push(bid);
        }
    }

    /// Folds in another subtask's state of the same window, as [`Self::offer`]
    /// folds in one bid.
    fn merge(&mut self, max: u64, unsent: Vec<Bid>) {
        if max > self.max {
            self.max = max;
            self.unsent = unsent;
        } else if max == self.max {
            self.unsent.extend(unsent);
        }
    }
}

/// q7's first step, chained to the source (Flink's local-global
/// aggregation): per open window, the highest price among this subtask's
/// bids and the bids at it not sent yet. At each watermark, before it is
/// forwarded, every window's unsent bids go downstream as one `(window
/// start, price, bids)` record, and the windows the watermark passed are
/// closed; [`MaxPerWindow`] folds the records of a window as it would fold
/// the bids one by one. So only bids at the top here when a watermark
/// passes cross the exchange, and they arrive before the watermark that
/// fires their window. A bid of a window already closed here goes on alone
/// at once: whether it is late is for the next step to say, whose watermark
/// is the least over all subtasks, as it was for a window operator behind
/// an exchange.
///
#[derive(Clone)]
struct LocalTopBids {
    /// Window start -> its highest bids here.
    windows: BTreeMap<i64, TopBids>,
    watermark: i64,
}

impl OneInputOperator<Event, (i64, u64, Vec<Bid>)> for LocalTopBids {
    fn process(&mut self, event: Event, out: &mut Emitter<'_, (i64, u64, Vec<Bid>)>) {
        let Event::Bid(b) = &event else { return };
        let ts = b.date_time;
        let start = ts - ts.rem_euclid(Q7_SIZE_MS);
        // Most bids are below their window's top: dropped without being
        // moved out of the event.
        if let Some((&last, window)) = self.windows.last_key_value() {
            if last == start && b.price < window.max {
                return;
            }
        }
        let Event::Bid(bid) = event else { return };
        if start + Q7_SIZE_MS - 1 <= self.watermark {
            out.emit((start, bid.price, vec![bid]));
            return;
        }
        match self.windows.entry(start) {
            Entry::Occupied(mut window) => window.get_mut().offer(bid),
            Entry::Vacant(window) => {
                window.insert(TopBids {
                    max: bid.price,
                    unsent: vec![bid],
                });
            }
        }
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Emitter<'_, (i64, u64, Vec<Bid>)>) {
        self.watermark = self.watermark.max(watermark);
        for (&start, window) in &mut self.windows {
            if !window.unsent.is_empty() {
                out.emit((start, window.max, std::mem::take(&mut window.unsent)));
            }
        }
        let watermark = self.watermark;
        self.windows
            .retain(|&start, _| start + Q7_SIZE_MS - 1 > watermark);
    }
}

/// What one subtask of [`LocalTopBids`] checkpoints: its watermark and, per
/// open window, the highest price and the unsent bids with it.
type LocalTopBidsSnapshot = (i64, Vec<(i64, u64, Vec<Bid>)>);

/// Any subtask may finish a window's partial maximum, so a restore takes a
/// share of the old subtasks' snapshots (round-robin at another
/// parallelism). The restored watermark is the least of the shares': every
/// window in them ends after it.
impl CheckpointedFunction for LocalTopBids {
    fn snapshot_state(&mut self, _checkpoint_id: u64) -> Result<Vec<Vec<u8>>, String> {
        let windows = self
            .windows
            .iter()
            .map(|(&start, w)| (start, w.max, w.unsent.clone()))
            .collect();
        let snapshot: LocalTopBidsSnapshot = (self.watermark, windows);
        Ok(vec![rheon_net::codec::encode_to_vec(&snapshot)])
    }

    fn restore_state(&mut self, restore: &OperatorStateRestore<'_>) -> Result<(), String> {
        self.windows.clear();
        let mut watermark = None::<i64>;
        for element in restore.share() {
            let (subtask_watermark, windows): LocalTopBidsSnapshot =
                rheon_net::codec::decode_exact(element)
                    .map_err(|e| format!("the checkpointed q7 maxima do not decode: {e}"))?;
            watermark = Some(watermark.map_or(subtask_watermark, |w| w.min(subtask_watermark)));
            for (start, max, unsent) in windows {
                match self.windows.entry(start) {
                    Entry::Occupied(mut window) => window.get_mut().merge(max, unsent),
                    Entry::Vacant(window) => {
                        window.insert(TopBids { max, unsent });
                    }
                }
            }
        }
        self.watermark = watermark.unwrap_or(i64::MIN);
        Ok(())
    }
}

/// q7: the highest bid(s) of each 10 s tumbling window: per-subtask maxima
/// chained to the source, then the maximum of those per window.
pub fn q7(events: &DataStream<Event>) -> DataStream<Bid> {
    events
        .transform_checkpointed(
            "q7 highest bids per subtask and window",
            LocalTopBids {
                windows: BTreeMap::new(),
                watermark: i64::MIN,
            },
        )
        .key_by(|r: &(i64, u64, Vec<Bid>)| r.0)
        .process(MaxPerWindow {
            window_ms: Q7_SIZE_MS,
            _v: std::marker::PhantomData,
            emit: |b: &Bid| b.clone(),
        })
        .name("q7 highest bids per window")
}

const Q8_SIZE_MS: i64 = 10_000;

/// What of a person or an auction crosses q8's exchange: `(person id or
/// seller, time, name)`, the name for a person and `None` for an auction.
type Q8Record = (u64, i64, Option<Str>);

/// Slots of [`SellersSent`]'s cache.
const Q8_SENT_SLOTS: usize = 1 << 12;

/// q8's first step, chained to the source: persons as `(id, time, name)`,
/// auctions as `(seller, time, None)`, everything else dropped. An auction
/// is dropped too when this subtask sent one of the same seller and window
/// since the cache slot of that seller last changed: both go to the same
/// downstream subtask, in order, where the first either marked the window
/// (another adds nothing) or was late (so is this one). A miss costs only a
/// record, so the cache is direct-mapped, bounded, and not checkpointed (a
/// restore empties it).
#[derive(Clone)]
struct SellersSent {
    /// Slot by seller hash: the last `(seller, window start)` sent.
    sent: Vec<Option<(u64, i64)>>,
}

impl SellersSent {
    fn slot(seller: u64) -> usize {
        const _: () = assert!(Q8_SENT_SLOTS.is_power_of_two());
        let bits = Q8_SENT_SLOTS.trailing_zeros();
        (seller.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - bits)) as usize
    }
}

impl OneInputOperator<Event, Q8Record> for SellersSent {
    fn process(&mut self, event: Event, out: &mut Emitter<'_, Q8Record>) {
        match event {
            Event::Person(p) => out.emit((p.id, p.date_time, Some(p.name))),
            Event::Auction(a) => {
                let start = a.date_time - a.date_time.rem_euclid(Q8_SIZE_MS);
                if self.sent.is_empty() {
                    self.sent = vec![None; Q8_SENT_SLOTS];
                }
                let slot = &mut self.sent[Self::slot(a.seller)];
                if *slot != Some((a.seller, start)) {
                    *slot = Some((a.seller, start));
                    out.emit((a.seller, a.date_time, None));
                }
            }
            Event::Bid(_) => {}
        }
    }
}

impl CheckpointedFunction for SellersSent {
    fn snapshot_state(&mut self, _checkpoint_id: u64) -> Result<Vec<Vec<u8>>, String> {
        Ok(Vec::new())
    }

    fn restore_state(&mut self, _restore: &OperatorStateRestore<'_>) -> Result<(), String> {
        self.sent.clear();
        Ok(())
    }
}

/// One window of q8's join: who registered in it, and who opened an auction
/// in it.
#[derive(Clone, Default)]
struct JoinWindow {
    /// `(id, name)` of every person registered in the window, as they came.
    persons: Vec<(u64, Str)>,
    /// Ids of the window's sellers.
    sellers: FxHashSet<u64>,
}

/// q8's join, behind a partitioning by person id: per open window the
/// persons in arrival order and a set of the sellers, matched when the
/// watermark passes the window's end; each `(id, name)` is emitted once
/// (`GROUP BY id, name`). Appending a person and inserting a seller into a
/// set of ids keeps the per-record work small and the state compact.
/// Records of windows already emitted are late and dropped, as the window
/// operator drops them.
#[derive(Clone)]
struct NewSellers {
    /// Window start -> its persons and sellers.
    windows: BTreeMap<i64, JoinWindow>,
    watermark: i64,
}

impl OneInputOperator<Q8Record, (u64, Str, i64)> for NewSellers {
    fn process(&mut self, (id, ts, name): Q8Record, _out: &mut Emitter<'_, (u64, Str, i64)>) {
        let start = ts - ts.rem_euclid(Q8_SIZE_MS);
        if start + Q8_SIZE_MS - 1 <= self.watermark {
            return;
        }
        // The latest window, almost always the record's, is the last entry.
        let window = match self.windows.last_entry() {
            Some(last) if *last.key() == start => last.into_mut(),
            _ => self.windows.entry(start).or_default(),
        };
        match name {
            Some(name) => window.persons.push((id, name)),
            None => {
                window.sellers.insert(id);
            }
        }
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Emitter<'_, (u64, Str, i64)>) {
        self.watermark = self.watermark.max(watermark);
        while let Some(entry) = self.windows.first_entry() {
            let start = *entry.key();
            if start + Q8_SIZE_MS - 1 > watermark {
                break;
            }
            let JoinWindow { persons, sellers } = entry.remove();
            let mut rows: Vec<(u64, Str)> = persons
                .into_iter()
                .filter(|(id, _)| sellers.contains(id))
                .collect();
            rows.sort_unstable();
            rows.dedup();
            for (id, name) in rows {
                out.emit((id, name, start));
            }
        }
    }
}

/// What one subtask of [`NewSellers`] checkpoints: its watermark and, per
/// open window, its persons and its sellers.
type NewSellersSnapshot = (i64, Vec<(i64, Vec<(u64, Str)>, Vec<u64>)>);

/// The entries are per person id, so a restore takes every subtask's
/// snapshot (union) and keeps the ids it owns, at any parallelism. The
/// restored watermark is the least of the old subtasks' (as for q5).
impl CheckpointedFunction for NewSellers {
    fn snapshot_state(&mut self, _checkpoint_id: u64) -> Result<Vec<Vec<u8>>, String> {
        let windows = self
            .windows
            .iter()
            .map(|(&start, w)| {
                (
                    start,
                    w.persons.clone(),
                    w.sellers.iter().copied().collect(),
                )
            })
            .collect();
        let snapshot: NewSellersSnapshot = (self.watermark, windows);
        Ok(vec![rheon_net::codec::encode_to_vec(&snapshot)])
    }

    fn restore_state(&mut self, restore: &OperatorStateRestore<'_>) -> Result<(), String> {
        self.windows.clear();
        let mut watermark = None::<i64>;
        for element in restore.union() {
            let (subtask_watermark, windows): NewSellersSnapshot =
                rheon_net::codec::decode_exact(element)
                    .map_err(|e| format!("the checkpointed q8 windows do not decode: {e}"))?;
            watermark = Some(watermark.map_or(subtask_watermark, |w| w.min(subtask_watermark)));
            for (start, persons, sellers) in windows {
                let window = self.windows.entry(start).or_default();
                window
                    .persons
                    .extend(persons.into_iter().filter(|(id, _)| restore.owns_key(id)));
                window
                    .sellers
                    .extend(sellers.into_iter().filter(|id| restore.owns_key(id)));
            }
        }
        self.watermark = watermark.unwrap_or(i64::MIN);
        self.windows
            .retain(|_, w| !w.persons.is_empty() || !w.sellers.is_empty());
        Ok(())
    }
}

/// q8: `(person id, name, window start)` for people who registered and
/// opened an auction as seller in the same 10 s tumbling window.
pub fn q8(events: &DataStream<Event>) -> DataStream<(u64, Str, i64)> {
    events
        .transform_checkpointed(
            "q8 persons (id, time, name), sellers (id, time) new to this subtask",
            SellersSent { sent: Vec::new() },
        )
        .key_by(|r: &Q8Record| r.0)
        .into_stream()
        .transform_checkpointed(
            "q8 new sellers per window",
            NewSellers {
                windows: BTreeMap::new(),
                watermark: i64::MIN,
            },
        )
}

/// q11: `(bidder, bids, session start, session end)` with a 10 s gap.
pub fn q11(events: &DataStream<Event>) -> DataStream<(u64, u64, i64, i64)> {
    bidders_and_times(events)
        .key_by(|b: &(u64, i64)| b.0)
        .window(WindowAssigner::session(TEN_SECONDS), |b: &(u64, i64)| b.1)
        .aggregate_with_merge(
            || 0u64,
            |count: &mut u64, _b: &(u64, i64)| *count += 1,
            |a: u64, b: u64| a + b,
            |bidder: &u64, w: TimeWindow, count: &u64| (*bidder, *count, w.start, w.end),
        )
        .name("q11 bids per bidder session")
}

/// Each bid's bidder and time, all that q11 and q12 read.
fn bidders_and_times(events: &DataStream<Event>) -> DataStream<(u64, i64)> {
    bid_fields(events, "bidders and times", |b| (b.bidder, b.date_time))
}

/// q12: `(bidder, bids, start, end)` per processing-time 10 s window.
pub fn q12(events: &DataStream<Event>) -> DataStream<(u64, u64, i64, i64)> {
    bidders_and_times(events)
        .key_by(|b: &(u64, i64)| b.0)
        .window_processing_time(WindowAssigner::tumbling(TEN_SECONDS))
        .aggregate(
            || 0u64,
            |count: &mut u64, _b: &(u64, i64)| *count += 1,
            |bidder: &u64, w: TimeWindow, count: &u64| (*bidder, *count, w.start, w.end),
        )
        .name("q12 bids per bidder and processing-time window")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::TaskResult;
    use crate::nexmark::auctions::bids;
    use crate::nexmark::model::{Auction, Person};
    use crate::nexmark::{generator_source, GeneratorConfig};
    use crate::runtime::collector::Collector;
    use crate::runtime::window::TimeWindow;
    use crate::{EngineConfig, StreamEnv, WatermarkStrategy};

    /// Collects what an operator emits.
    struct Rows<T>(Vec<T>);

    impl<T> Collector<T> for Rows<T> {
        fn collect(&mut self, record: T) -> TaskResult {
            self.0.push(record);
            Ok(())
        }
        fn finish(&mut self) -> TaskResult {
            Ok(())
        }
    }

    fn bid(price: u64, date_time: i64, bidder: u64) -> Event {
        Event::Bid(Bid {
            auction: 1,
            bidder,
            price,
            channel: Str::new(),
            url: Str::new(),
            date_time,
            extra: Str::new(),
        })
    }

    enum Step {
        Record(Event),
        Watermark(i64),
    }

    /// The hottest auctions of every window, plainly: counts per (window,
    /// auction), then the maximum per window.
    fn hot_auctions_plainly(bids: &[(u64, i64)]) -> Vec<(u64, u64, i64)> {
        let mut counts: BTreeMap<i64, BTreeMap<u64, u64>> = BTreeMap::new();
        for &(auction, ts) in bids {
            let mut start = ts - ts.rem_euclid(Q5_SLIDE_MS);
            while start > ts - Q5_SIZE_MS {
                *counts.entry(start).or_default().entry(auction).or_default() += 1;
                start -= Q5_SLIDE_MS;
            }
        }
        let mut rows = Vec::new();
        for (start, per_auction) in counts {
            let max = per_auction.values().copied().max().unwrap_or(0);
            rows.extend(
                per_auction
                    .into_iter()
                    .filter(|&(_, n)| n == max)
                    .map(|(a, n)| (a, n, start)),
            );
        }
        rows.sort_unstable();
        rows
    }

    /// With the watermark held back, more windows open than an auction's
    /// count array has slots: the rest are counted in per-window maps. A
    /// watermark midway fires some (and frees their slots for later
    /// windows); a snapshot restored into a fresh operator continues alike.
    #[test]
    fn hot_auctions_with_more_open_windows_than_slots_match_a_plain_count() {
        let bids: Vec<(u64, i64)> = (0..6_000u64)
            .map(|i| ((i * 7919) % 13 + (i % 3) * (i % 5), (i as i64) * 7))
            .collect();
        let mut op = HotAuctions::new();
        let mut rows = Rows(Vec::new());
        let half = bids.len() / 2;
        for (i, &(auction, ts)) in bids.iter().enumerate() {
            let mut out = Emitter::new(&mut rows);
            op.process((auction, ts), &mut out);
            if i == half {
                assert!(op.windows.values().any(|w| w.slot.is_none()), "no overflow");
                // Fire the windows that ended 12 s before this bid.
                op.on_watermark(ts - 12_000, &mut out);
                let snapshot = op.snapshot_state(1).unwrap();
                let (watermark, windows): HotAuctionsSnapshot =
                    rheon_net::codec::decode_exact(&snapshot[0]).unwrap();
                assert!(windows.len() > Q5_SLOTS, "{} windows open", windows.len());
                let windows = windows
                    .into_iter()
                    .map(|(start, counts)| (start, counts.into_iter().collect()))
                    .collect();
                let mut restored = HotAuctions::new();
                restored.rebuild(watermark, windows).unwrap();
                op = restored;
            }
            out.into_result().unwrap();
        }
        let mut out = Emitter::new(&mut rows);
        op.on_watermark(i64::MAX, &mut out);
        out.into_result().unwrap();
        let mut got: Vec<(u64, u64, i64)> = rows.0.into_iter().flat_map(|(_, _, r)| r).collect();
        got.sort_unstable();
        assert_eq!(got, hot_auctions_plainly(&bids));
        assert!(op.counts.is_empty() && op.windows.is_empty());
    }

    fn run_local_top_bids(steps: Vec<Step>) -> Vec<(i64, u64, Vec<u64>)> {
        let mut op = LocalTopBids {
            windows: BTreeMap::new(),
            watermark: i64::MIN,
        };
        let mut rows = Rows(Vec::new());
        for step in steps {
            let mut out = Emitter::new(&mut rows);
            match step {
                Step::Record(e) => op.process(e, &mut out),
                Step::Watermark(w) => op.on_watermark(w, &mut out),
            }
            out.into_result().unwrap();
        }
        rows.0
            .into_iter()
            .map(|(start, price, bids)| (start, price, bids.iter().map(|b| b.bidder).collect()))
            .collect()
    }

    #[test]
    fn local_top_bids_sends_the_new_top_at_each_watermark_and_late_bids_at_once() {
        use Step::*;
        let rows = run_local_top_bids(vec![
            Record(bid(5, 1_000, 1)),
            Record(bid(3, 2_000, 2)),
            Record(bid(5, 3_000, 3)),
            Watermark(3_000),
            // Lower than what was sent: not sent.
            Record(bid(4, 4_000, 4)),
            Watermark(4_000),
            // Higher: replaces downstream; the tie after it joins it.
            Record(bid(7, 5_000, 5)),
            Record(bid(7, 10_000, 6)),
            Record(bid(7, 6_000, 7)),
            Watermark(12_000),
            // Window [0, 10 s) is closed here: goes on alone, at once.
            Record(bid(1, 9_000, 8)),
            Watermark(25_000),
        ]);
        assert_eq!(
            rows,
            vec![
                (0, 5, vec![1, 3]),
                (0, 7, vec![5, 7]),
                (10_000, 7, vec![6]),
                (0, 1, vec![8]),
            ]
        );
    }

    #[test]
    fn sellers_sent_drops_repeated_sellers_of_a_window_only() {
        let auction = |seller: u64, date_time: i64| {
            Event::Auction(Auction {
                id: 0,
                item_name: Str::new(),
                description: Str::new(),
                initial_bid: 0,
                reserve: 0,
                date_time,
                expires: date_time,
                seller,
                category: 10,
                extra: Str::new(),
            })
        };
        let mut op = SellersSent { sent: Vec::new() };
        let mut rows = Rows(Vec::new());
        let mut out = Emitter::new(&mut rows);
        for e in [
            auction(7, 1_000),
            auction(7, 2_000),
            auction(8, 3_000),
            auction(7, 11_000),
            auction(7, 4_000),
            bid(1, 5_000, 7),
            Event::Person(Person {
                id: 7,
                name: "Ann".into(),
                email_address: Str::new(),
                credit_card: Str::new(),
                city: Str::new(),
                state: Str::new(),
                date_time: 6_000,
                extra: Str::new(),
            }),
        ] {
            op.process(e, &mut out);
        }
        out.into_result().unwrap();
        assert_eq!(
            rows.0,
            vec![
                (7, 1_000, None),
                (8, 3_000, None),
                (7, 11_000, None),
                // The slot held (7, 10 s) since: sent again, harmless.
                (7, 4_000, None),
                (7, 6_000, Some(Str::from("Ann"))),
            ]
        );
    }

    /// q7 as it was built on the window operator: the highest bids per
    /// window of 64 partitions of the auctions, then per window.
    fn q7_window_operator(events: &DataStream<Event>) -> DataStream<Bid> {
        bids(events)
            .key_by(|b: &Bid| b.auction % 64)
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
            .key_by(|r: &(i64, u64, Vec<Bid>)| r.0)
            .process(MaxPerWindow {
                window_ms: Q7_SIZE_MS,
                _v: std::marker::PhantomData,
                emit: |b: &Bid| b.clone(),
            })
    }

    /// The sorted rows of `plan` over generated events at parallelism 1,
    /// with a watermark that does not wait for out-of-order events (so some
    /// of them are late).
    fn rows<T: crate::Data + std::fmt::Debug>(
        plan: fn(&DataStream<Event>) -> DataStream<T>,
        config: &GeneratorConfig,
    ) -> Vec<String> {
        let env = StreamEnv::new(
            EngineConfig::default()
                .with_executors(2)
                .with_parallelism(1),
        );
        let events = generator_source(&env, config.clone()).assign_timestamps_and_watermarks(
            WatermarkStrategy::bounded_out_of_orderness(Duration::ZERO, |e: &Event| {
                e.timestamp_ms()
            }),
        );
        let handle = plan(&events).collect();
        env.execute("windowed plans").unwrap();
        let mut rows: Vec<String> = handle.take().iter().map(|r| format!("{r:?}")).collect();
        rows.sort();
        rows
    }

    /// The generated events in stream order, each with whether it is late:
    /// its window ended at or before the watermark that preceded it (the
    /// largest earlier time minus one, with no delay).
    fn events_with_lateness(config: &GeneratorConfig) -> Vec<(Event, bool)> {
        let mut largest = i64::MIN;
        crate::nexmark::events(config, 0..config.num_events)
            .map(|e| {
                let ts = e.timestamp_ms();
                let end = ts - ts.rem_euclid(10_000) + 10_000;
                let late = end - 1 <= largest.saturating_sub(1);
                largest = largest.max(ts);
                (e, late)
            })
            .collect()
    }

    /// q7 and q8 over a single stream, written plainly: late records are
    /// dropped.
    fn reference(config: &GeneratorConfig) -> (Vec<String>, Vec<String>) {
        let events = events_with_lateness(config);
        let on_time = || events.iter().filter(|(_, late)| !late).map(|(e, _)| e);
        let start = |ts: i64| ts - ts.rem_euclid(10_000);
        let mut max: BTreeMap<i64, u64> = BTreeMap::new();
        let mut sellers = std::collections::BTreeSet::new();
        for e in on_time() {
            match e {
                Event::Bid(b) => {
                    let m = max.entry(start(b.date_time)).or_default();
                    *m = (*m).max(b.price);
                }
                Event::Auction(a) => {
                    sellers.insert((a.seller, start(a.date_time)));
                }
                Event::Person(_) => {}
            }
        }
        let mut q7_rows = Vec::new();
        let mut q8_rows = std::collections::BTreeSet::new();
        for e in on_time() {
            match e {
                Event::Bid(b) if b.price == max[&start(b.date_time)] => {
                    q7_rows.push(format!("{b:?}"));
                }
                Event::Person(p) if sellers.contains(&(p.id, start(p.date_time))) => {
                    q8_rows.insert(format!("{:?}", (p.id, &p.name, start(p.date_time))));
                }
                _ => {}
            }
        }
        q7_rows.sort();
        (q7_rows, q8_rows.into_iter().collect())
    }

    /// With late records: q7 and q8 drop what a single window operator over
    /// the stream would drop, at parallelism 1 where that is deterministic.
    /// q7 also equals its former plan on the window operator. (The former
    /// q8 plan read persons and auctions through two channels, so whether a
    /// record was late depended on how the channels interleaved.)
    #[test]
    fn q7_and_q8_drop_late_records_as_a_window_operator_on_the_stream() {
        let config = GeneratorConfig {
            first_event_rate: 200,
            num_events: 30_000,
            out_of_order_group_size: 700,
            ..GeneratorConfig::default()
        };
        let late = events_with_lateness(&config)
            .iter()
            .filter(|(e, late)| *late && !matches!(e, Event::Bid(_)))
            .count();
        assert!(late > 100, "only {late} late persons and auctions");
        let (q7_expected, q8_expected) = reference(&config);
        assert!(q7_expected.len() >= 10 && q8_expected.len() >= 10);
        assert_eq!(rows(q7, &config), q7_expected);
        assert_eq!(rows(q7_window_operator, &config), q7_expected);
        assert_eq!(rows(q8, &config), q8_expected);
    }
}
