//! Nexmark generator tests: the reference's proportions, id bookkeeping, value
//! domains, event times and sizes; determinism over any generator parallelism; the
//! binary codec and the JSON line format round trips; JSON error messages; heap
//! allocations per generated event (counted by this binary's allocator).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::{BTreeSet, HashMap};

use rheon::nexmark::generator::{
    AUCTION_ID_LEAD, FIRST_AUCTION_ID, FIRST_PERSON_ID, HOT_CHANNELS, NUM_CHANNELS, PERSON_ID_LEAD,
    US_CITIES, US_STATES,
};
use rheon::nexmark::{
    event, events, events_for_generator, parse_json_line, to_json_line, Event, Generator,
    GeneratorConfig, Str,
};
use rheon::Codec;
use rheon_net::codec::{decode_exact, encode_to_vec};

/// The system allocator, counting the allocations of each thread.
struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the counter is a const-initialised thread local, so
// touching it does not allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: the caller's guarantees for `layout` carry over.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

fn allocations_on_this_thread() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

fn config() -> GeneratorConfig {
    GeneratorConfig::default()
}

fn kind(e: &Event) -> u8 {
    e.event_type()
}

#[test]
fn proportions_are_exactly_1_3_46_per_50_events() {
    let all: Vec<Event> = events(&config(), 0..50_000).collect();
    for (block, chunk) in all.chunks(50).enumerate() {
        let kinds: Vec<u8> = chunk.iter().map(kind).collect();
        assert_eq!(kinds[0], 0, "block {block}");
        assert_eq!(&kinds[1..4], &[1, 1, 1], "block {block}");
        assert!(kinds[4..].iter().all(|&k| k == 2), "block {block}");
    }
}

#[test]
fn same_config_same_events_and_seed_matters() {
    let c = config();
    let a: Vec<Event> = events(&c, 0..5_000).collect();
    let b: Vec<Event> = events(&c, 0..5_000).collect();
    assert_eq!(a, b);
    let g = Generator::new(c.clone()).unwrap();
    assert_eq!(g.events(0..5_000).collect::<Vec<_>>(), a);
    for n in [0, 1, 4, 49, 4_999] {
        assert_eq!(event(&c, n), a[n as usize]);
    }
    // A sub-range is the same slice of the stream.
    assert_eq!(
        events(&c, 1_234..1_300).collect::<Vec<_>>(),
        a[1_234..1_300]
    );
    let other = GeneratorConfig { seed: 7, ..c };
    let d: Vec<Event> = events(&other, 0..5_000).collect();
    assert_ne!(a, d);
    // Only the random parts differ: kinds and times do not depend on the seed.
    assert!(a.iter().zip(&d).all(|(x, y)| kind(x) == kind(y)));
    assert!(a
        .iter()
        .zip(&d)
        .all(|(x, y)| x.timestamp_ms() == y.timestamp_ms()));
}

/// Runs `count` generators over `range` and merges their outputs back by position.
fn union_of_generators(c: &GeneratorConfig, range: std::ops::Range<u64>, count: u64) -> Vec<Event> {
    let g = Generator::new(c.clone()).unwrap();
    let mut shares: Vec<Vec<Event>> = (0..count)
        .map(|i| {
            let free: Vec<Event> = events_for_generator(c, range.clone(), i, count).collect();
            let cached: Vec<Event> = g.events_for_generator(range.clone(), i, count).collect();
            assert_eq!(free, cached);
            free
        })
        .collect();
    let mut merged = Vec::new();
    for q in range {
        let share = &mut shares[(q % count) as usize];
        merged.push(share.remove(0));
    }
    assert!(shares.iter().all(Vec::is_empty));
    merged
}

