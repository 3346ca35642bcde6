//! The Nexmark event generator: [`event`]`(config, n)` is a pure function of the
//! configuration and the event number, so any number of parallel generators produce,
//! between them, exactly the stream one generator produces (generator `i` of `p` takes
//! the stream positions `q ≡ i (mod p)`, see [`events_for_generator`]).
//!
//! # What follows the reference
//!
//! The reference is `nexmark-flink/.../generator/` of the `nexmark/nexmark` repository
//! (itself derived from Apache Beam's Nexmark). Followed exactly, with its defaults:
//! - Kind by `n % 50` (proportions 1 : 3 : 46 configurable): `< 1` person, `< 4`
//!   auction, else bid.
//! - Ids: a person event's id is `lastBase0PersonId(n) + 1000`, an auction's
//!   `lastBase0AuctionId(n) + 1000` (ids are dense and grow with `n`). Random person
//!   references pick among the last `num_active_people` (1000) people plus 10 ids
//!   *ahead* of the newest person (`PERSON_ID_LEAD`); random auction references among
//!   the last `num_in_flight_auctions` (100) auctions plus 10 ids ahead
//!   (`AUCTION_ID_LEAD`). So, as in the reference, a bid may name a person or auction
//!   up to 10 ids beyond the newest one generated so far.
//! - Hot keys: a bid is for the "hot" auction (the first of the newest batch of 100
//!   auctions) unless `below(hot_auction_ratio = 2) == 0`; by the hot bidder (second
//!   person of the newest batch of 100) unless `below(hot_bidders_ratio = 4) == 0`; an
//!   auction's seller is the hot seller (first of the newest batch of 100) unless
//!   `below(hot_sellers_ratio = 4) == 0`.
//! - Values: names from the reference's 11 first and 9 last names; email
//!   `<string up to 7>@<string up to 5>.com`; credit card four `%04d` groups; city from
//!   the reference's 10 cities, state from AZ, CA, ID, OR, WA, WY; category
//!   `10 + below(5)`; price `round(10^(U*6) * 100)` (Java `Math.round`); reserve =
//!   initial bid + another price; item name a string of up to 20 characters,
//!   description up to 100 (the reference's `nextString`: length `3 + below(max-3)`,
//!   each character a space with probability 1/13 else `a..z`, then trimmed).
//! - Channels: with probability 1/2 one of Google, Facebook, Baidu, Apple (each with
//!   one fixed URL), else `channel-<k>` for `k = below(10000)` with a fixed per-channel
//!   URL `https://www.nexmark.com/<s>/<s>/<s>/item.htm?query=1` (`<s>` a 3–4 character
//!   string with `_` as the special character), to which 9 channels in 10 append
//!   `&channel_id=<abs(Integer.reverse(k))>` (Java 32-bit semantics, so channel 1 gets
//!   `-2147483648`).
//! - `extra`: the reference's `nextExtra`: with `d = avg - current_size`,
//!   `delta = round(0.2 d)`, length `d - delta + below(2 delta)`, characters from the
//!   reference's `nextExactString` (six characters per signed 32-bit draw, `'a' + r % 26`
//!   with Java's truncating remainder, so negative draws give `H..a`, including `\`).
//!   `current_size` is counted as the reference does: person `8 + len(name, email,
//!   credit card, city, state)`; auction `8 + len(name, description) + 40`; bid `32`.
//!   The reference never added `channel` and `url` to the bid's count, so a bid's
//!   "model size" averages 100 B but it really carries about 70 B more (its
//!   [`Codec`](crate::Codec) encoding averages about 185 B), in every system that uses
//!   the reference generator.
//! - Event time: `timestampForEvent(k) = base + (long)(k * delay_us) / 1000` with
//!   `delay_us = 1e6 / first_event_rate * num_generators` (f64, in that order).
//! - Auction expiry: `date_time + 1 + below(max(2 * horizon, 1))` where `horizon` is the
//!   time until the event `in_flight * total / auction_proportion` (1666) events later
//!   on the same timeline. At the benchmark's 10 M events/s the horizon (0.17 ms)
//!   rounds to 0 or 1 ms, so auctions last 1 or 2 ms, exactly as in the reference.
//! - Out-of-order groups: stream position `p` of a timeline carries event number
//!   `(p / s) * s + (p * 953) % s` for group size `s` (a permutation inside each group
//!   unless `s` is a multiple of 953, where the reference repeats events; so does this).
//!   Watermarks follow the reference: the timestamp of event number `(p / s) * s`.
//!
//! # Strings without allocation
//!
//! Fields are [`Str`]s, and a [`Generator`] makes them without touching the heap,
//! except for long descriptions:
//! - `extra` is a static slice of a padding pool drawn once per process (see
//!   `EXTRA_POOL_BYTES`); cities, states, person names (all 99 first-last pairs)
//!   and channel names are static strings. Static texts sliced per event are
//!   [`StaticAscii`], so slicing one reads no byte of it (a char-boundary check
//!   would be a cache miss per event).
//! - Channels are numbered hot ones first (`NUM_ALL_CHANNELS`), and a bid finds
//!   its channel's name and URL at that number, the same code for hot and other
//!   channels. Names are slots of a per-process text (`channel_names`). URLs come
//!   from a table built once per seed. For the first `STATIC_CHANNEL_TABLES_MAX`
//!   (8) seeds of a process the table's text is leaked (one fixed-width slot per
//!   URL, about 800 KB each) so URLs are static too: cloning one touches no
//!   reference count shared between cores, and finding one reads a byte of a 10 KB
//!   length table. Later seeds get a table of reference-counted URLs.
//! - Item names, descriptions and the two parts of an email are slices of a pool
//!   of `nextString` characters drawn once per process (`string_pool`): a random
//!   length and offset, trimmed, which has the distribution of the reference's
//!   character-by-character `nextString`. Emails, credit cards and item names (at
//!   most 19 bytes) are assembled on the stack and stored inline.
//! - An auction's description (up to 99 bytes) is inline when at most 22 bytes,
//!   else copied into an allocation: about 5% of events at the default
//!   proportions (a static slice of the pool would do, see `next_auction`).
//!
//! [`event`] computes URLs directly and allocates; it produces the same events.
//! `generated_stream_is_unchanged` pins fingerprints of the stream, so that a
//! change to it is deliberate.
//!
//! # Arithmetic per event
//!
//! What depends only on the configuration (the seed's part of the random key, the
//! inter-event delay, the bid padding, the proportion cycle's divisor) is derived
//! once per [`Generator`] (`Plan`); an event finds its place in the proportion
//! cycle with multiplications (`Divisor`). Each random value takes a 16- or 32-bit
//! field of a 64-bit draw (`Bits`), so a bid takes three SplitMix64 outputs (its
//! key and two draws, where it took about nine), and random choices between a
//! hot id and another are selected without a branch (`hot_or`). Prices follow the reference formula `round(10^(6U) * 100)` exactly
//! for a 32-bit `U` (see `PRICE_DRAW_BITS`), without libm's `pow` in the common
//! case: a table-and-polynomial approximation within 4e-15 is rounded when it is
//! farther than 1e-13 (relative) from a rounding boundary `k + 0.5`, where the
//! exact value must round the same way; otherwise (about one price in 10^5) `pow`
//! decides (see `price_of_draw`).
//!
//! # Where this differs, and why
//!
//! - **Randomness.** Beam seeds a `java.util.Random` with the event id; the current
//!   nexmark-flink generator holds one unseeded `Random` per generator, so its output is
//!   not reproducible at all. Here every event draws from SplitMix64 seeded by
//!   `(seed, n)`, and `below(n)` is a multiply-shift reduction of a 16-, 32- or
//!   64-bit field (within `n / 2^bits` of uniform). Distributions are the
//!   reference's; individual values are not, so outputs can only be compared
//!   statistically or through the JSON file ([`super::json`]).
//! - **Channel URLs** are derived from `(seed, channel)` instead of an unseeded
//!   `Random` at class load, so they too are deterministic.
//! - **Several generators.** The reference gives each of `num_generators` generators a
//!   contiguous *chunk* of event ids on its own timeline (local event `k` at
//!   `base + k * delay`). Here timeline `g` holds the event numbers `n ≡ g (mod G)` and
//!   local number `k = n / G`, so `timestamp(n) = base + (long)((n / G) * delay_us) /
//!   1000`. With `G = 1` (the default) this is exactly the reference; with `G > 1` each
//!   timeline runs at `rate / G` as in the reference, and ids still grow with time.
//!   `num_generators` is a property of the configuration, not of how many tasks
//!   generate: any parallelism produces the same events.
//! - **Ids start at event number 0** (the first event is a person). The Flink source
//!   starts at event id 1, so its first event is an auction.
//! - **Bidder ids.** Some versions of the reference's `BidGenerator` add
//!   `FIRST_PERSON_ID` to the bidder twice (bidders 1000 ids beyond every person); this
//!   follows Beam and the older reference and adds it once.
//! - Not implemented: rate shapes other than a constant rate, extended-bid mode,
//!   wall-clock pacing (the caller paces), and the `occasionalDelaySec` option (unused
//!   by the reference generator too).

use std::ops::Range;
use std::sync::Arc;

use super::model::{Auction, Bid, Event, Person};
use super::text::{StaticAscii, Str};

