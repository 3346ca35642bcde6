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
//! Winning bids take two operators. A split chained to the source turns each
//! event into an auction or a bid, projected to the fields the query reads,
//! and sends a bid only if no bid of the same auction and the same time with
//! at least its price went before it from the same subtask (see
//! [`SentBids`]); such a bid can never win, because the one before it is in
//! the auction's window exactly when it is, and ties go to the earlier
//! arrival. This assumes what Nexmark guarantees: an auction id is used by
//! one auction. The keyed operator then keeps, per auction, the best bid so
//! far (or the bids of an auction not yet seen) and emits at the expiry; its
//! keys are buckets of consecutive auction ids, so that the auctions open at
//! one time share a few keys and timers (see [`AUCTIONS_PER_BUCKET`]).
//! What crosses that exchange is projected per query: q4 and q6 carry
//! numbers only; q9 carries whole auctions, decoded with one buffer for
//! their strings ([`AuctionRow`]), and bids without `channel` and `url`,
//! which its row does not print, decoded without allocating ([`BidRow`]).
//!
//! - q4: per category, the average (integer, as SQL `AVG` of `BIGINT`) of the
//!   winning prices of its closed auctions, updated as auctions close.
//! - q6: per seller, the average winning price of its last 10 closed auctions,
//!   updated as auctions close, in expiry order.
//! - q20: every bid joined with its auction when the auction's category is 10.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::marker::PhantomData;

use rheon_net::codec::{decode_str, Codec, DecodeError};

use crate::api::connect::KeyedCoProcessFunction;
use crate::api::either::Either;
use crate::api::functions::{
    CheckpointedFunction, KeyedContext, KeyedProcessFunction, OneInputOperator,
    OperatorStateRestore, ValueStateRef,
};
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

/// What `f` keeps of each bid, for queries that read a field or two: only
/// that crosses their keyed exchange, not a whole bid.
pub fn bid_fields<T, F>(events: &DataStream<Event>, name: &str, f: F) -> DataStream<T>
where
    T: crate::graph::stream_graph::Data,
    F: Fn(&Bid) -> T + Clone + Send + Sync + 'static,
{
    events
        .flat_map(move |e: Event| match e {
            Event::Bid(b) => Some(f(&b)),
            _ => None,
        })
        .name(name)
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

/// What the winning bid reads of an auction: its id and when it is open.
trait AuctionWindow {
    fn id(&self) -> u64;
    fn opens(&self) -> i64;
    fn expires(&self) -> i64;
}

/// What the winning bid reads of a bid: its auction, price and time.
trait BidOffer {
    fn auction(&self) -> u64;
    fn price(&self) -> u64;
    fn date_time(&self) -> i64;
}

impl AuctionWindow for Auction {
    fn id(&self) -> u64 {
        self.id
    }
    fn opens(&self) -> i64 {
        self.date_time
    }
    fn expires(&self) -> i64 {
        self.expires
    }
}

impl BidOffer for Bid {
    fn auction(&self) -> u64 {
        self.auction
    }
    fn price(&self) -> u64 {
        self.price
    }
    fn date_time(&self) -> i64 {
        self.date_time
    }
}

/// The fields of an auction that q4 and q6 read. It crosses the keyed
/// exchange in 40 bytes (an `Auction` without strings takes 76) and keeps
/// the per-auction state small.
#[derive(Clone, Debug, PartialEq, Eq)]
struct AuctionTimes {
    id: u64,
    date_time: i64,
    expires: i64,
    seller: u64,
    category: u64,
}
rheon_net::codec_struct!(AuctionTimes {
    id,
    date_time,
    expires,
    seller,
    category
});

impl AuctionTimes {
    fn of(a: Auction) -> AuctionTimes {
        AuctionTimes {
            id: a.id,
            date_time: a.date_time,
            expires: a.expires,
            seller: a.seller,
            category: a.category,
        }
    }
}

impl AuctionWindow for AuctionTimes {
    fn id(&self) -> u64 {
        self.id
    }
    fn opens(&self) -> i64 {
        self.date_time
    }
    fn expires(&self) -> i64 {
        self.expires
    }
}

/// The fields of a bid that q4 and q6 read (24 bytes on the exchange).
#[derive(Clone, Debug, PartialEq, Eq)]
struct BidPrice {
    auction: u64,
    price: u64,
    date_time: i64,
}
rheon_net::codec_struct!(BidPrice {
    auction,
    price,
    date_time
});

impl BidPrice {
    fn of(b: Bid) -> BidPrice {
        BidPrice {
            auction: b.auction,
            price: b.price,
            date_time: b.date_time,
        }
    }
}

impl BidOffer for BidPrice {
    fn auction(&self) -> u64 {
        self.auction
    }
    fn price(&self) -> u64 {
        self.price
    }
    fn date_time(&self) -> i64 {
        self.date_time
    }
}

/// An auction as q9 carries it, decoded with one shared buffer for its
/// strings. Decoding an `Auction` field by field gives each string longer
/// than a `Str` holds inline (the description, nearly always, and the
/// padding, hundreds of bytes) its own `String` and `Arc`: four allocations
/// per auction instead of two.
#[derive(Clone, Debug)]
struct AuctionRow(Auction);

/// `texts` as `Str`s: inline where they fit, else slices of one shared
/// buffer holding all the long ones.
fn share_texts<const N: usize>(texts: [&str; N]) -> [Str; N] {
    let is_long = |text: &str| text.len() > Str::INLINE_CAPACITY_BYTES;
    let long_bytes: usize = texts.iter().filter(|t| is_long(t)).map(|t| t.len()).sum();
    let mut buf = String::with_capacity(long_bytes);
    let starts: [usize; N] = std::array::from_fn(|i| {
        let start = buf.len();
        if is_long(texts[i]) {
            buf.push_str(texts[i]);
        }
        start
    });
    // No allocation at all when every text is short.
    let buf = (long_bytes > 0).then(|| std::sync::Arc::new(buf));
    std::array::from_fn(|i| match (Str::inline(texts[i]), &buf) {
        (Some(s), _) => s,
        (None, Some(buf)) => Str::from_shared(buf.clone(), starts[i]..starts[i] + texts[i].len()),
        (None, None) => unreachable!("a text too long to be inline counts in long_bytes"),
    })
}

impl Codec for AuctionRow {
    fn encoded_len(&self) -> usize {
        self.0.encoded_len()
    }

    fn encode(&self, out: &mut [u8]) {
        self.0.encode(out)
    }

    /// As `Auction`'s decoding (fields in declaration order), with the
    /// strings made by [`share_texts`].
    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        let id = u64::decode(input)?;
        let item_name = decode_str(input)?;
        let description = decode_str(input)?;
        let initial_bid = u64::decode(input)?;
        let reserve = u64::decode(input)?;
        let date_time = i64::decode(input)?;
        let expires = i64::decode(input)?;
        let seller = u64::decode(input)?;
        let category = u64::decode(input)?;
        let extra = decode_str(input)?;
        let [item_name, description, extra] = share_texts([item_name, description, extra]);
        Ok(AuctionRow(Auction {
            id,
            item_name,
            description,
            initial_bid,
            reserve,
            date_time,
            expires,
            seller,
            category,
            extra,
        }))
    }
}