#[test]
fn any_generator_parallelism_yields_the_same_stream() {
    let configs = [
        config(),
        GeneratorConfig {
            num_generators: 3,
            out_of_order_group_size: 7,
            seed: 11,
            ..config()
        },
    ];
    for c in &configs {
        for range in [0..3_000, 17..2_017] {
            let single: Vec<Event> = events(c, range.clone()).collect();
            for count in 1..=3 {
                assert_eq!(
                    union_of_generators(c, range.clone(), count),
                    single,
                    "{count} generators, {c:?}"
                );
            }
        }
    }
    // In order, generator i of n gets exactly the event numbers congruent to i.
    let c = config();
    for count in 1..=3 {
        for i in 0..count {
            let share: Vec<Event> = events_for_generator(&c, 0..600, i, count).collect();
            let expected: Vec<Event> = (0..600)
                .filter(|n| n % count == i)
                .map(|n| event(&c, n))
                .collect();
            assert_eq!(share, expected);
        }
    }
}

#[test]
fn timestamps_are_base_plus_n_times_the_delay() {
    // Benchmark rate: 0.1 us per event, so ten thousand events per millisecond.
    let c = config();
    assert_eq!(c.inter_event_delay_us(), 0.1);
    let mut last = i64::MIN;
    for (n, e) in events(&c, 0..200_000).enumerate() {
        let n = n as i64;
        assert_eq!(e.timestamp_ms(), c.base_time_ms + n / 10_000, "event {n}");
        assert!(e.timestamp_ms() >= last);
        last = e.timestamp_ms();
    }
    // 1000 events/s: one millisecond apart.
    let slow = GeneratorConfig {
        first_event_rate: 1_000,
        ..config()
    };
    for (n, e) in events(&slow, 0..5_000).enumerate() {
        assert_eq!(e.timestamp_ms(), slow.base_time_ms + n as i64);
    }
    // Four timelines at 1000 events/s in total: each at 250/s, 4 ms apart locally.
    let four = GeneratorConfig {
        first_event_rate: 1_000,
        num_generators: 4,
        ..config()
    };
    assert_eq!(four.inter_event_delay_us(), 4_000.0);
    for (n, e) in events(&four, 0..5_000).enumerate() {
        let n = n as i64;
        assert_eq!(e.timestamp_ms(), four.base_time_ms + (n / 4) * 4);
    }
}

#[test]
fn out_of_order_groups_keep_times_at_or_after_the_watermark() {
    let c = GeneratorConfig {
        first_event_rate: 1_000,
        out_of_order_group_size: 100,
        ..config()
    };
    let stream: Vec<Event> = events(&c, 0..10_000).collect();
    let times: Vec<i64> = stream.iter().map(Event::timestamp_ms).collect();
    assert!(
        times.windows(2).any(|w| w[1] < w[0]),
        "some events are out of order"
    );
    for (q, t) in times.iter().enumerate() {
        assert!(*t >= c.watermark_ms(q as u64));
        assert!(
            *t < c.base_time_ms + (q as i64 / 100 + 1) * 100,
            "within its group"
        );
    }
    let mut sorted = times.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (0..10_000).map(|n| c.base_time_ms + n).collect::<Vec<_>>()
    );
}

/// The size the reference's `nextExtra` pads to its average: 8 bytes per numeric
/// field it counts plus the lengths of the strings it counts (see the generator's
/// module doc).
fn model_size(e: &Event) -> usize {
    match e {
        Event::Person(p) => {
            8 + p.name.len()
                + p.email_address.len()
                + p.credit_card.len()
                + p.city.len()
                + p.state.len()
                + p.extra.len()
        }
        Event::Auction(a) => 8 + a.item_name.len() + a.description.len() + 40 + a.extra.len(),
        Event::Bid(b) => 32 + b.extra.len(),
    }
}