/// First person id (the reference's `FIRST_PERSON_ID`).
pub const FIRST_PERSON_ID: u64 = 1000;
/// First auction id (the reference's `FIRST_AUCTION_ID`).
pub const FIRST_AUCTION_ID: u64 = 1000;
/// First category id; categories are `FIRST_CATEGORY_ID..FIRST_CATEGORY_ID + NUM_CATEGORIES`.
pub const FIRST_CATEGORY_ID: u64 = 10;
/// Number of categories.
pub const NUM_CATEGORIES: u64 = 5;
/// Person ids a random reference may run ahead of the newest person.
pub const PERSON_ID_LEAD: u64 = 10;
/// Auction ids a random reference may run ahead of the newest auction.
pub const AUCTION_ID_LEAD: u64 = 10;
/// Hot sellers, bidders and auctions are one id in this many.
pub const HOT_BATCH: u64 = 100;
/// Number of non-hot channels.
pub const NUM_CHANNELS: u64 = 10_000;
/// The hot channels.
pub const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];
/// States people live in.
pub const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];
/// Cities people live in.
pub const US_CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];
/// One in this many bids uses a non-hot channel (the reference's `HOT_CHANNELS_RATIO`).
const HOT_CHANNELS_RATIO: u64 = 2;
/// The reference's multiplier that scrambles positions inside an out-of-order group.
const OUT_OF_ORDER_MULTIPLIER: u64 = 953;
/// Default base time: 2015-07-15T00:00:00Z (Beam Nexmark's base time).
pub const DEFAULT_BASE_TIME_MS: i64 = 1_436_918_400_000;

/// Parameters of the generated stream. [`Default`] gives the benchmark suite's values.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GeneratorConfig {
    /// Events per second over all timelines (event time). Default 10,000,000.
    pub first_event_rate: u64,
    /// Number of events in the stream; 0 means unbounded. Informational for the
    /// callers' loops: [`event`] and [`events`] accept any number or range.
    pub num_events: u64,
    /// Event time of event 0, ms since the epoch.
    pub base_time_ms: i64,
    /// Number of event-time timelines (the reference's `numEventGenerators`). Default 1.
    pub num_generators: u64,
    /// Events per out-of-order group; 1 (the default) keeps the stream in order.
    pub out_of_order_group_size: u64,
    /// Seed of all randomness. Default 0.
    pub seed: u64,
    /// Persons per `total_proportion()` events. Default 1.
    pub person_proportion: u64,
    /// Auctions per `total_proportion()` events. Default 3.
    pub auction_proportion: u64,
    /// Bids per `total_proportion()` events. Default 46.
    pub bid_proportion: u64,
    /// Average "model size" of a person, bytes. Default 200.
    pub avg_person_byte_size: u64,
    /// Average "model size" of an auction, bytes. Default 500.
    pub avg_auction_byte_size: u64,
    /// Average "model size" of a bid, bytes. Default 100.
    pub avg_bid_byte_size: u64,
    /// Default 2.
    pub hot_auction_ratio: u64,
    /// Default 4.
    pub hot_sellers_ratio: u64,
    /// Default 4.
    pub hot_bidders_ratio: u64,
    /// People considered for random seller and bidder references. Default 1000.
    pub num_active_people: u64,
    /// Auctions considered for random bid references. Default 100.
    pub num_in_flight_auctions: u64,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig {
            first_event_rate: 10_000_000,
            num_events: 0,
            base_time_ms: DEFAULT_BASE_TIME_MS,
            num_generators: 1,
            out_of_order_group_size: 1,
            seed: 0,
            person_proportion: 1,
            auction_proportion: 3,
            bid_proportion: 46,
            avg_person_byte_size: 200,
            avg_auction_byte_size: 500,
            avg_bid_byte_size: 100,
            hot_auction_ratio: 2,
            hot_sellers_ratio: 4,
            hot_bidders_ratio: 4,
            num_active_people: 1000,
            num_in_flight_auctions: 100,
        }
    }
}

/// Which kind of event an event number produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    Person,
    Auction,
    Bid,
}

impl GeneratorConfig {
    /// Checks that every divisor and range is non-empty.
    pub fn validate(&self) -> Result<(), String> {
        let positive = [
            ("first_event_rate", self.first_event_rate),
            ("num_generators", self.num_generators),
            ("out_of_order_group_size", self.out_of_order_group_size),
            ("person_proportion", self.person_proportion),
            ("auction_proportion", self.auction_proportion),
            ("bid_proportion", self.bid_proportion),
            ("hot_auction_ratio", self.hot_auction_ratio),
            ("hot_sellers_ratio", self.hot_sellers_ratio),
            ("hot_bidders_ratio", self.hot_bidders_ratio),
            ("num_active_people", self.num_active_people),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(format!(
                    "invalid Nexmark generator config: {name} must be at least 1"
                ));
            }
        }
        Ok(())
    }

    /// Events per proportion cycle (50 by default).
    pub fn total_proportion(&self) -> u64 {
        self.person_proportion + self.auction_proportion + self.bid_proportion
    }

    /// Event-time delay between consecutive events of one timeline, in microseconds.
    pub fn inter_event_delay_us(&self) -> f64 {
        1_000_000.0 / self.first_event_rate as f64 * self.num_generators as f64
    }

    /// Event time of local event number `k` on any timeline (`timestampForEvent`).
    fn local_timestamp_ms(&self, k: u64) -> i64 {
        self.base_time_ms + ((k as f64 * self.inter_event_delay_us()) as i64) / 1000
    }

    /// Event time of event number `n`.
    pub fn timestamp_ms(&self, n: u64) -> i64 {
        self.local_timestamp_ms(n / self.num_generators)
    }

    /// The kind of event number `n`.
    pub fn event_kind(&self, n: u64) -> EventKind {
        let rem = n % self.total_proportion();
        if rem < self.person_proportion {
            EventKind::Person
        } else if rem < self.person_proportion + self.auction_proportion {
            EventKind::Auction
        } else {
            EventKind::Bid
        }
    }

    /// The event number emitted at stream position `position` (equal to it when
    /// `out_of_order_group_size` is 1).
    pub fn event_number_at(&self, position: u64) -> u64 {
        let g = self.num_generators;
        let s = self.out_of_order_group_size;
        let (timeline, p) = (position % g, position / g);
        let adjusted = (p / s) * s + ((p % s) * (OUT_OF_ORDER_MULTIPLIER % s)) % s;
        adjusted * g + timeline
    }

    /// Watermark after emitting stream position `position`: no later position of the
    /// same timeline carries an earlier event time.
    pub fn watermark_ms(&self, position: u64) -> i64 {
        let s = self.out_of_order_group_size;
        let p = position / self.num_generators;
        self.local_timestamp_ms((p / s) * s)
    }

    #[cfg(test)]
    fn last_base0_person_id(&self, n: u64) -> u64 {
        self.cycle_position(n).last_base0_person_id(self)
    }

    /// -1 before the first auction.
    #[cfg(test)]
    fn last_base0_auction_id(&self, n: u64) -> i64 {
        self.cycle_position(n).last_base0_auction_id(self)
    }

    /// Where event number `n` falls in the proportion cycle.
    #[cfg(test)]
    fn cycle_position(&self, n: u64) -> CyclePosition {
        let total = self.total_proportion();
        CyclePosition {
            epoch: n / total,
            offset: n % total,
        }
    }

    /// A person id among the active ones or just ahead; `last_base0_person_id` of
    /// the current event.
    #[inline]
    fn next_base0_person_id(&self, bits: &mut Bits, last_base0_person_id: u64) -> u64 {
        let num_people = last_base0_person_id + 1;
        let active = num_people.min(self.num_active_people);
        num_people - active + bits.below(32, active + PERSON_ID_LEAD)
    }

    /// An auction id among those in flight or just ahead; `last_base0_auction_id`
    /// of the current event.
    #[inline]
    fn next_base0_auction_id(&self, bits: &mut Bits, last_base0_auction_id: i64) -> u64 {
        let max = last_base0_auction_id.max(0) as u64;
        let min = max.saturating_sub(self.num_in_flight_auctions);
        min + bits.below(32, max - min + 1 + AUCTION_ID_LEAD)
    }
}

/// Event number `n` as `epoch * total_proportion() + offset`: the reference's id
/// bookkeeping, computed with one division per event.
#[derive(Clone, Copy, Debug)]
struct CyclePosition {
    epoch: u64,
    offset: u64,
}

impl CyclePosition {
    #[inline]
    fn kind(self, c: &GeneratorConfig) -> EventKind {
        if self.offset < c.person_proportion {
            EventKind::Person
        } else if self.offset < c.person_proportion + c.auction_proportion {
            EventKind::Auction
        } else {
            EventKind::Bid
        }
    }

    /// The reference's `lastBase0PersonId`.
    #[inline]
    fn last_base0_person_id(self, c: &GeneratorConfig) -> u64 {
        self.epoch * c.person_proportion + self.offset.min(c.person_proportion - 1)
    }

    /// The reference's `lastBase0AuctionId`: -1 before the first auction.
    #[inline]
    fn last_base0_auction_id(self, c: &GeneratorConfig) -> i64 {
        let (mut epoch, mut offset) = (self.epoch as i64, self.offset as i64);
        let (pp, ap) = (c.person_proportion as i64, c.auction_proportion as i64);
        if offset < pp {
            epoch -= 1;
            offset = ap - 1;
        } else if offset >= pp + ap {
            offset = ap - 1;
        } else {
            offset -= pp;
        }
        epoch * ap + offset
    }
}

