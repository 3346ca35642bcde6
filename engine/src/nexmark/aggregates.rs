//! Unbounded per-key aggregations and top-N over bids: q15, q16 and q17
//! (per-day statistics split by price rank), q18 (the last bid per bidder and
//! auction) and q19 (the top 10 bids per auction), with the semantics of the
//! Flink SQL of `nexmark-flink/src/main/resources/queries/q15.sql` to
//! `q19.sql`.
//!
//! Flink runs these as non-windowed aggregations and rank functions whose
//! result is a changelog: each input bid may retract and replace result rows.
//! Rheon emits only the new version of every result row that changed (the
//! `+I`/`+U` rows of Flink's changelog, without the `-U` retractions), at the
//! moment it changes, as q4 and q6 emit their running results. So **the last
//! row emitted per result key is Flink's final result**, and the rows of one
//! key are emitted in order by the one subtask that owns the key; rows of
//! different keys interleave arbitrarily, and at a parallelism above 1 the
//! intermediate rows depend on how the generators' streams interleave (the
//! final rows do not).
//!
//! Price ranks are those of the SQL's `FILTER` clauses: rank 1 `price <
//! 10_000`, rank 2 `10_000 <= price < 1_000_000`, rank 3 `price >=
//! 1_000_000`. `day` is `DATE_FORMAT(dateTime, 'yyyy-MM-dd')` in UTC, kept as
//! days since the Unix epoch and written as `yyyy-MM-dd`.
//!
//! - q15, key `day`, row `day,total_bids,rank1_bids,rank2_bids,rank3_bids,
//!   total_bidders,rank1_bidders,rank2_bidders,rank3_bidders,total_auctions,
//!   rank1_auctions,rank2_auctions,rank3_auctions`: counts of bids and
//!   distinct counts of bidders and auctions, overall and per rank. Every bid
//!   changes `total_bids`, so every bid emits its day's updated row. A day
//!   is one key, so one subtask aggregates all of a day's bids (Flink's
//!   benchmark splits the distinct aggregation into two phases instead).
//! - q16, key `(channel, day)`, row `channel,day,minute,` then q15's twelve
//!   counts; `minute` is `max(DATE_FORMAT(dateTime, 'HH:mm'))`, the `HH:mm`
//!   of the latest bid of the key. One updated row per bid.
//! - q17, key `(auction, day)`, row `auction,day,total_bids,rank1_bids,
//!   rank2_bids,rank3_bids,min_price,max_price,avg_price,sum_price`;
//!   `avg_price` is `sum / count` truncated, as SQL `AVG` of `BIGINT`. One
//!   updated row per bid.
//! - q18, key `(bidder, auction)`, row `auction,bidder,price,channel,url,
//!   dateTime,extra`: the key's bid with the latest `dateTime`, emitted when a
//!   bid becomes the latest. As Flink's row-time deduplication keeping the
//!   last row, a bid whose `dateTime` equals the current one replaces it (the
//!   later arrival wins); an older bid emits nothing.
//! - q19, key `(auction, rank_number)`, row `auction,bidder,price,channel,
//!   url,dateTime,extra,rank_number`: the auction's 10 highest bids, ranked
//!   from 1. When a bid enters at rank `r`, the rows of ranks `r` up to the
//!   last (at most 10) all changed and are emitted, as Flink's top-N with a
//!   rank number emits them. Order: price descending, then (for equal prices)
//!   earlier `dateTime`, then bidder, channel, url, extra ascending. Flink
//!   ranks equal prices by arrival; for an in-order stream that is the same
//!   except for equal prices within the same millisecond, and the total order
//!   makes the final top 10 independent of the parallelism.

use std::cmp::Ordering;
use std::fmt::Write as _;

use rustc_hash::FxHashMap;

use rheon_net::codec::{Codec, DecodeError};

use crate::api::functions::{KeyedContext, KeyedProcessFunction, ValueStateRef};
use crate::api::stream::DataStream;
use crate::runtime::collector::Emitter;

use super::auctions::{bids, slim_bids};
use super::model::{Bid, Event};
use super::text::Str;

/// Milliseconds per day, for `DATE_FORMAT(dateTime, 'yyyy-MM-dd')` in UTC.
const DAY_MS: i64 = 86_400_000;

/// Days since the Unix epoch (UTC) of a time in ms since the epoch.
pub fn day_of(date_time_ms: i64) -> i64 {
    date_time_ms.div_euclid(DAY_MS)
}