impl AuctionWindow for AuctionRow {
    fn id(&self) -> u64 {
        self.0.id
    }
    fn opens(&self) -> i64 {
        self.0.date_time
    }
    fn expires(&self) -> i64 {
        self.0.expires
    }
}

/// Longest `extra` a decoded [`BidRow`] holds inline. The generator's bid
/// padding is 54 to 81 bytes; as a decoded `Str` it would take two
/// allocations (a `String` and its `Arc`) per bid crossing the exchange,
/// and most of those bids lose and are dropped there.
const BID_EXTRA_INLINE_BYTES: usize = 86;

/// A bid's `extra` as q9 carries it: the bid's own `Str` where the bid is
/// projected (no copy before encoding), its bytes in the value where it is
/// decoded (no allocation for a bid that loses). Encoded as a `String`.
#[derive(Clone, Debug)]
enum BidExtra {
    Str(Str),
    /// Invariant: `bytes[..len]` is valid UTF-8 (checked when decoded).
    Inline {
        len: u8,
        bytes: [u8; BID_EXTRA_INLINE_BYTES],
    },
}

impl BidExtra {
    fn as_bytes(&self) -> &[u8] {
        match self {
            BidExtra::Str(s) => s.as_bytes(),
            BidExtra::Inline { len, bytes } => &bytes[..usize::from(*len)],
        }
    }

    /// The text as a `Str`: allocates only for an inline text longer than a
    /// `Str` holds inline (done once per winning bid).
    fn into_str(self) -> Str {
        match self {
            BidExtra::Str(s) => s,
            BidExtra::Inline { .. } => Str::copy_from(
                std::str::from_utf8(self.as_bytes()).expect("checked to be UTF-8 when decoded"),
            ),
        }
    }
}

impl Codec for BidExtra {
    fn encoded_len(&self) -> usize {
        4 + self.as_bytes().len()
    }

    fn encode(&self, out: &mut [u8]) {
        match self {
            BidExtra::Str(s) => s.encode(out),
            BidExtra::Inline { .. } => {
                let bytes = self.as_bytes();
                out[..4].copy_from_slice(&(bytes.len() as u32).to_le_bytes());
                out[4..4 + bytes.len()].copy_from_slice(bytes);
            }
        }
    }