/// What generating an event needs beyond the configuration, derived from it once
/// per [`Generator`] (and per call of [`event`]): the event stream's key, the
/// inter-event delay, the proportion cycle's divisor, the pools and tables. Values
/// are exactly those the configuration's methods compute, so events do not depend
/// on whether they were made through a [`Generator`].
#[derive(Clone, Debug)]
struct Plan {
    /// `mix64(seed ^ mix64(DOMAIN_EVENT))`: [`Rng::keyed`] without its first two
    /// rounds, which depend on the seed only.
    event_key: u64,
    /// [`GeneratorConfig::inter_event_delay_us`].
    delay_us: f64,
    /// [`GeneratorConfig::total_proportion`], divided by with multiplications.
    cycle: Divisor,
    /// Events until `num_in_flight_auctions` more auctions exist (1666 by default).
    events_for_auctions: u64,
    /// A bid's padding length before its random part, and that part's half range.
    bid_padding: Padding,
    extra_pool: StaticAscii,
    string_pool: StaticAscii,
    prices: &'static PriceTables,
    channel_names: ChannelNames,
    person_names: &'static [&'static str],
}

impl Plan {
    fn new(c: &GeneratorConfig) -> Plan {
        Plan {
            event_key: mix64(c.seed ^ mix64(DOMAIN_EVENT)),
            delay_us: c.inter_event_delay_us(),
            cycle: Divisor::new(c.total_proportion()),
            events_for_auctions: c.num_in_flight_auctions * c.total_proportion()
                / c.auction_proportion,
            bid_padding: Padding::new(BID_COUNTED_BYTES, c.avg_bid_byte_size),
            extra_pool: extra_pool(),
            string_pool: string_pool(),
            prices: price_tables(),
            channel_names: channel_names(),
            person_names: person_names(),
        }
    }

    /// [`GeneratorConfig::local_timestamp_ms`] with the delay computed once.
    #[inline]
    fn local_timestamp_ms(&self, c: &GeneratorConfig, k: u64) -> i64 {
        // `k as f64`, by the one-instruction signed conversion when `k` fits (an
        // unsigned one takes five).
        let k = match i64::try_from(k) {
            Ok(k) => k as f64,
            Err(_) => k as f64,
        };
        c.base_time_ms + ((k * self.delay_us) as i64) / 1000
    }

    /// Where event number `n` falls in the proportion cycle.
    #[inline]
    fn cycle_position(&self, n: u64) -> CyclePosition {
        let (epoch, offset) = self.cycle.div_rem(n);
        CyclePosition { epoch, offset }
    }
}

/// Division by a divisor fixed per generator, as two multiplications (a 64-bit
/// hardware division is several times slower, and an event needs one to find its
/// place in the proportion cycle). With `m = ceil(2^128 / d)`,
/// `floor(n * m / 2^128) = floor(n / d)` for every 64-bit `n`, since
/// `m * d - 2^128 < d <= 2^(128 - 64)` (Lemire, Kaser and Kurz, "Faster remainder
/// by direct computation", 2019, theorem 1).
#[derive(Clone, Copy, Debug)]
struct Divisor {
    d: u64,
    /// `ceil(2^128 / d)`.
    m: u128,
}

impl Divisor {
    /// # Panics
    /// If `d < 2` (`ceil(2^128 / 1)` does not fit; a proportion cycle has at least
    /// three events).
    fn new(d: u64) -> Divisor {
        assert!(d >= 2, "divisor {d} is below 2");
        Divisor {
            d,
            m: u128::MAX / u128::from(d) + 1,
        }
    }

    /// `(n / d, n % d)`.
    #[inline]
    fn div_rem(self, n: u64) -> (u64, u64) {
        let (m_high, m_low) = ((self.m >> 64) as u64, self.m as u64);
        // The top 64 bits of the 192-bit product `n * m`, from its two halves.
        let carry = (u128::from(m_low) * u128::from(n)) >> 64;
        let q = ((u128::from(m_high) * u128::from(n) + carry) >> 64) as u64;
        (q, n - q * self.d)
    }
}

/// SplitMix64 finalizer.
#[inline]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;
const DOMAIN_EVENT: u64 = 0x0045_5645_4e54; // "EVENT"
const DOMAIN_HOT_URL: u64 = 0x484f_5455_524c; // "HOTURL"
const DOMAIN_CHANNEL: u64 = 0x0043_4841_4e4e_454c; // "CHANNEL"
const DOMAIN_EXTRA_POOL: u64 = u64::MAX;
const DOMAIN_STRING_POOL: u64 = u64::MAX - 1;

/// SplitMix64 stream keyed by (seed, domain, index).
struct Rng(u64);

impl Rng {
    fn keyed(seed: u64, domain: u64, index: u64) -> Rng {
        Rng(mix64(mix64(seed ^ mix64(domain)) ^ index))
    }

    #[inline]
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN_GAMMA);
        mix64(self.0)
    }

    /// Uniform in `0..n` (`n > 0`).
    #[inline]
    fn below(&mut self, n: u64) -> u64 {
        below(self.next_u64(), n)
    }

    /// A draw to be split into fields.
    #[inline]
    fn bits(&mut self) -> Bits {
        Bits(self.next_u64())
    }
}

/// `floor(x * n / 2^64)`: uniform in `0..n` for a uniform 64-bit `x`, within a
/// relative `n / 2^64` (multiply-shift reduction).
#[inline]
fn below(x: u64, n: u64) -> u64 {
    ((u128::from(x) * u128::from(n)) >> 64) as u64
}

/// One 64-bit draw consumed as fixed-width fields from its top: an event takes
/// several small values from one SplitMix64 output (16- or 32-bit fields), where
/// one output per value made the draws most of a bid's cost. Fields are
/// independent and uniform, since the output's bits are.
struct Bits(u64);

impl Bits {
    /// The next `width` bits (`0 < width < 64`).
    #[inline]
    fn take(&mut self, width: u32) -> u64 {
        debug_assert!(width > 0 && width < 64);
        let field = self.0 >> (64 - width);
        self.0 <<= width;
        field
    }

    /// `floor(field * n / 2^width)` for the next `width` bits: uniform in `0..n`
    /// within a relative `n / 2^width` (exactly, when `n` is a power of two up to
    /// `2^width`); 0 when `n` is 0. Values of `n` here are far below `2^width`
    /// (ratios, ids among about a thousand, padding lengths, pool offsets); were
    /// one larger, the result would still be below `n`, in coarser steps.
    #[inline]
    fn below(&mut self, width: u32, n: u64) -> u64 {
        ((u128::from(self.take(width)) * u128::from(n)) >> width) as u64
    }
}

/// Longest string `nextString` is asked for (an auction's description), plus one.
const NEXT_STRING_MAX_BYTES: usize = 100;

/// One character of the reference's `nextString`: `special` with probability
/// 1/13, else `a..z`.
fn next_string_char(rng: &mut Rng, special: u8) -> u8 {
    if rng.below(13) == 0 {
        special
    } else {
        b'a' + rng.below(26) as u8
    }
}

/// Java's `trim()`: strips leading and trailing characters `<= ' '` (bytes: the
/// ends found are next to ASCII bytes, so on character boundaries).
#[inline]
fn java_trim(s: &str) -> &str {
    let bytes = s.as_bytes();
    let end = bytes.iter().rposition(|&b| b > b' ').map_or(0, |i| i + 1);
    let start = bytes[..end].iter().position(|&b| b > b' ').unwrap_or(end);
    &s[start..end]
}

/// The reference's `nextString(maxLength, special)` drawn character by character
/// (for tables built once; events slice [`string_pool`] instead). `special` is
/// ASCII, and so is the result.
fn next_string(rng: &mut Rng, max_len: u64, special: char) -> String {
    let special = u8::try_from(special).expect("an ASCII special character");
    assert!(max_len as usize <= NEXT_STRING_MAX_BYTES);
    let len = 3 + rng.below(max_len - 3);
    let bytes: Vec<u8> = (0..len).map(|_| next_string_char(rng, special)).collect();
    let text = String::from_utf8(bytes).expect("nextString writes ASCII");
    java_trim(&text).to_owned()
}

/// Characters drawn once per process as the reference's `nextString` draws them
/// (special character `' '`), from which events slice their item names,
/// descriptions and email parts: drawing each character anew (two draws per
/// character, about a hundred per auction) made an auction cost as much as ten
/// bids. A slice of a random length `3 + below(max - 3)` at a random offset,
/// trimmed, has the reference's distribution, since the pool's characters are
/// independent. The pool is read (trimmed, copied into inline strings), so it is
/// kept small enough for the L2 cache.
const STRING_POOL_BYTES: usize = 1 << 16;

fn string_pool() -> StaticAscii {
    static POOL: std::sync::OnceLock<StaticAscii> = std::sync::OnceLock::new();
    *POOL.get_or_init(|| {
        let mut rng = Rng::keyed(0, DOMAIN_STRING_POOL, 0);
        let bytes: Vec<u8> = (0..STRING_POOL_BYTES)
            .map(|_| next_string_char(&mut rng, b' '))
            .collect();
        let text = String::from_utf8(bytes).expect("nextString writes ASCII");
        StaticAscii::new(Box::leak(text.into_boxed_str())).expect("the pool is ASCII")
    })
}