/// The price rank of the queries' `FILTER` clauses: 1, 2 or 3.
pub fn price_rank(price: u64) -> u8 {
    if price < 10_000 {
        1
    } else if price < 1_000_000 {
        2
    } else {
        3
    }
}

/// A count overall and per price rank.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ranked {
    pub total: u64,
    pub rank1: u64,
    pub rank2: u64,
    pub rank3: u64,
}
rheon_net::codec_struct!(Ranked {
    total,
    rank1,
    rank2,
    rank3
});

impl Ranked {
    fn add_rank(&mut self, rank: u8) {
        match rank {
            1 => self.rank1 += 1,
            2 => self.rank2 += 1,
            _ => self.rank3 += 1,
        }
    }

    /// Counts one element of price rank `rank`.
    fn add(&mut self, rank: u8) {
        self.total += 1;
        self.add_rank(rank);
    }

    fn write(&self, line: &mut String) {
        let _ = write!(
            line,
            "{},{},{},{}",
            self.total, self.rank1, self.rank2, self.rank3
        );
    }
}

/// The twelve counts of q15 and q16.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BidStats {
    pub bids: Ranked,
    /// Distinct bidders.
    pub bidders: Ranked,
    /// Distinct auctions.
    pub auctions: Ranked,
}
rheon_net::codec_struct!(BidStats {
    bids,
    bidders,
    auctions
});

impl BidStats {
    fn write(&self, line: &mut String) {
        self.bids.write(line);
        line.push(',');
        self.bidders.write(line);
        line.push(',');
        self.auctions.write(line);
    }
}

/// The ranks in which each id was seen: bit `r` is set once the id had a bid
/// of rank `r`. One hash lookup per bid keeps all four distinct counts.
#[derive(Clone, Default)]
pub struct SeenRanks(FxHashMap<u64, u8>);

impl SeenRanks {
    /// Records `id` with a bid of `rank`, counting it in `distinct` the first
    /// time overall and the first time in `rank`.
    fn insert(&mut self, id: u64, rank: u8, distinct: &mut Ranked) {
        let seen = self.0.entry(id).or_insert(0);
        if *seen == 0 {
            distinct.total += 1;
        }
        let bit = 1u8 << rank;
        if *seen & bit == 0 {
            *seen |= bit;
            distinct.add_rank(rank);
        }
    }
}

/// Encoded as the entry count (`u64`) and the `(id, ranks)` pairs.
impl Codec for SeenRanks {
    fn encoded_len(&self) -> usize {
        8 + self.0.len() * 9
    }
    fn encode(&self, out: &mut [u8]) {
        (self.0.len() as u64).encode(&mut out[..8]);
        let mut at = 8;
        for (id, ranks) in &self.0 {
            id.encode(&mut out[at..at + 8]);
            ranks.encode(&mut out[at + 8..at + 9]);
            at += 9;
        }
    }
    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        let len = u64::decode(input)?;
        if len > (input.len() / 9) as u64 {
            return Err(DecodeError::Invalid {
                expected: "distinct id set",
                detail: "entry count exceeds the remaining bytes (9 per entry)",
                remaining_bytes: input.len(),
            });
        }
        let mut map = FxHashMap::default();
        map.reserve(len as usize);
        for _ in 0..len {
            let id = u64::decode(input)?;
            let ranks = u8::decode(input)?;
            map.insert(id, ranks);
        }
        Ok(SeenRanks(map))
    }
}

/// Per key of q15 and q16: the counts, the distinct ids seen, and the latest
/// bid time (q16's `minute`).
#[derive(Clone, Default)]
pub struct DistinctState {
    stats: BidStats,
    bidders: SeenRanks,
    auctions: SeenRanks,
    latest_ms: i64,
}
rheon_net::codec_struct!(DistinctState {
    stats,
    bidders,
    auctions,
    latest_ms
});

impl DistinctState {
    fn add(&mut self, bid: &Bid) {
        let rank = price_rank(bid.price);
        if self.stats.bids.total == 0 || bid.date_time > self.latest_ms {
            self.latest_ms = bid.date_time;
        }
        self.stats.bids.add(rank);
        self.bidders
            .insert(bid.bidder, rank, &mut self.stats.bidders);
        self.auctions
            .insert(bid.auction, rank, &mut self.stats.auctions);
    }
}

fn state_of<'s, S: Clone + Codec + Default + Send + Sync + 'static>(
    state: &'s mut ValueStateRef<'_, S>,
) -> &'s mut S {
    if state.value().is_none() {
        state.update(S::default());
    }
    state.value_mut().expect("set above")
}

