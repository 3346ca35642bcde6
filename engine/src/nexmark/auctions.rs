//! Queries that join auctions with their bids: q4, q6, q9 (the winning bid
//! of each auction, closed at its expiry) and q20 (bids of category-10
//! auctions, an unbounded join).
//!
//! Winning bids follow the SQL of `nexmark-flink` (q9): per auction, among the
//! bids whose time lies in `[auction.dateTime, auction.expires]`, the highest
//! price, ties to the earliest bid. Flink keeps that top-1 as an updating
//! result; here the winner is emitted once, when the watermark passes the
//! auction's expiry (Beam's formulation), which is the same final result
//! without retractions. A bid may precede its auction (the generator's
//! auction-id lead), so bids of unknown auctions wait until the watermark
//! passes their own time: after that no auction they could match can arrive.
//!
//! - q4: per category, the average (integer, as SQL `AVG` of `BIGINT`) of the
//!   winning prices of its closed auctions, updated as auctions close.
//! - q6: per seller, the average winning price of its last 10 closed auctions,
//!   updated as auctions close, in expiry order.
//! - q20: every bid joined with its auction when the auction's category is 10.

use std::collections::VecDeque;

use rheon_net::codec::{Codec, DecodeError};

use crate::api::connect::KeyedCoProcessFunction;
use crate::api::functions::{KeyedContext, KeyedProcessFunction, ValueStateRef};
use crate::api::stream::DataStream;
use crate::runtime::collector::Emitter;
use crate::runtime::timers::TimeDomain;

use super::model::{Auction, Bid, Event};
use super::text::Str;

/// The auctions of an event stream.
pub fn auctions(events: &DataStream<Event>) -> DataStream<Auction> {
    events
        .flat_map(|e: Event| match e {
            Event::Auction(a) => Some(a),
            _ => None,
        })
        .name("auctions")
}

/// The bids of an event stream.
pub fn bids(events: &DataStream<Event>) -> DataStream<Bid> {
    events
        .flat_map(|e: Event| match e {
            Event::Bid(b) => Some(b),
            _ => None,
        })
        .name("bids")
}

/// Whether `candidate` beats `best`: higher price, then earlier.
fn better(candidate: &Bid, best: Option<&Bid>) -> bool {
    match best {
        None => true,
        Some(b) => {
            candidate.price > b.price
                || (candidate.price == b.price && candidate.date_time < b.date_time)
        }
    }
}

fn in_auction(bid: &Bid, auction: &Auction) -> bool {
    bid.date_time >= auction.date_time && bid.date_time <= auction.expires
}

/// Per auction id: the auction once it arrived, its best bid so far, and the
/// bids that came before it.
#[derive(Clone, Default)]
pub struct AuctionState {
    auction: Option<Auction>,
    best: Option<Bid>,
    early_bids: Vec<Bid>,
}
rheon_net::codec_struct!(AuctionState {
    auction,
    best,
    early_bids
});

fn state_of<'s>(state: &'s mut ValueStateRef<'_, AuctionState>) -> &'s mut AuctionState {
    if state.value().is_none() {
        state.update(AuctionState::default());
    }
    state.value_mut().expect("set above")
}

#[derive(Clone)]
struct WinningBid;

impl KeyedCoProcessFunction<u64, Auction, Bid, (Auction, Bid)> for WinningBid {
    type State = AuctionState;

    fn process_element1(
        &mut self,
        _id: &u64,
        auction: Auction,
        state: &mut ValueStateRef<'_, AuctionState>,
        ctx: &mut KeyedContext<'_, u64>,
        _out: &mut Emitter<'_, (Auction, Bid)>,
    ) {
        let s = state_of(state);
        for bid in std::mem::take(&mut s.early_bids) {
            if in_auction(&bid, &auction) && better(&bid, s.best.as_ref()) {
                s.best = Some(bid);
            }
        }
        ctx.register_event_time_timer(auction.expires);
        s.auction = Some(auction);
    }

    fn process_element2(
        &mut self,
        _id: &u64,
        bid: Bid,
        state: &mut ValueStateRef<'_, AuctionState>,
        ctx: &mut KeyedContext<'_, u64>,
        _out: &mut Emitter<'_, (Auction, Bid)>,
    ) {
        let s = state_of(state);
        match &s.auction {
            Some(auction) => {
                if in_auction(&bid, auction) && better(&bid, s.best.as_ref()) {
                    s.best = Some(bid);
                }
            }
            None => {
                ctx.register_event_time_timer(bid.date_time);
                s.early_bids.push(bid);
            }
        }
    }