    /// Inline when it fits, else a `Str`; errors as `Str`'s decoding.
    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        let text = decode_str(input)?;
        if text.len() > BID_EXTRA_INLINE_BYTES {
            return Ok(BidExtra::Str(Str::copy_from(text)));
        }
        let mut bytes = [0; BID_EXTRA_INLINE_BYTES];
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        Ok(BidExtra::Inline {
            len: text.len() as u8,
            bytes,
        })
    }
}

/// The fields of a bid that q9's row prints (it has no `channel` or `url`):
/// what crosses the keyed exchange and waits in the state, about 100 bytes
/// encoded instead of about 185, decoded without allocating.
#[derive(Clone, Debug)]
struct BidRow {
    auction: u64,
    bidder: u64,
    price: u64,
    date_time: i64,
    extra: BidExtra,
}
rheon_net::codec_struct!(BidRow {
    auction,
    bidder,
    price,
    date_time,
    extra
});

impl BidRow {
    fn of(b: Bid) -> BidRow {
        BidRow {
            auction: b.auction,
            bidder: b.bidder,
            price: b.price,
            date_time: b.date_time,
            extra: BidExtra::Str(b.extra),
        }
    }

    /// The bid again, with empty `channel` and `url`.
    fn into_bid(self) -> Bid {
        Bid {
            auction: self.auction,
            bidder: self.bidder,
            price: self.price,
            channel: Str::new(),
            url: Str::new(),
            date_time: self.date_time,
            extra: self.extra.into_str(),
        }
    }
}

impl BidOffer for BidRow {
    fn auction(&self) -> u64 {
        self.auction
    }
    fn price(&self) -> u64 {
        self.price
    }
    fn date_time(&self) -> i64 {
        self.date_time
    }
}

/// Whether `candidate` beats `best`: higher price, then earlier.
fn better<B: BidOffer>(candidate: &B, best: Option<&B>) -> bool {
    match best {
        None => true,
        Some(b) => {
            candidate.price() > b.price()
                || (candidate.price() == b.price() && candidate.date_time() < b.date_time())
        }
    }
}

fn in_auction<A: AuctionWindow, B: BidOffer>(bid: &B, auction: &A) -> bool {
    bid.date_time() >= auction.opens() && bid.date_time() <= auction.expires()
}

/// Slots of [`SentBids`] (64 KiB). The pairs that still get bids are
/// recent: at the benchmark's rate a subtask sees a few hundred per
/// millisecond, and on its stream 2048 slots send as few bids as 16384
/// (27% of them; 512 send 1% more).
const SENT_BIDS_SLOTS: usize = 2048;
const _: () = assert!(SENT_BIDS_SLOTS.is_power_of_two());

/// The highest price a split subtask sent for recent `(auction, time)`
/// pairs, in a direct-mapped table. A bid at most that price can never win:
/// the bid sent before it on the same channel lies in the auction's window
/// exactly when it does and beats or ties it, and a tie goes to the earlier
/// arrival. A pair whose slot another pair took is forgotten, which only
/// means that its next bid is sent; so is everything after a restore, when
/// the table starts empty (what was sent before the checkpoint is in the
/// keyed state or in flight ahead of what follows).
#[derive(Clone, Default)]
struct SentBids {
    /// Empty until the first bid, then `SENT_BIDS_SLOTS` long.
    slots: Vec<Option<SentBid>>,
}

#[derive(Clone, Copy)]
struct SentBid {
    auction: u64,
    date_time: i64,
    price: u64,
}