/// q15's aggregation per day.
#[derive(Clone)]
struct PerDay;

impl KeyedProcessFunction<i64, Bid, (i64, BidStats)> for PerDay {
    type State = DistinctState;

    fn process_element(
        &mut self,
        day: &i64,
        bid: Bid,
        state: &mut ValueStateRef<'_, DistinctState>,
        _ctx: &mut KeyedContext<'_, i64>,
        out: &mut Emitter<'_, (i64, BidStats)>,
    ) {
        let s = state_of(state);
        s.add(&bid);
        out.emit((*day, s.stats));
    }
}

/// q15: `(day, counts)`, the day's updated row after every bid.
pub fn q15(events: &DataStream<Event>) -> DataStream<(i64, BidStats)> {
    slim_bids(events)
        .key_by(|b: &Bid| day_of(b.date_time))
        .process(PerDay)
        .name("q15 bid statistics per day")
}

/// A q16 row: `(channel, day, latest bid time in ms, counts)`.
pub type Q16Row = (Str, i64, i64, BidStats);

/// q16's aggregation per channel and day.
#[derive(Clone)]
struct PerChannelDay;

impl KeyedProcessFunction<(Str, i64), Bid, Q16Row> for PerChannelDay {
    type State = DistinctState;

    fn process_element(
        &mut self,
        key: &(Str, i64),
        bid: Bid,
        state: &mut ValueStateRef<'_, DistinctState>,
        _ctx: &mut KeyedContext<'_, (Str, i64)>,
        out: &mut Emitter<'_, Q16Row>,
    ) {
        let s = state_of(state);
        s.add(&bid);
        out.emit((key.0.clone(), key.1, s.latest_ms, s.stats));
    }
}

/// q16: the `(channel, day)`'s updated row after every bid.
pub fn q16(events: &DataStream<Event>) -> DataStream<Q16Row> {
    bids(events)
        .map(|b: Bid| Bid {
            url: Str::new(),
            extra: Str::new(),
            ..b
        })
        .name("bids without url and extra")
        .key_by(|b: &Bid| (b.channel.clone(), day_of(b.date_time)))
        .process(PerChannelDay)
        .name("q16 bid statistics per channel and day")
}

/// q17's aggregate per auction and day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PriceStats {
    pub bids: Ranked,
    pub min_price: u64,
    pub max_price: u64,
    pub sum_price: u64,
}
rheon_net::codec_struct!(PriceStats {
    bids,
    min_price,
    max_price,
    sum_price
});

impl PriceStats {
    fn add(&mut self, price: u64) {
        if self.bids.total == 0 {
            self.min_price = price;
            self.max_price = price;
        } else {
            self.min_price = self.min_price.min(price);
            self.max_price = self.max_price.max(price);
        }
        self.bids.add(price_rank(price));
        self.sum_price += price;
    }

    /// SQL `AVG` of `BIGINT`: the truncated quotient.
    pub fn avg_price(&self) -> u64 {
        self.sum_price / self.bids.total.max(1)
    }
}

/// q17's aggregation per auction and day.
#[derive(Clone)]
struct PerAuctionDay;

impl KeyedProcessFunction<(u64, i64), Bid, (u64, i64, PriceStats)> for PerAuctionDay {
    type State = PriceStats;

    fn process_element(
        &mut self,
        key: &(u64, i64),
        bid: Bid,
        state: &mut ValueStateRef<'_, PriceStats>,
        _ctx: &mut KeyedContext<'_, (u64, i64)>,
        out: &mut Emitter<'_, (u64, i64, PriceStats)>,
    ) {
        let s = state_of(state);
        s.add(bid.price);
        out.emit((key.0, key.1, *s));
    }
}

/// q17: `(auction, day, statistics)`, the key's updated row after every bid.
pub fn q17(events: &DataStream<Event>) -> DataStream<(u64, i64, PriceStats)> {
    slim_bids(events)
        .key_by(|b: &Bid| (b.auction, day_of(b.date_time)))
        .process(PerAuctionDay)
        .name("q17 price statistics per auction and day")
}

/// q18's deduplication keeping the latest bid.
#[derive(Clone)]
struct LatestBid;

impl KeyedProcessFunction<(u64, u64), Bid, Bid> for LatestBid {
    type State = Bid;

    fn process_element(
        &mut self,
        _key: &(u64, u64),
        bid: Bid,
        state: &mut ValueStateRef<'_, Bid>,
        _ctx: &mut KeyedContext<'_, (u64, u64)>,
        out: &mut Emitter<'_, Bid>,
    ) {
        match state.value_mut() {
            Some(latest) if bid.date_time < latest.date_time => {}
            Some(latest) => {
                *latest = bid;
                out.emit(latest.clone());
            }
            None => {
                out.emit(bid.clone());
                state.update(bid);
            }
        }
    }
}