    fn on_timer(
        &mut self,
        _id: &u64,
        timestamp: i64,
        _domain: TimeDomain,
        state: &mut ValueStateRef<'_, AuctionState>,
        _ctx: &mut KeyedContext<'_, u64>,
        out: &mut Emitter<'_, (Auction, Bid)>,
    ) {
        let Some(s) = state.value_mut() else { return };
        match &s.auction {
            Some(auction) if auction.expires <= timestamp => {
                if let Some(best) = s.best.take() {
                    out.emit((auction.clone(), best));
                }
                state.clear();
            }
            Some(_) => {}
            None => {
                // No auction these bids could match can arrive any more.
                s.early_bids.retain(|b| b.date_time > timestamp);
                if s.early_bids.is_empty() {
                    state.clear();
                }
            }
        }
    }
}

/// The winning bid of every auction that had one, emitted when the auction
/// closes: `(auction, bid)`.
pub fn winning_bids(events: &DataStream<Event>) -> DataStream<(Auction, Bid)> {
    winning_bids_of(auctions(events), bids(events))
}

/// Winning bids carrying only the fields q4 and q6 read (ids, category,
/// seller, times, price): the strings are dropped before the exchange, so
/// the keyed exchange moves a few dozen bytes per bid instead of ~100 and
/// decoding allocates nothing.
fn winning_prices(events: &DataStream<Event>) -> DataStream<(Auction, Bid)> {
    winning_bids_of(slim_auctions(events), slim_bids(events))
}

/// Auctions without their strings (for queries that read only numbers).
pub fn slim_auctions(events: &DataStream<Event>) -> DataStream<Auction> {
    auctions(events)
        .map(|a: Auction| Auction {
            item_name: Str::new(),
            description: Str::new(),
            extra: Str::new(),
            ..a
        })
        .name("auctions without strings")
}

/// Bids without their strings (for queries that read only numbers): what
/// crosses a keyed exchange is then a few dozen bytes, decoded without
/// allocating.
pub fn slim_bids(events: &DataStream<Event>) -> DataStream<Bid> {
    bids(events)
        .map(|b: Bid| Bid {
            channel: Str::new(),
            url: Str::new(),
            extra: Str::new(),
            ..b
        })
        .name("bids without strings")
}

fn winning_bids_of(
    auctions: DataStream<Auction>,
    bids: DataStream<Bid>,
) -> DataStream<(Auction, Bid)> {
    auctions
        .connect(&bids)
        .key_by(|a: &Auction| a.id, |b: &Bid| b.auction)
        .process(WinningBid)
        .name("winning bid per auction")
}

/// q9: the winning bid of every auction.
pub fn q9(events: &DataStream<Event>) -> DataStream<(Auction, Bid)> {
    winning_bids(events)
}

/// Per key: closed auctions not yet counted, as `(expires, auction id,
/// price)`, taken in expiry order once the watermark passes them (so the
/// running results do not depend on which upstream subtask closed first);
/// and the running aggregate.
#[derive(Clone, Default)]
pub struct ClosedAuctions<A> {
    pending: Vec<(i64, u64, u64)>,
    aggregate: A,
}
rheon_net::codec_struct!(ClosedAuctions<A> { pending, aggregate });

/// A running aggregate over winning prices, in expiry order.
pub trait PriceAggregate: Clone + Default + Codec + Send + Sync + 'static {
    /// Adds a price; returns the new result.
    fn add(&mut self, price: u64) -> u64;
}

/// q4's average of all prices.
#[derive(Clone, Default)]
pub struct Average {
    sum: u64,
    count: u64,
}
rheon_net::codec_struct!(Average { sum, count });

impl PriceAggregate for Average {
    fn add(&mut self, price: u64) -> u64 {
        self.sum += price;
        self.count += 1;
        self.sum / self.count
    }
}

/// q6's average of the last 10 prices.
#[derive(Clone, Default)]
pub struct LastTenAverage {
    last: VecDeque<u64>,
}
rheon_net::codec_struct!(LastTenAverage { last });

impl PriceAggregate for LastTenAverage {
    fn add(&mut self, price: u64) -> u64 {
        if self.last.len() == 10 {
            self.last.pop_front();
        }
        self.last.push_back(price);
        self.last.iter().sum::<u64>() / self.last.len() as u64
    }
}

struct InExpiryOrder<A>(std::marker::PhantomData<fn() -> A>);

impl<A> Clone for InExpiryOrder<A> {
    fn clone(&self) -> Self {
        InExpiryOrder(std::marker::PhantomData)
    }
}

impl<A: PriceAggregate> KeyedProcessFunction<u64, (Auction, Bid), (u64, u64)> for InExpiryOrder<A> {
    type State = ClosedAuctions<A>;

    fn process_element(
        &mut self,
        _key: &u64,
        (auction, bid): (Auction, Bid),
        state: &mut ValueStateRef<'_, Self::State>,
        ctx: &mut KeyedContext<'_, u64>,
        _out: &mut Emitter<'_, (u64, u64)>,
    ) {
        if state.value().is_none() {
            state.update(ClosedAuctions::default());
        }
        let s = state.value_mut().expect("set above");
        s.pending.push((auction.expires, auction.id, bid.price));
        ctx.register_event_time_timer(auction.expires);
    }