impl SentBids {
    /// Whether a bid must be sent (and then remembers it): no bid of the
    /// same auction and time with at least its price went before it.
    #[inline]
    fn must_send(&mut self, auction: u64, date_time: i64, price: u64) -> bool {
        if self.slots.is_empty() {
            self.slots = vec![None; SENT_BIDS_SLOTS];
        }
        // Fibonacci hashing of the pair; the top bits pick the slot.
        let mixed =
            (auction ^ (date_time as u64).rotate_left(32)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let index = (mixed >> (64 - SENT_BIDS_SLOTS.trailing_zeros())) as usize;
        let slot = &mut self.slots[index];
        match slot {
            Some(sent) if sent.auction == auction && sent.date_time == date_time => {
                if price <= sent.price {
                    return false;
                }
                sent.price = price;
            }
            _ => {
                *slot = Some(SentBid {
                    auction,
                    date_time,
                    price,
                })
            }
        }
        true
    }
}

/// The split in front of the winning-bid operator: auctions to the left,
/// bids that can still win to the right, each projected (`A`, `B`).
struct SplitForWinning<A, B> {
    auction: fn(Auction) -> A,
    bid: fn(Bid) -> B,
    sent: SentBids,
}

impl<A, B> Clone for SplitForWinning<A, B> {
    fn clone(&self) -> Self {
        SplitForWinning {
            auction: self.auction,
            bid: self.bid,
            sent: self.sent.clone(),
        }
    }
}

impl<A: 'static, B: 'static> OneInputOperator<Event, Either<A, B>> for SplitForWinning<A, B> {
    #[inline]
    fn process(&mut self, event: Event, out: &mut Emitter<'_, Either<A, B>>) {
        match event {
            Event::Auction(a) => out.emit(Either::Left((self.auction)(a))),
            Event::Bid(b) => {
                if self.sent.must_send(b.auction, b.date_time, b.price) {
                    out.emit(Either::Right((self.bid)(b)));
                }
            }
            Event::Person(_) => {}
        }
    }
}

/// The table of sent bids is a cache, not state (see [`SentBids`]): a
/// checkpoint holds nothing and a restore starts with an empty table.
impl<A, B> CheckpointedFunction for SplitForWinning<A, B> {
    fn snapshot_state(&mut self, _checkpoint_id: u64) -> Result<Vec<Vec<u8>>, String> {
        Ok(Vec::new())
    }
    fn restore_state(&mut self, _restore: &OperatorStateRestore<'_>) -> Result<(), String> {
        self.sent = SentBids::default();
        Ok(())
    }
}

/// Consecutive auction ids per key of the winning-bid operator. The auctions
/// open at one time share a few keys, so their state stays in cache, and
/// they expire within a few milliseconds of each other, so a key needs a
/// timer per distinct expiry (about three) instead of one per auction.
const AUCTIONS_PER_BUCKET: u64 = 64;

/// The key of the winning-bid operator for an auction id.
fn bucket_of(auction_id: u64) -> u64 {
    auction_id / AUCTIONS_PER_BUCKET
}

/// Per auction id: the auction once it arrived, its best bid so far, and the
/// bids that came before it.
#[derive(Clone)]
pub struct AuctionState<A, B> {
    auction: Option<A>,
    best: Option<B>,
    early_bids: Vec<B>,
}
rheon_net::codec_struct!(AuctionState<A, B> {
    auction,
    best,
    early_bids
});

/// The auctions of one key (a bucket of `AUCTIONS_PER_BUCKET` consecutive
/// ids) that are open or have bids waiting, sorted by id.
#[derive(Clone)]
pub struct AuctionBucket<A, B> {
    auctions: Vec<(u64, AuctionState<A, B>)>,
}
rheon_net::codec_struct!(AuctionBucket < A, B > { auctions });

/// The state of auction `id` in its bucket, created empty if needed.
fn auction_in<'s, A, B>(
    state: &'s mut ValueStateRef<'_, AuctionBucket<A, B>>,
    id: u64,
) -> &'s mut AuctionState<A, B> {
    if state.value().is_none() {
        // Room for every auction of the bucket: growing an entry at a time
        // would copy its entries (a few hundred bytes each) five times.
        state.update(AuctionBucket {
            auctions: Vec::with_capacity(AUCTIONS_PER_BUCKET as usize),
        });
    }
    let auctions = &mut state.value_mut().expect("set above").auctions;
    let index = match auctions.binary_search_by_key(&id, |(id, _)| *id) {
        Ok(index) => index,
        Err(index) => {
            let empty = AuctionState {
                auction: None,
                best: None,
                early_bids: Vec::new(),
            };
            auctions.insert(index, (id, empty));
            index
        }
    };
    &mut auctions[index].1
}

/// The winning bid per auction id, over the split's tagged stream, keyed by
/// bucket of ids. Timers are per bucket: one at each expiry of its auctions
/// and, for an auction not yet seen, one at the earliest time of its
/// waiting bids. A timer at `t` closes every auction of the bucket that
/// expires at or before `t` and drops every waiting bid at or before `t`,
/// which is what the timers of each auction due by then would have done.
struct WinningBid<A, B>(PhantomData<fn() -> (A, B)>);

impl<A, B> Clone for WinningBid<A, B> {
    fn clone(&self) -> Self {
        WinningBid(PhantomData)
    }
}