/// q18: the latest bid per `(bidder, auction)`, each time it changes.
pub fn q18(events: &DataStream<Event>) -> DataStream<Bid> {
    bids(events)
        .key_by(|b: &Bid| (b.bidder, b.auction))
        .process(LatestBid)
        .name("q18 last bid per bidder and auction")
}

/// q19's bound on ranks.
pub const TOP_N: usize = 10;

/// q19's order: `a` before `b` when it ranks higher (see the module doc).
pub fn rank_order(a: &Bid, b: &Bid) -> Ordering {
    b.price
        .cmp(&a.price)
        .then(a.date_time.cmp(&b.date_time))
        .then(a.bidder.cmp(&b.bidder))
        .then_with(|| a.channel.cmp(&b.channel))
        .then_with(|| a.url.cmp(&b.url))
        .then_with(|| a.extra.cmp(&b.extra))
}

/// Per auction: its best bids, at most [`TOP_N`], in [`rank_order`].
#[derive(Clone, Default)]
pub struct TopBids {
    bids: Vec<Bid>,
}
rheon_net::codec_struct!(TopBids { bids });

/// q19's top-N per auction.
#[derive(Clone)]
struct TopTen;

impl KeyedProcessFunction<u64, Bid, (Bid, u64)> for TopTen {
    type State = TopBids;

    fn process_element(
        &mut self,
        _auction: &u64,
        bid: Bid,
        state: &mut ValueStateRef<'_, TopBids>,
        _ctx: &mut KeyedContext<'_, u64>,
        out: &mut Emitter<'_, (Bid, u64)>,
    ) {
        let top = &mut state_of(state).bids;
        // Equal bids keep their arrival order: the new one goes after them.
        let at = top.partition_point(|b| rank_order(b, &bid) != Ordering::Greater);
        if at >= TOP_N {
            return;
        }
        if top.len() == TOP_N {
            top.pop();
        }
        top.insert(at, bid);
        for (i, b) in top.iter().enumerate().skip(at) {
            out.emit((b.clone(), i as u64 + 1));
        }
    }
}

/// q19: `(bid, rank_number)` for every rank of an auction whose bid changed.
pub fn q19(events: &DataStream<Event>) -> DataStream<(Bid, u64)> {
    bids(events)
        .key_by(|b: &Bid| b.auction)
        .process(TopTen)
        .name("q19 top 10 bids per auction")
}

/// `yyyy-MM-dd` of a day number since the Unix epoch (proleptic Gregorian).
pub fn write_day(day: i64, line: &mut String) {
    let (y, m, d) = super::json::civil_from_days(day);
    let _ = write!(line, "{y:04}-{m:02}-{d:02}");
}

/// A q15 row.
pub fn format_q15(row: &(i64, BidStats), line: &mut String) {
    write_day(row.0, line);
    line.push(',');
    row.1.write(line);
}

/// A q16 row; `minute` is the `HH:mm` (UTC) of the latest bid time.
pub fn format_q16(row: &Q16Row, line: &mut String) {
    let (channel, day, latest_ms, stats) = row;
    line.push_str(channel.as_str());
    line.push(',');
    write_day(*day, line);
    let minutes = latest_ms.rem_euclid(DAY_MS) / 60_000;
    let _ = write!(line, ",{:02}:{:02},", minutes / 60, minutes % 60);
    stats.write(line);
}

/// A q17 row.
pub fn format_q17(row: &(u64, i64, PriceStats), line: &mut String) {
    let (auction, day, s) = row;
    let _ = write!(line, "{auction},");
    write_day(*day, line);
    line.push(',');
    s.bids.write(line);
    let _ = write!(
        line,
        ",{},{},{},{}",
        s.min_price,
        s.max_price,
        s.avg_price(),
        s.sum_price
    );
}

/// A q18 row: the bid's columns.
pub fn format_q18(b: &Bid, line: &mut String) {
    let _ = write!(
        line,
        "{},{},{},{},{},{},{}",
        b.auction, b.bidder, b.price, b.channel, b.url, b.date_time, b.extra
    );
}

/// A q19 row: the bid's columns and its rank.
pub fn format_q19(row: &(Bid, u64), line: &mut String) {
    format_q18(&row.0, line);
    let _ = write!(line, ",{}", row.1);
}