/// The reference's `nextString(max_len, ' ')` as a slice of [`string_pool`], from
/// one draw (length, then offset). At most `max_len - 1` bytes.
#[inline]
fn next_pooled_string(mut bits: Bits, max_len: u64, pool: StaticAscii) -> &'static str {
    debug_assert!(max_len >= 4 && max_len as usize <= NEXT_STRING_MAX_BYTES);
    let len = 3 + bits.below(32, max_len - 3) as usize;
    let at = bits.below(32, (pool.len() - len + 1) as u64) as usize;
    java_trim(&pool.as_str()[at..at + len])
}

/// A short string assembled on the stack, then stored inline in a [`Str`].
struct Scratch {
    bytes: [u8; Str::INLINE_CAPACITY_BYTES],
    len: usize,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            bytes: [0; Str::INLINE_CAPACITY_BYTES],
            len: 0,
        }
    }

    /// Appends `s`, as much of it as fits; [`Scratch::finish`] checks nothing was cut.
    fn push(&mut self, s: &[u8]) -> &mut Self {
        let at = self.len.min(self.bytes.len());
        let n = s.len().min(self.bytes.len() - at);
        self.bytes[at..at + n].copy_from_slice(&s[..n]);
        self.len += s.len();
        self
    }

    /// Appends `value` as exactly four decimal digits (`value < 10_000`).
    fn push_4_digits(&mut self, value: u64) -> &mut Self {
        debug_assert!(value < 10_000);
        let digits = [
            b'0' + (value / 1000 % 10) as u8,
            b'0' + (value / 100 % 10) as u8,
            b'0' + (value / 10 % 10) as u8,
            b'0' + (value % 10) as u8,
        ];
        self.push(&digits)
    }

    #[inline]
    fn finish(&self) -> Str {
        assert!(
            self.len <= self.bytes.len(),
            "a generated string of {} bytes exceeds the inline capacity",
            self.len
        );
        Str::inline_ascii_array(self.bytes, self.len).expect("generated strings are ASCII")
    }
}

/// The reference's `nextExactString`, including its signed remainder (which
/// yields some characters below 'a'): six characters per 32-bit draw.
fn next_exact_string(rng: &mut Rng, len: u64) -> String {
    let len = len as usize;
    let mut bytes = vec![0u8; len];
    let mut i = 0;
    while i < len {
        let draw = rng.next_u64();
        for half in [(draw >> 32) as u32 as i32, draw as u32 as i32] {
            let mut rnd = half;
            for _ in 0..6 {
                if i == len {
                    break;
                }
                bytes[i] = (i32::from(b'a') + rnd % 26) as u8;
                rnd /= 26;
                i += 1;
            }
        }
    }
    String::from_utf8(bytes).expect("characters 'H'..='z' are ASCII")
}

/// Java's `Math.round(double)` for the non-negative values used here. The cast
/// truncates, which is `floor` for non-negative values (and is not a libm call).
fn java_round(x: f64) -> u64 {
    debug_assert!(x >= 0.0);
    (x + 0.5) as u64
}

/// Characters drawn once, as the reference's `nextExactString` draws them,
/// from which `extra` padding is sliced: drawing each padding character anew
/// was a third of the generator's cost. Each event still picks its own length
/// and offset from its own random stream, so events stay a pure function of
/// (config, event number). The pool is static, so a padding [`Str`] is a
/// static slice: no allocation, copy or reference count.
///
/// A padding starts at one of `EXTRA_OFFSETS` places (16 bits of a draw) and is
/// at most `EXTRA_MAX_BYTES` long (the reference's averages ask for about 100
/// bytes), so the pool holds both.
const EXTRA_POOL_BYTES: usize = EXTRA_OFFSETS + EXTRA_MAX_BYTES;
const EXTRA_OFFSETS: usize = 1 << 16;
const EXTRA_MAX_BYTES: usize = 1 << 16;

fn extra_pool() -> StaticAscii {
    static POOL: std::sync::OnceLock<StaticAscii> = std::sync::OnceLock::new();
    *POOL.get_or_init(|| {
        let mut rng = Rng::keyed(0, DOMAIN_EXTRA_POOL, 0);
        let pool = next_exact_string(&mut rng, EXTRA_POOL_BYTES as u64);
        StaticAscii::new(Box::leak(pool.into_boxed_str())).expect("the pool is ASCII")
    })
}

/// The model size the reference counts for a bid (four numbers of 8 bytes).
const BID_COUNTED_BYTES: u64 = 32;

/// The reference's `nextExtra` length distribution for one current size: `None`
/// when the record is already at or over its average (no padding), else
/// `base + below(2 * delta)` bytes.
#[derive(Clone, Copy, Debug)]
struct Padding(Option<(u64, u64)>);

impl Padding {
    #[inline]
    fn new(current_size: u64, avg_size: u64) -> Padding {
        if current_size > avg_size {
            return Padding(None);
        }
        let wanted = avg_size - current_size;
        let delta = java_round(wanted as f64 * 0.2);
        Padding(Some((wanted - delta, delta)))
    }
}

/// The reference's `nextExtra`: pads a record to its average size on average.
/// 32 bits: the length (16, so within `2 delta / 2^16` of uniform), then the
/// offset in the pool (16, exactly uniform).
#[inline]
fn next_extra(bits: &mut Bits, pool: StaticAscii, padding: Padding) -> Str {
    let Padding(Some((base, delta))) = padding else {
        return Str::new();
    };
    let size = ((base + bits.below(16, 2 * delta)) as usize).min(EXTRA_MAX_BYTES);
    let offset = bits.take(16) as usize;
    pool.slice(offset..offset + size)
}

/// Tables of [`price_of_draw`]: `coarse[a] = 100 * 2^(a / 128)` and
/// `fine[b] = 2^(b / 16384)`, each within two ulps (libm's `exp2`).
struct PriceTables {
    coarse: [f64; 128],
    fine: [f64; 128],
}

impl std::fmt::Debug for PriceTables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PriceTables")
    }
}

fn price_tables() -> &'static PriceTables {
    static TABLES: std::sync::OnceLock<PriceTables> = std::sync::OnceLock::new();
    TABLES.get_or_init(|| PriceTables {
        coarse: std::array::from_fn(|a| 100.0 * (a as f64 / 128.0).exp2()),
        fine: std::array::from_fn(|b| (b as f64 / 16_384.0).exp2()),
    })
}

/// A bound on the relative difference between [`price_approx`] and
/// `10f64.powf(x) * 100.0` for the `x` of the same draw: the approximation's own
/// error is below 4e-15 (see there) and libm's `pow` and the product are within
/// an ulp each, so this leaves a margin of 20.
/// `prices_are_those_of_the_reference_formula` checks it.
const PRICE_RELATIVE_ERROR_BOUND: f64 = 1e-13;

/// `6 log2(10)` in fixed point with 59 fractional bits (the rounding error is
/// 6e-20 relative).
const SIX_LOG2_10_FIXED_59: u64 = 0x9f73_da38_d9d4_a83e;

/// `10^(6 m / 2^53) * 100` for a 53-bit draw `m`, within 4e-15 relative of
/// `10^x * 100` for the reference's `x = (m * 2^-53) * 6.0` (a rounded f64), with
/// a short chain of dependent operations (the libm `pow` it replaces, and a
/// Horner polynomial, made the price the longest latency of a bid).
///
/// `t = x log2(10)` is computed in fixed point (`m * 6 log2(10)`, 112 fractional
/// bits, no rounding that matters) and split as `i + a / 128 + b / 16384 + r`
/// with `r < 2^-14`; `2^t = 2^i * coarse[a] * fine[b] * e^(r ln 2)`, the last by
/// the degree-3 Taylor polynomial. Errors: `x` itself is `6 m / 2^53` rounded
/// (2^-53 relative, so 1.5e-15 in `10^x`), the two table entries (4.4e-16
/// each), the polynomial (truncation below 2e-19, rounding 2.2e-16) and the
/// products (3.3e-16).
#[inline]
fn price_approx(m: u64, tables: &PriceTables) -> f64 {
    debug_assert!(m < 1 << 53);
    let t = u128::from(m) * u128::from(SIX_LOG2_10_FIXED_59); // t * 2^112, t < 20
    let i = (t >> 112) as u64;
    let a = ((t >> 105) & 127) as usize;
    let b = ((t >> 98) & 127) as usize;
    // r * 2^77 (its top 63 bits), r < 2^-14.
    let r_fixed = ((t >> 35) as u64) & ((1 << 63) - 1);
    let z = r_fixed as i64 as f64 * (std::f64::consts::LN_2 / (1u128 << 77) as f64);
    let p = (1.0 + z) + (z * z) * (0.5 + z * (1.0 / 6.0));
    let power_of_two = f64::from_bits((i + 1023) << 52);
    (power_of_two * tables.coarse[a]) * (tables.fine[b] * p)
}