#[test]
fn average_sizes_match_the_reference() {
    let g = Generator::new(config()).unwrap();
    let mut model = [0usize; 3];
    let mut encoded = [0usize; 3];
    let mut json = [0usize; 3];
    let mut count = [0usize; 3];
    let mut line = String::new();
    for e in g.events(0..100_000) {
        let k = kind(&e) as usize;
        model[k] += model_size(&e);
        encoded[k] += e.encoded_len();
        line.clear();
        to_json_line(&e, &mut line);
        json[k] += line.len();
        count[k] += 1;
    }
    assert_eq!(count, [2_000, 6_000, 92_000]);
    let avg = |v: [usize; 3]| [0, 1, 2].map(|k| v[k] as f64 / count[k] as f64);
    let (model, encoded, json) = (avg(model), avg(encoded), avg(json));
    eprintln!("model sizes   (person, auction, bid): {model:.1?}");
    eprintln!("encoded_len   (person, auction, bid): {encoded:.1?}");
    eprintln!("JSON line len (person, auction, bid): {json:.1?}");
    for (k, target) in [200.0, 500.0, 100.0].into_iter().enumerate() {
        assert!(
            (model[k] / target - 1.0).abs() < 0.10,
            "kind {k}: model size {} vs {target}",
            model[k]
        );
    }
    // The codec adds its framing to the person and auction (4 bytes per string, 8 for
    // date_time and the uncounted 8-byte field of the auction, 1 tag byte): 233 and 521.
    for (k, target) in [(0, 233.0), (1, 521.0)] {
        assert!(
            (encoded[k] / target - 1.0).abs() < 0.10,
            "kind {k}: encoded {} vs {target}",
            encoded[k]
        );
    }
    // A bid carries channel and url on top of its 100-byte model size.
    assert!(
        encoded[2] > 100.0 && encoded[2] < 200.0,
        "bid encoded {}",
        encoded[2]
    );
}

#[test]
fn ids_reference_existing_or_just_ahead_people_and_auctions() {
    let g = Generator::new(config()).unwrap();
    let (mut next_person, mut next_auction) = (FIRST_PERSON_ID, FIRST_AUCTION_ID);
    let (mut bids, mut existing_auction, mut existing_bidder) = (0u64, 0u64, 0u64);
    let (mut hot_auction, mut hot_bidder) = (0u64, 0u64);
    for e in g.events(0..200_000) {
        match e {
            Event::Person(p) => {
                assert_eq!(p.id, next_person);
                next_person += 1;
            }
            Event::Auction(a) => {
                assert_eq!(a.id, next_auction);
                next_auction += 1;
                assert!(a.seller >= FIRST_PERSON_ID && a.seller < next_person + PERSON_ID_LEAD);
            }
            Event::Bid(b) => {
                bids += 1;
                assert!(
                    b.auction >= FIRST_AUCTION_ID && b.auction < next_auction + AUCTION_ID_LEAD
                );
                assert!(b.bidder >= FIRST_PERSON_ID && b.bidder < next_person + PERSON_ID_LEAD);
                // Recent: among the last 100 in-flight auctions, or the hot one.
                assert!(
                    b.auction + 100 + 100 >= next_auction,
                    "{b:?}, next {next_auction}"
                );
                existing_auction += u64::from(b.auction < next_auction);
                existing_bidder += u64::from(b.bidder < next_person);
                let last_auction = next_auction - 1 - FIRST_AUCTION_ID;
                hot_auction += u64::from(b.auction - FIRST_AUCTION_ID == last_auction / 100 * 100);
                let last_person = next_person - 1 - FIRST_PERSON_ID;
                hot_bidder += u64::from(b.bidder - FIRST_PERSON_ID == last_person / 100 * 100 + 1);
            }
        }
    }
    let share = |x: u64| x as f64 / bids as f64;
    eprintln!(
        "bids on existing auctions {:.3}, by existing people {:.3}, hot auction {:.3}, hot bidder {:.3}",
        share(existing_auction),
        share(existing_bidder),
        share(hot_auction),
        share(hot_bidder)
    );
    assert!(share(existing_auction) > 0.95);
    assert!(share(existing_bidder) > 0.95);
    // Hot auction ratio 2 and hot bidder ratio 4, plus random picks that hit them.
    assert!((0.49..0.56).contains(&share(hot_auction)));
    assert!((0.74..0.78).contains(&share(hot_bidder)));
}