impl<A, B> KeyedProcessFunction<u64, Either<A, B>, (A, B)> for WinningBid<A, B>
where
    A: AuctionWindow + Clone + Codec + Send + Sync + 'static,
    B: BidOffer + Clone + Codec + Send + Sync + 'static,
{
    type State = AuctionBucket<A, B>;

    fn process_element(
        &mut self,
        _bucket: &u64,
        record: Either<A, B>,
        state: &mut ValueStateRef<'_, Self::State>,
        ctx: &mut KeyedContext<'_, u64>,
        _out: &mut Emitter<'_, (A, B)>,
    ) {
        match record {
            Either::Left(auction) => {
                let s = auction_in(state, auction.id());
                for bid in std::mem::take(&mut s.early_bids) {
                    if in_auction(&bid, &auction) && better(&bid, s.best.as_ref()) {
                        s.best = Some(bid);
                    }
                }
                ctx.register_event_time_timer(auction.expires());
                s.auction = Some(auction);
            }
            Either::Right(bid) => {
                let s = auction_in(state, bid.auction());
                match &s.auction {
                    Some(auction) => {
                        if in_auction(&bid, auction) && better(&bid, s.best.as_ref()) {
                            s.best = Some(bid);
                        }
                    }
                    None => {
                        // A timer at the earliest waiting bid (see `on_timer`).
                        let time = bid.date_time();
                        if s.early_bids.iter().all(|b| b.date_time() > time) {
                            ctx.register_event_time_timer(time);
                        }
                        s.early_bids.push(bid);
                    }
                }
            }
        }
    }

    fn on_timer(
        &mut self,
        _bucket: &u64,
        timestamp: i64,
        _domain: TimeDomain,
        state: &mut ValueStateRef<'_, Self::State>,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Emitter<'_, (A, B)>,
    ) {
        let Some(bucket) = state.value_mut() else {
            return;
        };
        bucket
            .auctions
            .retain_mut(|(_, s)| match s.auction.as_ref().map(|a| a.expires()) {
                Some(expires) if expires <= timestamp => {
                    if let (Some(auction), Some(best)) = (s.auction.take(), s.best.take()) {
                        out.emit((auction, best));
                    }
                    false
                }
                Some(_) => true,
                None => {
                    // No auction these bids could match can arrive any more;
                    // the next timer is at the earliest bid left.
                    s.early_bids.retain(|b| b.date_time() > timestamp);
                    match s.early_bids.iter().map(BidOffer::date_time).min() {
                        Some(next) => {
                            ctx.register_event_time_timer(next);
                            true
                        }
                        None => false,
                    }
                }
            });
        if bucket.auctions.is_empty() {
            state.clear();
        }
    }
}

/// The winning bid of every auction that had one, emitted when the auction
/// closes, with auctions and bids projected by `auction` and `bid` before
/// the keyed exchange.
fn winning_bids_of<A, B>(
    events: &DataStream<Event>,
    auction: fn(Auction) -> A,
    bid: fn(Bid) -> B,
) -> DataStream<(A, B)>
where
    A: AuctionWindow + Clone + Codec + Send + Sync + 'static,
    B: BidOffer + Clone + Codec + Send + Sync + 'static,
{
    let split = SplitForWinning {
        auction,
        bid,
        sent: SentBids::default(),
    };
    events
        .transform_checkpointed("auctions and the bids that can win", split)
        .key_by(|e: &Either<A, B>| match e {
            Either::Left(a) => bucket_of(a.id()),
            Either::Right(b) => bucket_of(b.auction()),
        })
        .process(WinningBid(PhantomData))
        .name("winning bid per auction")
}

/// The winning bid of every auction that had one, emitted when the auction
/// closes: `(auction, bid)`.
pub fn winning_bids(events: &DataStream<Event>) -> DataStream<(Auction, Bid)> {
    winning_bids_of(events, |a| a, |b| b)
}

/// Winning bids carrying only the fields q4 and q6 read (ids, category,
/// seller, times, price): the strings are dropped before the exchange, so
/// the keyed exchange moves a few dozen bytes per record and decoding
/// allocates nothing.
fn winning_prices(events: &DataStream<Event>) -> DataStream<(AuctionTimes, BidPrice)> {
    winning_bids_of(events, AuctionTimes::of, BidPrice::of)
}

/// q9: the winning bid of every auction. The bids carry only what q9's row
/// prints: their `channel` and `url` are empty (see [`BidRow`]).
pub fn q9(events: &DataStream<Event>) -> DataStream<(Auction, Bid)> {
    winning_bids_of(events, AuctionRow, BidRow::of)
        .map(|(auction, bid): (AuctionRow, BidRow)| (auction.0, bid.into_bid()))
        .name("q9 row")
}

/// Closed auctions not yet counted, as `(expires, auction id, price)`,
/// earliest first. Encoded as a `Vec` of them.
#[derive(Clone, Default)]
struct ExpiryQueue(BinaryHeap<Reverse<(i64, u64, u64)>>);

impl ExpiryQueue {
    fn earliest(&self) -> Option<i64> {
        self.0.peek().map(|Reverse((expires, _, _))| *expires)
    }
}

impl Codec for ExpiryQueue {
    fn encoded_len(&self) -> usize {
        4 + self
            .0
            .iter()
            .map(|Reverse(p)| p.encoded_len())
            .sum::<usize>()
    }
    fn encode(&self, out: &mut [u8]) {
        let len = u32::try_from(self.0.len()).expect("closed auctions exceed u32::MAX");
        out[..4].copy_from_slice(&len.to_le_bytes());
        let mut at = 4;
        for Reverse(p) in self.0.iter() {
            let n = p.encoded_len();
            p.encode(&mut out[at..at + n]);
            at += n;
        }
    }
    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        let pending = Vec::<(i64, u64, u64)>::decode(input)?;
        Ok(ExpiryQueue(pending.into_iter().map(Reverse).collect()))
    }
}