/// Bits of the uniform draw `U` of a price. The reference draws 53 (a Java
/// double); 32 leave steps of `U` of 2^-32, so neighbouring prices differ by at
/// most `6 ln(10) 2^-32` relative (0.3 cents at the top price of $1M): every
/// price in cents stays reachable, with the reference's probability to within
/// that step, and a draw carries two prices or a price and another field.
const PRICE_DRAW_BITS: u32 = 32;

/// The reference's `nextPrice`: `round(10^(U*6) * 100)` with Java's
/// `Math.round`, for `U` of [`PRICE_DRAW_BITS`] bits.
#[inline]
fn next_price(bits: &mut Bits, tables: &PriceTables) -> u64 {
    price_of_draw(bits.take(PRICE_DRAW_BITS) << (53 - PRICE_DRAW_BITS), tables)
}

/// The `x` of `nextPrice` for the 53-bit draw `m`: a uniform draw in `[0, 1)`
/// (`m * 2^-53`, exact), times 6.
fn price_exponent(m: u64) -> f64 {
    (m as f64 * (1.0 / (1u64 << 53) as f64)) * 6.0
}

/// `1.5 * 2^52`: adding it to an `f64` of magnitude below `2^51` rounds that
/// to the nearest integer (ties to even), which the sum then holds in the low
/// bits of its mantissa. Rounds with two additions and a mask, a shorter chain
/// than a conversion to an integer and back.
const ROUND_TO_INTEGER_MAGIC: f64 = 6_755_399_441_055_744.0;

/// `java_round(10f64.powf(price_exponent(m)) * 100.0)`, exactly: rounds the
/// approximation, whose error is below `PRICE_RELATIVE_ERROR_BOUND`, when it is
/// farther than that error from a rounding boundary (`k + 0.5`), since the exact
/// value then rounds to the same integer. Otherwise (about one price in 10^5)
/// it computes the exact value with libm.
#[inline]
fn price_of_draw(m: u64, tables: &PriceTables) -> u64 {
    let y = price_approx(m, tables);
    // `y` is in [100, 1e8], far below 2^51: `sum` is exactly `2^52 + 2^51 +
    // nearest` for the integer `nearest` closest to `y`, and `y - nearest` is
    // exact (Sterbenz).
    let sum = y + ROUND_TO_INTEGER_MAGIC;
    let nearest = sum - ROUND_TO_INTEGER_MAGIC;
    let distance = (y - nearest).abs();
    // Farther than the error from both boundaries `nearest ± 0.5`, so the exact
    // value's Java rounding (`floor(x + 0.5)`) is `nearest` too. Ties, where
    // rounding to even and Java's rounding could differ, are excluded.
    if distance < 0.5 - y * PRICE_RELATIVE_ERROR_BOUND {
        sum.to_bits() & ((1 << 51) - 1)
    } else {
        price_exact(price_exponent(m))
    }
}

/// The reference formula evaluated with libm's `pow`.
#[cold]
fn price_exact(x: f64) -> u64 {
    java_round(10f64.powf(x) * 100.0)
}

fn base_url(rng: &mut Rng) -> String {
    let mut url = String::from("https://www.nexmark.com/");
    for _ in 0..3 {
        url.push_str(&next_string(rng, 5, '_'));
        url.push('/');
    }
    url.push_str("item.htm?query=1");
    url
}

fn hot_url(seed: u64, i: usize) -> String {
    base_url(&mut Rng::keyed(seed, DOMAIN_HOT_URL, i as u64))
}

fn channel_url(seed: u64, k: u64) -> String {
    let mut rng = Rng::keyed(seed, DOMAIN_CHANNEL, k);
    let mut url = base_url(&mut rng);
    if rng.below(10) > 0 {
        // Java: Math.abs(Integer.reverse(k)), with int overflow.
        let id = (k as i32).reverse_bits().wrapping_abs();
        url.push_str("&channel_id=");
        url.push_str(&id.to_string());
    }
    url
}

/// Channels are numbered hot ones first: channel `c < HOT_CHANNELS.len()` is hot
/// channel `c`, and `HOT_CHANNELS.len() + k` non-hot channel `k`. A bid picks its
/// number, then reads its name and URL at that number in tables, the same code for
/// both kinds (a branch between them was mispredicted in half of all bids).
const NUM_ALL_CHANNELS: usize = HOT_CHANNELS.len() + NUM_CHANNELS as usize;

/// The URL of channel number `c` (see [`NUM_ALL_CHANNELS`]), computed.
fn any_channel_url(seed: u64, c: usize) -> String {
    match c.checked_sub(HOT_CHANNELS.len()) {
        None => hot_url(seed, c),
        Some(k) => channel_url(seed, k as u64),
    }
}

/// The reference's bid channel: hot (one of [`HOT_CHANNELS`]) unless
/// `below(HOT_CHANNELS_RATIO) == 0`, else uniform among the `NUM_CHANNELS`
/// others; as a channel number. 32 bits: the decision (one bit, as the ratio is
/// 2), then the pick among hot or among other channels, from the same 31 bits
/// since only one of the two is used.
#[inline]
fn next_channel(bits: &mut Bits) -> usize {
    const _: () = assert!(HOT_CHANNELS_RATIO == 2);
    let hot_mask = bits.take(1).wrapping_neg();
    let hot_channel = Bits(bits.0).below(31, HOT_CHANNELS.len() as u64);
    let other_channel = HOT_CHANNELS.len() as u64 + bits.below(31, NUM_CHANNELS);
    ((hot_channel & hot_mask) | (other_channel & !hot_mask)) as usize
}

/// `channel-<k>`: at most 12 bytes for `k < NUM_CHANNELS`, so inline.
fn channel_name(k: u64) -> Str {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = k;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    Scratch::new()
        .push(b"channel-")
        .push(&digits[at..])
        .finish()
}

/// Bytes per channel name in [`ChannelNames`]: `channel-` and up to 8 digits.
const CHANNEL_NAME_SLOT_BYTES: usize = 16;

/// The name of every channel (numbered as in [`NUM_ALL_CHANNELS`]), name `c` the
/// first `lens[c]` bytes of `text` at `c * CHANNEL_NAME_SLOT_BYTES`: built once per
/// process (160 KB) so a bid's channel name is a static slice at a computed
/// place, found by reading one byte of a 10 KB table.
#[derive(Clone, Copy, Debug)]
struct ChannelNames {
    text: StaticAscii,
    lens: &'static [u8],
}

impl ChannelNames {
    #[inline]
    fn name(&self, c: usize) -> Str {
        let at = c * CHANNEL_NAME_SLOT_BYTES;
        self.text.slice(at..at + usize::from(self.lens[c]))
    }
}

fn channel_names() -> ChannelNames {
    static NAMES: std::sync::OnceLock<ChannelNames> = std::sync::OnceLock::new();
    *NAMES.get_or_init(|| {
        let names: Vec<Str> = HOT_CHANNELS
            .iter()
            .map(|&name| Str::from_static(name))
            .chain((0..NUM_CHANNELS).map(channel_name))
            .collect();
        let mut text = String::with_capacity(NUM_ALL_CHANNELS * CHANNEL_NAME_SLOT_BYTES);
        for name in &names {
            text.push_str(name);
            let padding = CHANNEL_NAME_SLOT_BYTES
                .checked_sub(name.len())
                .expect("a channel name fits its slot");
            text.extend(std::iter::repeat_n(' ', padding));
        }
        let lens: Vec<u8> = names.iter().map(|name| name.len() as u8).collect();
        ChannelNames {
            text: StaticAscii::new(Box::leak(text.into_boxed_str()))
                .expect("channel names are ASCII"),
            lens: Box::leak(lens.into_boxed_slice()),
        }
    })
}

/// Every `"<first> <last>"` of the reference's names, first name `i` and last
/// name `j` at `i * LAST_NAMES.len() + j`: a person's name is one static string
/// picked by one draw (uniform over pairs, as two uniform picks are).
fn person_names() -> &'static [&'static str] {
    static NAMES: std::sync::OnceLock<&'static [&'static str]> = std::sync::OnceLock::new();
    NAMES.get_or_init(|| {
        let names: Vec<&'static str> = FIRST_NAMES
            .iter()
            .flat_map(|first| {
                LAST_NAMES
                    .iter()
                    .map(move |last| &*Box::leak(format!("{first} {last}").into_boxed_str()))
            })
            .collect();
        Box::leak(names.into_boxed_slice())
    })
}

/// Channel tables kept for the life of the process, at most one per seed and at
/// most this many seeds: their URL text (about 800 KB) is leaked so that a bid's
/// URL is a static [`Str`], whose clone and drop touch no reference count that
/// several cores would contend on (half of all bids name one of 4 hot URLs).
/// Further seeds get a table of their own, freed with its last [`Generator`],
/// whose URLs are reference counted.
const STATIC_CHANNEL_TABLES_MAX: usize = 8;

/// Where a bid finds the URL of channel number `c` (see [`NUM_ALL_CHANNELS`]).
/// Generation is generic over it, so that the kind of table is decided once per
/// event, above the bid, rather than inside it: a `Str` chosen between two
/// kinds of table there was built in memory and copied twice, stalling on a
/// store it was read back from.
trait ChannelUrls {
    fn url(&self, c: usize) -> Str;
}

/// URLs computed per bid (allocating): what [`event`] uses.
struct ComputedUrls {
    seed: u64,
}