#[test]
fn values_come_from_the_reference_domains() {
    let g = Generator::new(config()).unwrap();
    let mut categories = BTreeSet::new();
    let mut states = BTreeSet::new();
    let mut urls: HashMap<Str, Str> = HashMap::new();
    let mut hot = 0u64;
    let mut bids = 0u64;
    for e in g.events(0..100_000) {
        match e {
            Event::Person(p) => {
                assert!(US_STATES.contains(&p.state.as_str()), "{p:?}");
                assert!(US_CITIES.contains(&p.city.as_str()), "{p:?}");
                assert!(
                    p.name.contains(' ') && p.email_address.ends_with(".com"),
                    "{p:?}"
                );
                assert_eq!(p.credit_card.len(), 19, "{p:?}");
                states.insert(p.state);
            }
            Event::Auction(a) => {
                assert!((10..15).contains(&a.category), "{a:?}");
                assert!((100..=100_000_000).contains(&a.initial_bid));
                assert!(a.reserve >= a.initial_bid + 100);
                // At 10 M events/s the reference's horizon (1666 events, 0.17 ms) rounds
                // to 0 or 1 ms: auctions last 1 or 2 ms.
                assert!((1..=2).contains(&(a.expires - a.date_time)), "{a:?}");
                assert!(a.item_name.len() < 20 && a.description.len() < 100);
                categories.insert(a.category);
            }
            Event::Bid(b) => {
                bids += 1;
                assert!((100..=100_000_000).contains(&b.price));
                assert!(b.url.starts_with("https://www.nexmark.com/"), "{b:?}");
                if HOT_CHANNELS.contains(&b.channel.as_str()) {
                    hot += 1;
                } else {
                    let k: u64 = b.channel.strip_prefix("channel-").unwrap().parse().unwrap();
                    assert!(k < NUM_CHANNELS);
                }
                let url = urls
                    .entry(b.channel.clone())
                    .or_insert_with(|| b.url.clone());
                assert_eq!(*url, b.url, "one URL per channel");
            }
        }
    }
    assert_eq!(categories.len(), 5);
    assert_eq!(states.len(), 6);
    let hot_share = hot as f64 / bids as f64;
    assert!((0.48..0.52).contains(&hot_share), "{hot_share}");
}

#[test]
fn auction_lengths_average_the_in_flight_horizon() {
    // At 1000 events/s the next 1666 events take 1666 ms; lengths are 1..=3332 ms.
    let c = GeneratorConfig {
        first_event_rate: 1_000,
        ..config()
    };
    let mut total = 0i64;
    let mut n = 0i64;
    for e in events(&c, 0..100_000) {
        if let Event::Auction(a) = e {
            let len = a.expires - a.date_time;
            assert!((1..=3_332).contains(&len), "{len}");
            total += len;
            n += 1;
        }
    }
    let mean = total as f64 / n as f64;
    assert!((1_600.0..1_730.0).contains(&mean), "{mean}");
}

#[test]
fn codec_round_trips_generated_events() {
    for e in events(&config(), 0..2_000) {
        let bytes = encode_to_vec(&e);
        assert_eq!(bytes.len(), e.encoded_len());
        assert_eq!(decode_exact::<Event>(&bytes).unwrap(), e);
    }
}

#[test]
fn json_round_trips_10000_events() {
    let mut line = String::new();
    for e in events(
        &GeneratorConfig {
            seed: 3,
            ..config()
        },
        0..10_000,
    ) {
        line.clear();
        to_json_line(&e, &mut line);
        assert!(!line.contains('\n'));
        assert!(line.starts_with(&format!("{{\"event_type\":{},", kind(&e))));
        assert_eq!(parse_json_line(&line).unwrap(), e, "{line}");
        line.push('\n');
        assert_eq!(parse_json_line(&line).unwrap(), e);
    }
}