    fn on_timer(
        &mut self,
        key: &u64,
        timestamp: i64,
        _domain: TimeDomain,
        state: &mut ValueStateRef<'_, Self::State>,
        _ctx: &mut KeyedContext<'_, u64>,
        out: &mut Emitter<'_, (u64, u64)>,
    ) {
        let Some(s) = state.value_mut() else { return };
        s.pending.sort_unstable();
        let due = s.pending.partition_point(|p| p.0 <= timestamp);
        for (_, _, price) in s.pending.drain(..due) {
            out.emit((*key, s.aggregate.add(price)));
        }
    }
}

/// q4: `(category, average winning price)` (integer division, as SQL `AVG`
/// of `BIGINT`), updated per closed auction in expiry order (ties by id).
pub fn q4(events: &DataStream<Event>) -> DataStream<(u64, u64)> {
    winning_prices(events)
        .key_by(|w: &(Auction, Bid)| w.0.category)
        .process(InExpiryOrder::<Average>(std::marker::PhantomData))
        .name("q4 average per category")
}

/// q6: `(seller, average winning price of its last 10 closed auctions)`,
/// updated per closed auction in expiry order (ties by auction id).
pub fn q6(events: &DataStream<Event>) -> DataStream<(u64, u64)> {
    winning_prices(events)
        .key_by(|w: &(Auction, Bid)| w.0.seller)
        .process(InExpiryOrder::<LastTenAverage>(std::marker::PhantomData))
        .name("q6 average of the last 10 per seller")
}

/// Per auction id for q20.
#[derive(Clone)]
pub enum JoinState {
    /// The auction has not arrived; its bids so far.
    Unknown(Vec<Bid>),
    /// An auction of another category: its bids are dropped.
    OtherCategory,
    Category10(Auction),
}

impl Codec for JoinState {
    fn encoded_len(&self) -> usize {
        1 + match self {
            JoinState::Unknown(bids) => bids.encoded_len(),
            JoinState::OtherCategory => 0,
            JoinState::Category10(auction) => auction.encoded_len(),
        }
    }
    fn encode(&self, out: &mut [u8]) {
        match self {
            JoinState::Unknown(bids) => {
                out[0] = 0;
                bids.encode(&mut out[1..]);
            }
            JoinState::OtherCategory => out[0] = 1,
            JoinState::Category10(auction) => {
                out[0] = 2;
                auction.encode(&mut out[1..]);
            }
        }
    }
    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        match u8::decode(input)? {
            0 => Vec::decode(input).map(JoinState::Unknown),
            1 => Ok(JoinState::OtherCategory),
            2 => Auction::decode(input).map(JoinState::Category10),
            _ => Err(DecodeError::Invalid {
                expected: "q20 join state tag",
                detail: "tag byte is not 0 (unknown), 1 (other category) or 2 (category 10)",
                remaining_bytes: input.len(),
            }),
        }
    }
}

#[derive(Clone)]
struct BidsOfCategory10;

impl KeyedCoProcessFunction<u64, Auction, Bid, (Bid, Auction)> for BidsOfCategory10 {
    type State = JoinState;

    fn process_element1(
        &mut self,
        _id: &u64,
        auction: Auction,
        state: &mut ValueStateRef<'_, JoinState>,
        _ctx: &mut KeyedContext<'_, u64>,
        out: &mut Emitter<'_, (Bid, Auction)>,
    ) {
        if auction.category != 10 {
            state.update(JoinState::OtherCategory);
            return;
        }
        if let Some(JoinState::Unknown(early)) = state.value_mut() {
            for bid in std::mem::take(early) {
                out.emit((bid, auction.clone()));
            }
        }
        state.update(JoinState::Category10(auction));
    }

    fn process_element2(
        &mut self,
        _id: &u64,
        bid: Bid,
        state: &mut ValueStateRef<'_, JoinState>,
        _ctx: &mut KeyedContext<'_, u64>,
        out: &mut Emitter<'_, (Bid, Auction)>,
    ) {
        match state.value_mut() {
            Some(JoinState::Category10(auction)) => out.emit((bid, auction.clone())),
            Some(JoinState::OtherCategory) => {}
            Some(JoinState::Unknown(early)) => early.push(bid),
            None => state.update(JoinState::Unknown(vec![bid])),
        }
    }
}

/// q20: `(bid, auction)` for every bid of an auction of category 10. As the
/// SQL's unbounded inner join, auctions are kept for the whole run (other
/// categories as a marker only); bids are kept only while their auction is
/// unknown (the join key is the auction's unique id, so a later bid needs
/// only the auction).
pub fn q20(events: &DataStream<Event>) -> DataStream<(Bid, Auction)> {
    auctions(events)
        .connect(&bids(events))
        .key_by(|a: &Auction| a.id, |b: &Bid| b.auction)
        .process(BidsOfCategory10)
        .name("q20 join bid.auction = auction.id, category 10")
}