impl ChannelUrls for ComputedUrls {
    fn url(&self, c: usize) -> Str {
        Str::from(any_channel_url(self.seed, c))
    }
}

/// URL `c` is the first `lens[c]` bytes of slot `c`, at `c * stride` in `text`: a
/// lookup reads one byte of a 10 KB table (a 24-byte `Str` of a 240 KB table
/// missed the L1 cache), never the text itself.
#[derive(Debug)]
struct StaticUrls {
    text: StaticAscii,
    stride: usize,
    lens: Vec<u8>,
}

impl ChannelUrls for StaticUrls {
    #[inline]
    fn url(&self, c: usize) -> Str {
        let at = c * self.stride;
        self.text.slice(at..at + usize::from(self.lens[c]))
    }
}

/// Reference-counted URLs (tables beyond [`STATIC_CHANNEL_TABLES_MAX`]).
#[derive(Debug)]
struct CountedUrls(Vec<Str>);

impl ChannelUrls for CountedUrls {
    #[inline]
    fn url(&self, c: usize) -> Str {
        self.0[c].clone()
    }
}

/// Precomputed URLs of all channels for one seed (a pure cache of
/// [`any_channel_url`]), numbered as in [`NUM_ALL_CHANNELS`].
#[derive(Debug)]
enum ChannelTable {
    Static(StaticUrls),
    Counted(CountedUrls),
}

impl ChannelTable {
    /// The table for `seed`: shared with every generator of the same seed while
    /// fewer than [`STATIC_CHANNEL_TABLES_MAX`] seeds have been seen.
    fn for_seed(seed: u64) -> Arc<ChannelTable> {
        static TABLES: std::sync::Mutex<Vec<(u64, Arc<ChannelTable>)>> =
            std::sync::Mutex::new(Vec::new());
        // A panic while building leaves the list as it was: ignore poisoning.
        let mut tables = TABLES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, table)) = tables.iter().find(|(s, _)| *s == seed) {
            return table.clone();
        }
        if tables.len() == STATIC_CHANNEL_TABLES_MAX {
            return Arc::new(ChannelTable::build(seed, false));
        }
        let table = Arc::new(ChannelTable::build(seed, true));
        tables.push((seed, table.clone()));
        table
    }

    /// With `leak`, every URL is a static slice of one leaked buffer; else each
    /// URL is its own reference-counted `Str`.
    fn build(seed: u64, leak: bool) -> ChannelTable {
        let urls: Vec<String> = (0..NUM_ALL_CHANNELS)
            .map(|c| any_channel_url(seed, c))
            .collect();
        if !leak {
            return ChannelTable::Counted(CountedUrls(urls.into_iter().map(Str::from).collect()));
        }
        let stride = urls.iter().map(String::len).max().unwrap_or(0);
        let mut text = String::with_capacity(urls.len() * stride);
        for url in &urls {
            text.push_str(url);
            text.extend(std::iter::repeat_n(' ', stride - url.len()));
        }
        let lens = urls
            .iter()
            .map(|url| u8::try_from(url.len()).expect("a channel URL is below 256 bytes"))
            .collect();
        ChannelTable::Static(StaticUrls {
            text: StaticAscii::new(Box::leak(text.into_boxed_str())).expect("URLs are ASCII"),
            stride,
            lens,
        })
    }

    /// The URL of channel number `c` (`c < NUM_ALL_CHANNELS`).
    #[cfg(test)]
    fn url(&self, c: usize) -> Str {
        match self {
            ChannelTable::Static(urls) => urls.url(c),
            ChannelTable::Counted(urls) => urls.url(c),
        }
    }
}

/// The state of one event's generation: the configuration, what was derived
/// from it, the event's number, time and place in the proportion cycle.
struct EventSite<'a> {
    c: &'a GeneratorConfig,
    plan: &'a Plan,
    /// The event's key: the seed of its [`Rng`], and a uniform 64-bit draw of
    /// its own (a bid's first), one SplitMix64 round earlier than the `Rng`'s.
    key: u64,
    /// Local event number on the event's timeline (`n / num_generators`).
    local: u64,
    ts: i64,
    cycle: CyclePosition,
}

/// A random choice between a hot id and another, by the reference's rule: hot
/// unless `below(ratio) == 0`, from 16 bits (so within `ratio / 2^16` of the
/// reference's odds; exactly for the default ratios 2 and 4). Both ids are
/// computed and one is selected by a mask: as an `if`, the compiler branched on
/// the coin flip (or computed the other id only when needed), a misprediction
/// every time the rarer side came up, in every other bid.
#[inline]
fn hot_or(bits: &mut Bits, ratio: u64, hot: u64, other: u64) -> u64 {
    let mask = u64::from(bits.below(16, ratio) > 0).wrapping_neg();
    (hot & mask) | (other & !mask)
}

/// Four groups of four digits: 16 uniform decimal digits, from one draw.
fn next_credit_card(draw: u64) -> Str {
    const GROUP: u64 = 10_000;
    let number = below(draw, GROUP.pow(4));
    let mut card = Scratch::new();
    card.push_4_digits(number / GROUP.pow(3))
        .push(b" ")
        .push_4_digits(number / GROUP.pow(2) % GROUP)
        .push(b" ")
        .push_4_digits(number / GROUP % GROUP)
        .push(b" ")
        .push_4_digits(number % GROUP);
    card.finish()
}

fn next_person(site: &EventSite<'_>, rng: &mut Rng) -> Person {
    let (c, plan) = (site.c, site.plan);
    let id = site.cycle.last_base0_person_id(c) + FIRST_PERSON_ID;
    let mut picks = rng.bits();
    let names = plan.person_names;
    let name = Str::from_static(names[picks.below(32, names.len() as u64) as usize]);
    let city = Str::from_static(US_CITIES[picks.below(16, US_CITIES.len() as u64) as usize]);
    let state = Str::from_static(US_STATES[picks.below(16, US_STATES.len() as u64) as usize]);
    let email_address = Scratch::new()
        .push(next_pooled_string(rng.bits(), 7, plan.string_pool).as_bytes())
        .push(b"@")
        .push(next_pooled_string(rng.bits(), 5, plan.string_pool).as_bytes())
        .push(b".com")
        .finish();
    let credit_card = next_credit_card(rng.next_u64());
    let current =
        8 + name.len() + email_address.len() + credit_card.len() + city.len() + state.len();
    let padding = Padding::new(current as u64, c.avg_person_byte_size);
    let extra = next_extra(&mut rng.bits(), plan.extra_pool, padding);
    Person {
        id,
        name,
        email_address,
        credit_card,
        city,
        state,
        date_time: site.ts,
        extra,
    }
}

fn next_auction(site: &EventSite<'_>, rng: &mut Rng) -> Auction {
    let (c, plan, ts) = (site.c, site.plan, site.ts);
    let id = site.cycle.last_base0_auction_id(c).max(0) as u64 + FIRST_AUCTION_ID;
    let last_person = site.cycle.last_base0_person_id(c);
    let mut seller_bits = rng.bits();
    let other_seller = c.next_base0_person_id(&mut seller_bits, last_person);
    let hot_seller = (last_person / HOT_BATCH) * HOT_BATCH;
    let seller = hot_or(
        &mut seller_bits,
        c.hot_sellers_ratio,
        hot_seller,
        other_seller,
    ) + FIRST_PERSON_ID;
    let mut prices = rng.bits();
    let initial_bid = next_price(&mut prices, plan.prices);
    let reserve = initial_bid + next_price(&mut prices, plan.prices);
    let mut misc = rng.bits();
    let category = FIRST_CATEGORY_ID + misc.below(32, NUM_CATEGORIES);
    // Length: on average the time until `num_in_flight_auctions` more auctions exist.
    let horizon_ms = plan.local_timestamp_ms(c, site.local + plan.events_for_auctions) - ts;
    let expires = ts + 1 + misc.below(32, horizon_ms.saturating_mul(2).max(1) as u64) as i64;
    let item_name = Scratch::new()
        .push(next_pooled_string(rng.bits(), 20, plan.string_pool).as_bytes())
        .finish();
    // Up to 99 bytes, a slice of the static pool like the other strings: no
    // copy and no allocation (generating an event never allocates).
    let description = Str::from_static(next_pooled_string(rng.bits(), 100, plan.string_pool));
    let current = 8 + item_name.len() + description.len() + 40;
    let padding = Padding::new(current as u64, c.avg_auction_byte_size);
    let extra = next_extra(&mut rng.bits(), plan.extra_pool, padding);
    Auction {
        id,
        item_name,
        description,
        initial_bid,
        reserve,
        date_time: ts,
        expires,
        seller,
        category,
        extra,
    }
}