/// Per key: closed auctions not yet counted, taken in expiry order (ties by
/// auction id) once the watermark passes them (so the running results do
/// not depend on which upstream subtask closed first); and the running
/// aggregate. A key has one timer, at its earliest closed auction.
#[derive(Clone, Default)]
pub struct ClosedAuctions<A> {
    pending: ExpiryQueue,
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

struct InExpiryOrder<A>(PhantomData<fn() -> A>);

impl<A> Clone for InExpiryOrder<A> {
    fn clone(&self) -> Self {
        InExpiryOrder(PhantomData)
    }
}

impl<A: PriceAggregate> KeyedProcessFunction<u64, (AuctionTimes, BidPrice), (u64, u64)>
    for InExpiryOrder<A>
{
    type State = ClosedAuctions<A>;

    fn process_element(
        &mut self,
        _key: &u64,
        (auction, bid): (AuctionTimes, BidPrice),
        state: &mut ValueStateRef<'_, Self::State>,
        ctx: &mut KeyedContext<'_, u64>,
        _out: &mut Emitter<'_, (u64, u64)>,
    ) {
        if state.value().is_none() {
            state.update(ClosedAuctions::default());
        }
        let s = state.value_mut().expect("set above");
        // The key's timer is at its earliest closed auction: a new one needs
        // a timer only when it is earlier still.
        if s.pending.earliest().is_none_or(|t| auction.expires < t) {
            ctx.register_event_time_timer(auction.expires);
        }
        s.pending
            .0
            .push(Reverse((auction.expires, auction.id, bid.price)));
    }

    fn on_timer(
        &mut self,
        key: &u64,
        timestamp: i64,
        _domain: TimeDomain,
        state: &mut ValueStateRef<'_, Self::State>,
        ctx: &mut KeyedContext<'_, u64>,
        out: &mut Emitter<'_, (u64, u64)>,
    ) {
        let Some(s) = state.value_mut() else { return };
        while s.pending.earliest().is_some_and(|t| t <= timestamp) {
            let Reverse((_, _, price)) = s.pending.0.pop().expect("peeked");
            out.emit((*key, s.aggregate.add(price)));
        }
        if let Some(next) = s.pending.earliest() {
            ctx.register_event_time_timer(next);
        }
    }
}

/// q4: `(category, average winning price)` (integer division, as SQL `AVG`
/// of `BIGINT`), updated per closed auction in expiry order (ties by id).
pub fn q4(events: &DataStream<Event>) -> DataStream<(u64, u64)> {
    winning_prices(events)
        .key_by(|w: &(AuctionTimes, BidPrice)| w.0.category)
        .process(InExpiryOrder::<Average>(PhantomData))
        .name("q4 average per category")
}

/// q6: `(seller, average winning price of its last 10 closed auctions)`,
/// updated per closed auction in expiry order (ties by auction id).
pub fn q6(events: &DataStream<Event>) -> DataStream<(u64, u64)> {
    winning_prices(events)
        .key_by(|w: &(AuctionTimes, BidPrice)| w.0.seller)
        .process(InExpiryOrder::<LastTenAverage>(PhantomData))
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

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;
    use crate::jobs::windowed_sums::committed_lines;
    use crate::nexmark::generator::{events, GeneratorConfig};
    use crate::nexmark::queries::{build, Query};
    use crate::nexmark::source::{generator_source, generator_source_with_rate};
    use crate::runtime::watermark::WatermarkStrategy;
    use crate::{CheckpointConfig, EngineConfig, RestartStrategy, StreamEnv};

    #[test]
    fn sent_bids_drop_only_bids_a_sent_bid_beats_or_ties() {
        let mut sent = SentBids::default();
        assert!(sent.must_send(7, 100, 50));
        assert!(!sent.must_send(7, 100, 50), "a tie goes to the earlier bid");
        assert!(!sent.must_send(7, 100, 49));
        assert!(sent.must_send(7, 100, 51));
        assert!(!sent.must_send(7, 100, 51));
        assert!(sent.must_send(7, 101, 1), "another time: another window");
        assert!(sent.must_send(8, 100, 1), "another auction");
        assert!(
            !sent.must_send(7, 100, 51),
            "remembered next to other pairs"
        );
    }

    #[test]
    fn sent_bids_forget_a_pair_whose_slot_another_took() {
        let mut sent = SentBids::default();
        assert!(sent.must_send(1, 0, 10));
        // Some pair among these takes the slot of (1, 0).
        for time in 1..=(4 * SENT_BIDS_SLOTS as i64) {
            sent.must_send(1, time, 10);
        }
        assert!(
            sent.must_send(1, 0, 10),
            "a forgotten pair's next bid is sent"
        );
    }

    #[test]
    fn bid_rows_and_auction_rows_decode_as_the_model_encodes() {
        use rheon_net::codec::{decode_exact, encode_to_vec};
        let bid = |extra: &str| Bid {
            auction: 7,
            bidder: 8,
            price: 9,
            channel: "Google".into(),
            url: "https://www.nexmark.com/a/b/c/item.htm?query=1".into(),
            date_time: 10,
            extra: extra.into(),
        };
        let long = "x".repeat(BID_EXTRA_INLINE_BYTES + 1);
        for extra in [
            "",
            "short",
            "é\\\"",
            &"y".repeat(BID_EXTRA_INLINE_BYTES),
            &long,
        ] {
            let row = BidRow::of(bid(extra));
            let decoded = decode_exact::<BidRow>(&encode_to_vec(&row)).unwrap();
            let inline = extra.len() <= BID_EXTRA_INLINE_BYTES;
            assert_eq!(matches!(decoded.extra, BidExtra::Inline { .. }), inline);
            assert_eq!(decoded.encoded_len(), row.encoded_len());
            assert_eq!(encode_to_vec(&decoded), encode_to_vec(&row));
            let want = Bid {
                channel: Str::new(),
                url: Str::new(),
                ..bid(extra)
            };
            assert_eq!(decoded.into_bid(), want);
        }
        let mut bytes = encode_to_vec(&BidRow::of(bid("ab")));
        let at = bytes.len() - 1;
        bytes[at] = 0xff;
        let err = decode_exact::<BidRow>(&bytes).unwrap_err();
        assert!(err.to_string().contains("UTF-8"), "{err}");
        assert!(decode_exact::<BidRow>(&bytes[..at]).is_err(), "truncated");

        let auction = |description: &str, extra: &str| Auction {
            id: 1,
            item_name: "item".into(),
            description: description.into(),
            initial_bid: 2,
            reserve: 3,
            date_time: 4,
            expires: 5,
            seller: 6,
            category: 10,
            extra: extra.into(),
        };
        for (description, extra) in [
            ("", ""),
            ("a thing", &*long),
            (&*long, "é"),
            (&*long, &*long),
        ] {
            let a = auction(description, extra);
            let bytes = encode_to_vec(&a);
            let decoded = decode_exact::<AuctionRow>(&bytes).unwrap();
            assert_eq!(decoded.0, a);
            assert_eq!(encode_to_vec(&decoded), bytes);
            assert!(decode_exact::<AuctionRow>(&bytes[..bytes.len() - 1]).is_err());
        }
    }

    /// Benchmark-rate events: many bids share an auction and a millisecond,
    /// so the split drops most of them.
    fn dense() -> GeneratorConfig {
        GeneratorConfig {
            num_events: 200_000,
            ..GeneratorConfig::default()
        }
    }

    /// The winning bids by a plain scan: per auction, the first of the
    /// highest bids in its window.
    fn reference(all: &[Event]) -> Vec<(Auction, Bid)> {
        let auctions: HashMap<u64, &Auction> = all
            .iter()
            .filter_map(|e| match e {
                Event::Auction(a) => Some((a.id, a)),
                _ => None,
            })
            .collect();
        let mut best: HashMap<u64, &Bid> = HashMap::new();
        for e in all {
            let Event::Bid(b) = e else { continue };
            let Some(a) = auctions.get(&b.auction) else {
                continue;
            };
            if b.date_time < a.date_time || b.date_time > a.expires {
                continue;
            }
            let entry = best.entry(a.id).or_insert(b);
            if b.price > entry.price || (b.price == entry.price && b.date_time < entry.date_time) {
                *entry = b;
            }
        }
        let mut rows: Vec<(Auction, Bid)> = best
            .into_iter()
            .map(|(id, b)| (auctions[&id].clone(), b.clone()))
            .collect();
        rows.sort_by_key(|(a, _)| a.id);
        rows
    }

    fn run<T: crate::Data + Sync>(
        parallelism: u32,
        query: fn(&DataStream<Event>) -> DataStream<T>,
    ) -> Vec<T> {
        let env = StreamEnv::new(
            EngineConfig::default()
                .with_executors(2)
                .with_parallelism(parallelism),
        );
        let events = generator_source(&env, dense()).assign_timestamps_and_watermarks(
            WatermarkStrategy::bounded_out_of_orderness(Duration::from_secs(4), |e: &Event| {
                e.timestamp_ms()
            }),
        );
        let handle = query(&events).collect();
        env.execute("winning bids test").unwrap();
        handle.take()
    }

    #[test]
    fn split_drops_most_bids_of_dense_streams() {
        let all: Vec<Event> = events(&dense(), 0..dense().num_events).collect();
        // As two split subtasks see the stream.
        let mut split = [SentBids::default(), SentBids::default()];
        let (mut bids, mut sent) = (0, 0);
        for (position, e) in all.iter().enumerate() {
            if let Event::Bid(b) = e {
                bids += 1;
                sent += usize::from(split[position % 2].must_send(b.auction, b.date_time, b.price));
            }
        }
        assert!(sent * 2 < bids, "{sent} of {bids} bids sent");
    }

    #[test]
    fn q9_at_the_benchmark_rate_matches_a_plain_scan() {
        let all: Vec<Event> = events(&dense(), 0..dense().num_events).collect();
        let expected = reference(&all);
        assert!(expected.len() > 1000, "{} auctions won", expected.len());
        // q9's bids carry only what its row prints.
        let rows: Vec<(Auction, Bid)> = expected
            .iter()
            .map(|(a, b)| {
                let bid = Bid {
                    channel: Str::new(),
                    url: Str::new(),
                    ..b.clone()
                };
                (a.clone(), bid)
            })
            .collect();
        for parallelism in [1, 2] {
            let mut got = run(parallelism, winning_bids);
            got.sort_by_key(|(a, _)| a.id);
            assert_eq!(got.len(), expected.len(), "p={parallelism}: winners");
            assert!(got == expected, "p={parallelism}: winning bids differ");
            let mut got = run(parallelism, q9);
            got.sort_by_key(|(a, _)| a.id);
            assert!(got == rows, "p={parallelism}: q9 rows differ");
        }
    }

    #[test]
    fn q4_at_the_benchmark_rate_matches_a_plain_scan() {
        let all: Vec<Event> = events(&dense(), 0..dense().num_events).collect();
        let mut per_category: HashMap<u64, Vec<(i64, u64, u64)>> = HashMap::new();
        for (a, b) in reference(&all) {
            per_category
                .entry(a.category)
                .or_default()
                .push((a.expires, a.id, b.price));
        }
        let mut expected = Vec::new();
        for (category, mut closed) in per_category {
            closed.sort();
            let mut average = Average::default();
            for (_, _, price) in closed {
                expected.push((category, average.add(price)));
            }
        }
        expected.sort();
        for parallelism in [1, 2] {
            let mut got = run(parallelism, q4);
            got.sort();
            assert!(got == expected, "p={parallelism}: averages differ");
        }
    }

    /// The committed rows of `query` over the dense events at parallelism 2,
    /// checkpointing every 20 ms, with a task panic at each of `failures`
    /// (events seen, counting replays).
    fn committed_with_checkpoints(query: Query, failures: &[u64]) -> Vec<String> {
        let dir = std::env::temp_dir().join(format!(
            "rheon-auctions-{query}-{}-{}",
            std::process::id(),
            failures.len()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let mut checkpoints = CheckpointConfig::every(Duration::from_millis(20), dir.join("chk"));
        checkpoints.restart = RestartStrategy::FixedDelay {
            attempts: 5,
            delay: Duration::from_millis(10),
        };
        let env = StreamEnv::new(
            EngineConfig::default()
                .with_executors(2)
                .with_parallelism(2)
                .with_checkpoints(checkpoints),
        );
        let pending: Arc<Mutex<HashSet<u64>>> =
            Arc::new(Mutex::new(failures.iter().copied().collect()));
        let seen = Arc::new(AtomicU64::new(0));
        let events = generator_source_with_rate(&env, dense(), 200_000.0)
            .map(move |e: Event| {
                let n = seen.fetch_add(1, Ordering::Relaxed);
                if pending.lock().unwrap().remove(&n) {
                    panic!("injected failure at event {n}");
                }
                e
            })
            .name("failure injection");
        build(query, events).sink_to_files(dir.join("out"));
        let outcome = env.execute(&format!("{query} with checkpoints")).unwrap();
        assert_eq!(
            outcome.restarts as usize,
            failures.len(),
            "{query}: restarts"
        );
        let rows = committed_lines(&dir.join("out")).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        rows
    }

    /// The split's table starts empty after a restore while the keyed state
    /// holds the bids sent before the checkpoint: the committed rows still
    /// equal a failure-free run's.
    #[test]
    fn winning_bids_recover_from_checkpoints_at_the_benchmark_rate() {
        let n = dense().num_events;
        for query in [Query::Q9, Query::Q4] {
            let want = committed_with_checkpoints(query, &[]);
            assert!(!want.is_empty(), "{query}: no rows");
            let got = committed_with_checkpoints(query, &[n * 3 / 10, n * 7 / 10]);
            assert_eq!(got.len(), want.len(), "{query}: committed rows");
            assert!(got == want, "{query}: committed rows differ");
        }
    }
}