fn bid_line() -> String {
    let e = events(&config(), 4..5).next().unwrap();
    assert_eq!(kind(&e), 2);
    let mut line = String::new();
    to_json_line(&e, &mut line);
    line
}

fn error_of(line: &str) -> String {
    parse_json_line(line).expect_err(line)
}

#[test]
fn malformed_json_lines_say_what_was_expected() {
    let good = bid_line();
    let cases: Vec<(String, &str)> = vec![
        (
            good.replace("\"price\":", "\"cost\":"),
            "expected field 'price' (a non-negative integer) in the bid object, but it is missing",
        ),
        (
            good.replacen("\"price\":", "\"price\":\"x\",\"p\":", 1),
            "expected field 'price' (a non-negative integer) in the bid object, found the string \"x\"",
        ),
        (
            good.replacen("\"bidder\":", "\"bidder\":-1,\"b\":", 1),
            "expected field 'bidder' (a non-negative integer) in the bid object, found the number -1",
        ),
        (
            good.replace("\"event_type\":2", "\"event_type\":5"),
            "expected field 'event_type' (0 for a person, 1 for an auction, 2 for a bid)",
        ),
        (
            good.replace("\"event_type\":2", "\"event_type\":0"),
            "expected field 'person' (an object) in the event object for event_type 0",
        ),
        (
            good.replace("\"person\":null", "\"person\":{}"),
            "expected field 'person' to be null in the event object for event_type 2 (a bid)",
        ),
        (
            good.replace("\"dateTime\":\"2015-07-15", "\"dateTime\":\"2015-13-15"),
            "expected field 'dateTime' (a valid calendar date) in the bid object",
        ),
        (
            good.replace("\"dateTime\":\"", "\"dateTime\":\"x"),
            "expected field 'dateTime' (a time like \"2015-07-15 00:00:00.000\") in the bid object",
        ),
        (
            good.replace("\"url\":", "\"url\":7,\"u\":"),
            "expected field 'url' (a string) in the bid object, found the number 7",
        ),
        (
            good.replace("\"bid\":{", "\"bid\":["),
            "invalid JSON at byte",
        ),
        (good[..good.len() - 1].to_owned(), "expected ',' or '}' in an object, found the end of the line"),
        (format!("{good} x"), "expected the end of the line after the JSON object, found 'x'"),
        ("[1,2]".to_owned(), "expected a JSON object for a Nexmark event, found an array of 2 elements"),
        (String::new(), "expected a JSON value, found the end of the line"),
        (
            "{\"event_type\":2,\"bid\":{\"auction\":1,\"auction\":2}}".to_owned(),
            "field 'auction' appears more than once in the bid object",
        ),
        ("{\"event_type\":\"2\"}".to_owned(), "expected field 'event_type' (a non-negative integer) in the event object"),
        ("{\"a\":\"\\q\"}".to_owned(), "invalid JSON at byte 7: expected an escape"),
    ];
    for (line, expected) in cases {
        let err = error_of(&line);
        assert!(
            err.contains(expected),
            "line {line}\n error {err}\n wanted {expected}"
        );
    }
}

#[test]
fn generating_never_allocates() {
    let g = Generator::new(config()).unwrap();
    // The first events build the shared padding pool.
    assert_eq!(g.events(0..1000).count(), 1000);
    let mut long_descriptions = 0;
    for n in 1000..201_000 {
        let before = allocations_on_this_thread();
        let e = g.event(n);
        let allocations = allocations_on_this_thread() - before;
        assert_eq!(allocations, 0, "event {n}: {e:?}");
        if matches!(&e, Event::Auction(a) if a.description.len() > Str::INLINE_CAPACITY_BYTES) {
            long_descriptions += 1;
        }
    }
    assert!(long_descriptions > 0);
}