#[inline]
fn next_bid(site: &EventSite<'_>, urls: &impl ChannelUrls, rng: &mut Rng) -> Bid {
    let (c, plan) = (site.c, site.plan);
    // The price first, from the event's key: its computation is the longest
    // chain of a bid, and the rest of the bid overlaps it.
    let mut price_and_channel = Bits(site.key);
    let price = next_price(&mut price_and_channel, plan.prices);
    let channel_number = next_channel(&mut price_and_channel);
    let mut ids = rng.bits();
    // Both hot-key decisions (16 bits each), then the padding (32).
    let mut hot_and_extra = rng.bits();
    let last_auction = site.cycle.last_base0_auction_id(c);
    let hot_auction = (last_auction.max(0) as u64 / HOT_BATCH) * HOT_BATCH;
    let other_auction = c.next_base0_auction_id(&mut ids, last_auction);
    let auction = hot_or(
        &mut hot_and_extra,
        c.hot_auction_ratio,
        hot_auction,
        other_auction,
    ) + FIRST_AUCTION_ID;
    let last_person = site.cycle.last_base0_person_id(c);
    let hot_bidder = (last_person / HOT_BATCH) * HOT_BATCH + 1;
    let other_bidder = c.next_base0_person_id(&mut ids, last_person);
    let bidder = hot_or(
        &mut hot_and_extra,
        c.hot_bidders_ratio,
        hot_bidder,
        other_bidder,
    ) + FIRST_PERSON_ID;
    let channel = plan.channel_names.name(channel_number);
    let url = urls.url(channel_number);
    let extra = next_extra(&mut hot_and_extra, plan.extra_pool, plan.bid_padding);
    Bid {
        auction,
        bidder,
        price,
        channel,
        url,
        date_time: site.ts,
        extra,
    }
}

#[inline]
fn generate(c: &GeneratorConfig, plan: &Plan, urls: &impl ChannelUrls, n: u64) -> Event {
    // The event's key, `Rng::keyed(c.seed, DOMAIN_EVENT, n)` with its seed-only
    // rounds done once: a uniform draw itself, and the seed of the others.
    let key = mix64(plan.event_key ^ n);
    let mut rng = Rng(key);
    let local = if c.num_generators == 1 {
        n
    } else {
        n / c.num_generators
    };
    let site = EventSite {
        c,
        plan,
        key,
        local,
        ts: plan.local_timestamp_ms(c, local),
        cycle: plan.cycle_position(n),
    };
    match site.cycle.kind(c) {
        EventKind::Bid => Event::Bid(next_bid(&site, urls, &mut rng)),
        EventKind::Person => Event::Person(next_person(&site, &mut rng)),
        EventKind::Auction => Event::Auction(next_auction(&site, &mut rng)),
    }
}

fn assert_valid(config: &GeneratorConfig) {
    if let Err(e) = config.validate() {
        panic!("{e}");
    }
}

/// Event number `n`: a pure function of `(config, n)`.
///
/// # Panics
/// If `config.validate()` fails.
pub fn event(config: &GeneratorConfig, n: u64) -> Event {
    assert_valid(config);
    generate(
        config,
        &Plan::new(config),
        &ComputedUrls { seed: config.seed },
        n,
    )
}

/// The events at stream positions `range`, in stream order (the event numbers of
/// `range` itself unless `out_of_order_group_size > 1`).
///
/// # Panics
/// If `config.validate()` fails.
pub fn events(config: &GeneratorConfig, range: Range<u64>) -> impl Iterator<Item = Event> {
    assert_valid(config);
    let config = config.clone();
    let plan = Plan::new(&config);
    let urls = ComputedUrls { seed: config.seed };
    range.map(move |q| generate(&config, &plan, &urls, config.event_number_at(q)))
}

/// The share of generator `index` of `count`: the positions `q` in `range` with
/// `q % count == index`, in order. The shares of `0..count` partition `range`.
///
/// # Panics
/// If `config.validate()` fails, `count == 0` or `index >= count`.
pub fn events_for_generator(
    config: &GeneratorConfig,
    range: Range<u64>,
    index: u64,
    count: u64,
) -> impl Iterator<Item = Event> {
    assert_valid(config);
    let config = config.clone();
    let plan = Plan::new(&config);
    let urls = ComputedUrls { seed: config.seed };
    positions_for(range, index, count)
        .map(move |q| generate(&config, &plan, &urls, config.event_number_at(q)))
}

fn positions_for(range: Range<u64>, index: u64, count: u64) -> impl Iterator<Item = u64> {
    assert!(
        index < count,
        "generator index {index} is not below the generator count {count}"
    );
    let first = range.start + (index + count - range.start % count) % count;
    (first..range.end.max(first)).step_by(count as usize)
}

/// A generator with its channel table precomputed (about 10,000 URLs, built once):
/// the same events as [`event`], produced faster. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Generator {
    config: GeneratorConfig,
    plan: Plan,
    channels: Arc<ChannelTable>,
}

impl Generator {
    /// Validates `config` and builds the channel table.
    pub fn new(config: GeneratorConfig) -> Result<Self, String> {
        config.validate()?;
        let channels = ChannelTable::for_seed(config.seed);
        let plan = Plan::new(&config);
        Ok(Generator {
            config,
            plan,
            channels,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &GeneratorConfig {
        &self.config
    }

    /// Event number `n`; equal to [`event`]`(self.config(), n)`.
    #[inline]
    pub fn event(&self, n: u64) -> Event {
        match &*self.channels {
            ChannelTable::Static(urls) => generate(&self.config, &self.plan, urls, n),
            ChannelTable::Counted(urls) => generate(&self.config, &self.plan, urls, n),
        }
    }

    /// The event at stream position `position`.
    #[inline]
    pub fn event_at(&self, position: u64) -> Event {
        // In order (the default), positions are event numbers: skip the divisions.
        let n = if self.config.out_of_order_group_size == 1 {
            position
        } else {
            self.config.event_number_at(position)
        };
        self.event(n)
    }

    /// Like [`events`].
    pub fn events(&self, range: Range<u64>) -> impl Iterator<Item = Event> + '_ {
        range.map(move |q| self.event_at(q))
    }

    /// Like [`events_for_generator`].
    ///
    /// # Panics
    /// If `count == 0` or `index >= count`.
    pub fn events_for_generator(
        &self,
        range: Range<u64>,
        index: u64,
        count: u64,
    ) -> impl Iterator<Item = Event> + '_ {
        positions_for(range, index, count).map(move |q| self.event_at(q))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_reference_bookkeeping() {
        let c = GeneratorConfig::default();
        // Event 0 is person 0, events 1..4 are auctions 0..3, 4..50 bids.
        assert_eq!(c.last_base0_person_id(0), 0);
        assert_eq!(c.last_base0_person_id(49), 0);
        assert_eq!(c.last_base0_person_id(50), 1);
        assert_eq!(c.last_base0_auction_id(0), -1);
        assert_eq!(c.last_base0_auction_id(1), 0);
        assert_eq!(c.last_base0_auction_id(3), 2);
        assert_eq!(c.last_base0_auction_id(4), 2);
        assert_eq!(c.last_base0_auction_id(50), 2);
        assert_eq!(c.last_base0_auction_id(51), 3);
        match event(&c, 50) {
            Event::Person(p) => assert_eq!(p.id, 1001),
            e => panic!("{e:?}"),
        }
        match event(&c, 53) {
            Event::Auction(a) => assert_eq!(a.id, 1005),
            e => panic!("{e:?}"),
        }
    }

    #[test]
    fn exact_string_uses_java_signed_remainder() {
        let mut rng = Rng::keyed(1, 2, 3);
        let s = next_exact_string(&mut rng, 60_000);
        assert_eq!(s.len(), 60_000);
        assert!(s.bytes().all(|b| (b'H'..=b'z').contains(&b)), "{s}");
        // Both halves of the range occur.
        assert!(s.bytes().any(|b| b < b'a') && s.bytes().any(|b| b > b'a'));
    }

    #[test]
    fn next_string_respects_bounds() {
        let mut rng = Rng::keyed(0, 0, 0);
        for _ in 0..10_000 {
            let s = next_string(&mut rng, 20, ' ');
            assert!(s.len() < 20);
            assert!(!s.starts_with(' ') && !s.ends_with(' '));
        }
    }

    #[test]
    fn prices_span_one_dollar_to_a_million() {
        let mut rng = Rng::keyed(0, 0, 1);
        let tables = price_tables();
        let prices: Vec<u64> = (0..100_000)
            .map(|_| next_price(&mut rng.bits(), tables))
            .collect();
        assert!(prices.iter().all(|&p| (100..=100_000_000).contains(&p)));
        // log-uniform: about a sixth below 10^3 cents.
        let low = prices.iter().filter(|&&p| p < 1000).count();
        assert!((15_000..18_500).contains(&low), "{low}");
    }

    /// The fast price path gives the reference formula's value for every draw
    /// tried, and its error stays well inside the bound that makes it exact.
    #[test]
    fn prices_are_those_of_the_reference_formula() {
        let tables = price_tables();
        let mut worst = 0f64;
        let mut check = |m: u64| {
            let m = m.min((1 << 53) - 1);
            let exact = 10f64.powf(price_exponent(m)) * 100.0;
            let approx = price_approx(m, tables);
            worst = worst.max((approx - exact).abs() / exact);
            let reference = java_round(exact);
            assert_eq!(price_of_draw(m, tables), reference, "m = {m}");
        };
        let mut rng = Rng::keyed(0, 0, 2);
        for _ in 0..3_000_000 {
            check(rng.next_u64() >> 11);
        }
        // Draws around: the ends; prices at rounding boundaries k + 0.5; the
        // boundaries of the table indices and of powers of two.
        let to_draw = |x: f64| (x / 6.0 * (1u64 << 53) as f64) as u64;
        let mut draws = vec![0, (1 << 53) - 1];
        for k in 100..20_000 {
            draws.push(to_draw(((f64::from(k) + 0.5) / 100.0).log10()));
        }
        for step in 0..20 * 16_384u64 {
            let t = step as f64 / 16_384.0;
            draws.push(to_draw(t / std::f64::consts::LOG2_10));
        }
        for m in draws {
            for d in 0..5 {
                check(m.saturating_sub(2) + d);
            }
        }
        println!("worst relative error of the price approximation: {worst:e}");
        assert!(worst < PRICE_RELATIVE_ERROR_BOUND / 10.0, "{worst:e}");
    }

    #[test]
    fn channel_ids_use_java_int_reverse() {
        assert_eq!((1i32).reverse_bits().wrapping_abs(), i32::MIN);
        assert_eq!((2i32).reverse_bits().wrapping_abs(), 1 << 30);
        let (name, url) = (channel_name(42), channel_url(0, 42));
        assert_eq!(name, "channel-42");
        assert!(url.starts_with("https://www.nexmark.com/"), "{url}");
        assert!(url.contains("/item.htm?query=1"), "{url}");
    }

    #[test]
    fn table_and_direct_paths_agree() {
        let c = GeneratorConfig {
            seed: 99,
            ..GeneratorConfig::default()
        };
        let g = Generator::new(c.clone()).unwrap();
        for n in 0..5_000 {
            assert_eq!(g.event(n), event(&c, n), "event {n}");
        }
    }

    #[test]
    fn leaked_and_reference_counted_tables_agree() {
        let (leaked, counted) = (ChannelTable::build(5, true), ChannelTable::build(5, false));
        let urls = |t: &ChannelTable| (0..NUM_ALL_CHANNELS).map(|c| t.url(c)).collect();
        let (leaked_urls, counted_urls): (Vec<Str>, Vec<Str>) = (urls(&leaked), urls(&counted));
        assert!(leaked_urls.iter().all(Str::is_static));
        assert!(counted_urls
            .iter()
            .all(|u| !u.is_static() && !u.is_inline()));
        assert_eq!(leaked_urls, counted_urls);
        match (&leaked, &counted) {
            (ChannelTable::Static(leaked), ChannelTable::Counted(counted)) => {
                assert_eq!(leaked.lens.len(), NUM_ALL_CHANNELS);
                assert_eq!(counted.0.len(), NUM_ALL_CHANNELS);
            }
            other => panic!("{other:?}"),
        }
        let hot = HOT_CHANNELS.len();
        for (i, name) in HOT_CHANNELS.iter().enumerate() {
            assert_eq!(leaked_urls[i], hot_url(5, i));
            assert_eq!(channel_names().name(i), *name);
        }
        for k in [0, 1, 42, NUM_CHANNELS - 1] {
            assert_eq!(leaked_urls[hot + k as usize], channel_url(5, k));
            assert_eq!(channel_name(k), format!("channel-{k}"));
            assert_eq!(channel_names().name(hot + k as usize), channel_name(k));
        }
        // The same seed shares one table.
        assert!(Arc::ptr_eq(
            &ChannelTable::for_seed(5),
            &ChannelTable::for_seed(5)
        ));
    }

    #[test]
    fn divisor_divides_like_the_hardware() {
        let mut rng = Rng::keyed(0, 0, 4);
        let mut divisors = vec![
            2,
            3,
            7,
            50,
            64,
            1000,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ];
        divisors.extend((0..1000).map(|_| 2 + rng.below(u64::MAX - 2)));
        for d in divisors {
            let divisor = Divisor::new(d);
            let mut numerators = vec![0, 1, d - 1, d, d.wrapping_add(1), u64::MAX - 1, u64::MAX];
            numerators.extend((0..100).map(|_| rng.next_u64()));
            for n in numerators {
                assert_eq!(divisor.div_rem(n), (n / d, n % d), "{n} / {d}");
            }
        }
    }

    /// Slices of the string pool have the lengths of the reference's
    /// `nextString`, drawn character by character (means within 1%).
    #[test]
    fn pooled_strings_follow_next_string() {
        let pool = string_pool();
        let mut rng = Rng::keyed(0, 0, 5);
        for max_len in [5, 7, 20, 100] {
            let draws = 50_000;
            let (mut pooled, mut drawn) = (0, 0);
            for _ in 0..draws {
                let s = next_pooled_string(rng.bits(), max_len, pool).as_bytes();
                assert!(s.len() < max_len as usize);
                assert!(s.first() != Some(&b' ') && s.last() != Some(&b' '));
                assert!(s.iter().all(|&b| b == b' ' || b.is_ascii_lowercase()));
                pooled += s.len();
                drawn += next_string(&mut rng, max_len, ' ').len();
            }
            let ratio = pooled as f64 / drawn as f64;
            assert!((ratio - 1.0).abs() < 0.01, "max {max_len}: {ratio}");
        }
    }

    #[test]
    fn draws_split_into_fields() {
        let mut bits = Bits(0xabcd_0123_4567_89ef);
        assert_eq!(bits.take(16), 0xabcd);
        assert_eq!(bits.take(16), 0x0123);
        // 0x4567_89ef / 2^32 of 1000.
        assert_eq!(bits.below(32, 1000), (0x4567_89ef * 1000) >> 32);
        let mut bits = Bits(u64::MAX);
        assert_eq!(bits.below(32, 7), 6);
        assert_eq!(bits.below(32, 0), 0);
    }

    #[test]
    fn generated_strings_are_inline_or_static() {
        let g = Generator::new(GeneratorConfig::default()).unwrap();
        let cheap = |s: &Str| s.is_inline() || s.is_static();
        for n in 0..10_000 {
            match g.event(n) {
                Event::Person(p) => {
                    let fields = [&p.name, &p.email_address, &p.credit_card, &p.city];
                    assert!(fields.into_iter().chain([&p.state, &p.extra]).all(cheap));
                }
                Event::Auction(a) => {
                    let fields = [&a.item_name, &a.description, &a.extra];
                    assert!(fields.into_iter().all(cheap), "{a:?}");
                }
                Event::Bid(b) => assert!(cheap(&b.channel) && cheap(&b.url) && cheap(&b.extra)),
            }
        }
    }

    #[test]
    fn out_of_order_groups_permute_within_groups() {
        let c = GeneratorConfig {
            out_of_order_group_size: 10,
            ..GeneratorConfig::default()
        };
        let mut numbers: Vec<u64> = (0..1000).map(|q| c.event_number_at(q)).collect();
        assert_ne!(numbers, (0..1000).collect::<Vec<_>>());
        for (q, &n) in numbers.iter().enumerate() {
            assert_eq!(n / 10, q as u64 / 10);
            assert!(c.timestamp_ms(n) >= c.watermark_ms(q as u64));
        }
        numbers.sort_unstable();
        assert_eq!(numbers, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn positions_partition_ranges() {
        for count in 1..5 {
            for start in 0..7 {
                let mut all: Vec<u64> = (0..count)
                    .flat_map(|i| positions_for(start..start + 23, i, count))
                    .collect();
                all.sort_unstable();
                assert_eq!(all, (start..start + 23).collect::<Vec<_>>());
            }
        }
        assert_eq!(positions_for(5..5, 1, 3).count(), 0);
    }

    /// FNV-1a over the codec encoding of the events at positions `range`.
    fn fingerprint(g: &Generator, range: Range<u64>) -> u64 {
        let mut hash = 0xcbf2_9ce4_8422_2325u64;
        for e in g.events(range) {
            for b in rheon_net::codec::encode_to_vec(&e) {
                hash = (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
        hash
    }

    /// The stream is pinned: an optimization of the generator must not change a
    /// single byte of it unless it means to (the fingerprints were last taken when
    /// values came to be drawn as fields of fewer draws, and strings sliced from
    /// pools).
    #[test]
    fn generated_stream_is_unchanged() {
        let cases = [
            (GeneratorConfig::default(), 0x73f4_de7b_dbec_5826),
            (
                GeneratorConfig {
                    seed: 7,
                    num_generators: 3,
                    out_of_order_group_size: 10,
                    ..GeneratorConfig::default()
                },
                0xd165_45ae_7d03_2c9c,
            ),
            (
                GeneratorConfig {
                    seed: 12_345,
                    first_event_rate: 1_000,
                    ..GeneratorConfig::default()
                },
                0x94e4_2322_d774_f0c6,
            ),
            (
                GeneratorConfig {
                    seed: 3,
                    person_proportion: 2,
                    auction_proportion: 5,
                    bid_proportion: 13,
                    num_generators: 2,
                    avg_bid_byte_size: 40,
                    ..GeneratorConfig::default()
                },
                0x0417_3848_ac18_d05b,
            ),
        ];
        for (c, expected) in cases {
            let g = Generator::new(c.clone()).unwrap();
            assert_eq!(fingerprint(&g, 0..100_000), expected, "{c:?}");
            let direct = events(&c, 0..2_000).collect::<Vec<_>>();
            assert!(direct.into_iter().eq(g.events(0..2_000)), "{c:?}");
        }
    }

    #[test]
    fn invalid_config_is_reported() {
        let c = GeneratorConfig {
            num_generators: 0,
            ..GeneratorConfig::default()
        };
        let err = Generator::new(c).unwrap_err();
        assert!(err.contains("num_generators"), "{err}");
    }
}
