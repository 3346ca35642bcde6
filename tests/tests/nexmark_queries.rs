//! Every Nexmark query on the engine against plain reference implementations over
//! the same events (vectors, sorting and hash maps, no engine): generator source at
//! parallelism 1 and 2, the JSON-lines file source, and the file source's error on a
//! malformed line. q12 runs on processing time, so only its totals are compared.
//! q15–q19 emit running results (a row per change of a key's result): at
//! parallelism 1 every row is compared, at parallelism 2 (where intermediate rows
//! depend on how the two generators interleave) the last row per key, which is
//! the final result.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::io::Write;
use std::path::PathBuf;

use rheon::nexmark::{
    build, events, generator_source, json_file_source, to_json_line, Auction, Bid, Event,
    GeneratorConfig, Query, Str,
};
use rheon::{EngineConfig, StreamEnv};

const N: u64 = 100_000;

fn config() -> GeneratorConfig {
    GeneratorConfig {
        first_event_rate: 1_000,
        num_events: N,
        ..GeneratorConfig::default()
    }
}

fn engine(p: u32) -> EngineConfig {
    EngineConfig::default()
        .with_executors(2)
        .with_parallelism(p)
}

/// The reference rows of `query` over `all`, written plainly, sorted.
fn reference(query: Query, all: &[Event]) -> Vec<String> {
    let mut rows = reference_in_order(query, all);
    rows.sort();
    rows
}

/// The reference rows of `query` over `all`; for the running queries (q15–q19)
/// in the order a single subtask emits them over `all` in order.
fn reference_in_order(query: Query, all: &[Event]) -> Vec<String> {
    let mut rows = Vec::new();
    match query {
        Query::Q0 => {
            for e in all {
                if let Event::Bid(b) = e {
                    rows.push(format!(
                        "{},{},{},{},{}",
                        b.auction, b.bidder, b.price, b.date_time, b.extra
                    ));
                }
            }
        }
        Query::Q1 => {
            for e in all {
                if let Event::Bid(b) = e {
                    // 0.908 * price exactly, three decimals.
                    let milli = b.price * 908;
                    let euros = format!("{}.{:03}", milli / 1000, milli % 1000);
                    rows.push(format!(
                        "{},{},{},{},{}",
                        b.auction, b.bidder, euros, b.date_time, b.extra
                    ));
                }
            }
        }
        Query::Q2 => {
            for e in all {
                if let Event::Bid(b) = e {
                    if b.auction % 123 == 0 {
                        rows.push(format!("{},{}", b.auction, b.price));
                    }
                }
            }
        }
        Query::Q3 => {
            // Inner join of all persons and all auctions on seller = id.
            let mut persons: HashMap<u64, Vec<&rheon::nexmark::Person>> = HashMap::new();
            for e in all {
                if let Event::Person(p) = e {
                    if p.state == "OR" || p.state == "ID" || p.state == "CA" {
                        persons.entry(p.id).or_default().push(p);
                    }
                }
            }
            for e in all {
                if let Event::Auction(a) = e {
                    if a.category == 10 {
                        for p in persons.get(&a.seller).into_iter().flatten() {
                            rows.push(format!("{},{},{},{}", p.name, p.city, p.state, a.id));
                        }
                    }
                }
            }
        }
        Query::Q4 | Query::Q6 => {
            // Winning prices per category (q4) or seller (q6), in expiry order.
            let mut closed: BTreeMap<u64, Vec<(i64, u64, u64)>> = BTreeMap::new();
            for (a, b) in winning_bids(all) {
                let key = if query == Query::Q4 {
                    a.category
                } else {
                    a.seller
                };
                closed
                    .entry(key)
                    .or_default()
                    .push((a.expires, a.id, b.price));
            }
            for (key, mut list) in closed {
                list.sort();
                let mut last: VecDeque<u64> = VecDeque::new();
                let (mut sum, mut count) = (0u64, 0u64);
                for (_, _, price) in list {
                    let avg = if query == Query::Q4 {
                        sum += price;
                        count += 1;
                        sum / count
                    } else {
                        if last.len() == 10 {
                            last.pop_front();
                        }
                        last.push_back(price);
                        last.iter().sum::<u64>() / last.len() as u64
                    };
                    rows.push(format!("{key},{avg}"));
                }
            }
        }
        Query::Q5 => {
            let mut counts: BTreeMap<(i64, u64), u64> = BTreeMap::new();
            for b in bids(all) {
                let first = b.date_time - b.date_time.rem_euclid(2_000);
                let mut start = first;
                while start > b.date_time - 10_000 {
                    *counts.entry((start, b.auction)).or_default() += 1;
                    start -= 2_000;
                }
            }
            let mut max: BTreeMap<i64, u64> = BTreeMap::new();
            for (&(start, _), &n) in &counts {
                let m = max.entry(start).or_default();
                *m = (*m).max(n);
            }
            for (&(start, auction), &n) in &counts {
                if n == max[&start] {
                    rows.push(format!("{auction},{n}"));
                }
            }
        }
        Query::Q7 => {
            let mut max: BTreeMap<i64, u64> = BTreeMap::new();
            for b in bids(all) {
                let m = max.entry(b.date_time.div_euclid(10_000)).or_default();
                *m = (*m).max(b.price);
            }
            for b in bids(all) {
                if b.price == max[&b.date_time.div_euclid(10_000)] {
                    rows.push(format!(
                        "{},{},{},{},{}",
                        b.auction, b.price, b.bidder, b.date_time, b.extra
                    ));
                }
            }
        }
        Query::Q8 => {
            let mut sellers: BTreeSet<(u64, i64)> = BTreeSet::new();
            for e in all {
                if let Event::Auction(a) = e {
                    sellers.insert((a.seller, a.date_time.div_euclid(10_000)));
                }
            }
            let mut found: BTreeSet<(u64, String, i64)> = BTreeSet::new();
            for e in all {
                if let Event::Person(p) = e {
                    let w = p.date_time.div_euclid(10_000);
                    if sellers.contains(&(p.id, w)) {
                        found.insert((p.id, p.name.to_string(), w * 10_000));
                    }
                }
            }
            for (id, name, start) in found {
                rows.push(format!("{id},{name},{start}"));
            }
        }
        Query::Q9 => {
            for (a, b) in winning_bids(all) {
                rows.push(format!(
                    "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                    a.id,
                    a.item_name,
                    a.description,
                    a.initial_bid,
                    a.reserve,
                    a.date_time,
                    a.expires,
                    a.seller,
                    a.category,
                    a.extra,
                    b.auction,
                    b.bidder,
                    b.price,
                    b.date_time,
                    b.extra
                ));
            }
        }
        Query::Q11 => {
            let mut per_bidder: BTreeMap<u64, Vec<i64>> = BTreeMap::new();
            for b in bids(all) {
                per_bidder.entry(b.bidder).or_default().push(b.date_time);
            }
            for (bidder, mut times) in per_bidder {
                times.sort();
                let (mut start, mut end, mut n) = (times[0], times[0] + 10_000, 0u64);
                for t in times {
                    if t > end {
                        rows.push(format!("{bidder},{n},{start},{end}"));
                        (start, end, n) = (t, t + 10_000, 0);
                    }
                    end = end.max(t + 10_000);
                    n += 1;
                }
                rows.push(format!("{bidder},{n},{start},{end}"));
            }
        }
        Query::Q12 => {
            // Processing time: only the bids per bidder over all windows.
            let mut counts: BTreeMap<u64, u64> = BTreeMap::new();
            for b in bids(all) {
                *counts.entry(b.bidder).or_default() += 1;
            }
            for (bidder, n) in counts {
                rows.push(format!("{bidder},{n}"));
            }
        }
        Query::Q13 => {
            let side = std::fs::read_to_string(rheon::nexmark::queries::default_side_input())
                .expect("the side input exists after a q13 run");
            let values: HashMap<u64, &str> = side
                .lines()
                .map(|l| {
                    let (k, v) = l.split_once(',').unwrap();
                    (k.parse().unwrap(), v)
                })
                .collect();
            for b in bids(all) {
                if let Some(v) = values.get(&(b.auction % 10_000)) {
                    rows.push(format!(
                        "{},{},{},{},{v}",
                        b.auction, b.bidder, b.price, b.date_time
                    ));
                }
            }
        }
        Query::Q14 => {
            for b in bids(all) {
                let milli = b.price * 908;
                if milli > 1_000_000_000 && milli < 50_000_000_000 {
                    let hour = b.date_time.div_euclid(3_600_000).rem_euclid(24);
                    let kind = if (8..=18).contains(&hour) {
                        "dayTime"
                    } else if hour <= 6 || hour >= 20 {
                        "nightTime"
                    } else {
                        "otherTime"
                    };
                    let cs = b.extra.chars().filter(|&c| c == 'c').count();
                    rows.push(format!(
                        "{},{},{}.{:03},{kind},{},{},{cs}",
                        b.auction,
                        b.bidder,
                        milli / 1000,
                        milli % 1000,
                        b.date_time,
                        b.extra
                    ));
                }
            }
        }
        Query::Q20 => {
            let auctions: HashMap<u64, &Auction> = all
                .iter()
                .filter_map(|e| match e {
                    Event::Auction(a) if a.category == 10 => Some((a.id, a)),
                    _ => None,
                })
                .collect();
            for b in bids(all) {
                if let Some(a) = auctions.get(&b.auction) {
                    rows.push(format!(
                        "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                        b.auction,
                        b.bidder,
                        b.price,
                        b.channel,
                        b.url,
                        b.date_time,
                        b.extra,
                        a.item_name,
                        a.description,
                        a.initial_bid,
                        a.reserve,
                        a.date_time,
                        a.expires,
                        a.seller,
                        a.category,
                        a.extra
                    ));
                }
            }
        }
        Query::Q21 => {
            for b in bids(all) {
                let id = match b.channel.to_lowercase().as_str() {
                    "apple" => Some("0".to_string()),
                    "google" => Some("1".to_string()),
                    "facebook" => Some("2".to_string()),
                    "baidu" => Some("3".to_string()),
                    _ => b
                        .url
                        .split(['?', '&'])
                        .find_map(|part| part.strip_prefix("channel_id="))
                        .map(str::to_string),
                };
                if let Some(id) = id {
                    rows.push(format!(
                        "{},{},{},{},{id}",
                        b.auction, b.bidder, b.price, b.channel
                    ));
                }
            }
        }
        Query::Q22 => {
            for b in bids(all) {
                let parts: Vec<&str> = b.url.split('/').collect();
                let dir = |i: usize| parts.get(i).copied().unwrap_or("");
                rows.push(format!(
                    "{},{},{},{},{},{},{}",
                    b.auction,
                    b.bidder,
                    b.price,
                    b.channel,
                    dir(3),
                    dir(4),
                    dir(5)
                ));
            }
        }
        Query::Q15 | Query::Q16 => {
            // Per day (q15) or (channel, day) (q16): index 0 overall, 1-3 per rank.
            #[derive(Default)]
            struct Acc {
                bids: [u64; 4],
                bidders: [HashSet<u64>; 4],
                auctions: [HashSet<u64>; 4],
                max_minute: String,
            }
            let mut accs: HashMap<String, Acc> = HashMap::new();
            for b in bids(all) {
                let day = day_string(b.date_time);
                let key = if query == Query::Q15 {
                    day.clone()
                } else {
                    format!("{},{day}", b.channel)
                };
                let acc = accs.entry(key.clone()).or_default();
                let minute = minute_string(b.date_time);
                if minute > acc.max_minute {
                    acc.max_minute = minute;
                }
                for i in [0, rank_of(b.price)] {
                    acc.bids[i] += 1;
                    acc.bidders[i].insert(b.bidder);
                    acc.auctions[i].insert(b.auction);
                }
                let mut row = key;
                if query == Query::Q16 {
                    row = format!("{row},{}", acc.max_minute);
                }
                for n in acc.bids {
                    row = format!("{row},{n}");
                }
                for set in acc.bidders.iter().chain(&acc.auctions) {
                    row = format!("{row},{}", set.len());
                }
                rows.push(row);
            }
        }
        Query::Q17 => {
            // (counts overall and per rank, min, max, sum) per (auction, day).
            type Acc = ([u64; 4], u64, u64, u64);
            let mut accs: HashMap<(u64, String), Acc> = HashMap::new();
            for b in bids(all) {
                let day = day_string(b.date_time);
                let acc = accs
                    .entry((b.auction, day.clone()))
                    .or_insert(([0; 4], u64::MAX, 0, 0));
                acc.0[0] += 1;
                acc.0[rank_of(b.price)] += 1;
                acc.1 = acc.1.min(b.price);
                acc.2 = acc.2.max(b.price);
                acc.3 += b.price;
                let (n, min, max, sum) = *acc;
                rows.push(format!(
                    "{},{day},{},{},{},{},{min},{max},{},{sum}",
                    b.auction,
                    n[0],
                    n[1],
                    n[2],
                    n[3],
                    sum / n[0]
                ));
            }
        }
        Query::Q18 => {
            // A bid at least as late as the key's latest replaces it.
            let mut latest: HashMap<(u64, u64), i64> = HashMap::new();
            for b in bids(all) {
                let t = latest.entry((b.bidder, b.auction)).or_insert(i64::MIN);
                if b.date_time >= *t {
                    *t = b.date_time;
                    rows.push(bid_columns(b));
                }
            }
        }
        Query::Q19 => {
            // All bids per auction, sorted; a bid inserted at rank r <= 10 changes
            // ranks r..=min(len, 10).
            let order = |b: &Bid| {
                (
                    std::cmp::Reverse(b.price),
                    b.date_time,
                    b.bidder,
                    b.channel.to_string(),
                    b.url.to_string(),
                    b.extra.to_string(),
                )
            };
            let mut per_auction: HashMap<u64, Vec<&Bid>> = HashMap::new();
            for b in bids(all) {
                let sorted = per_auction.entry(b.auction).or_default();
                let at = sorted.partition_point(|x| order(x) <= order(b));
                sorted.insert(at, b);
                for (i, x) in sorted.iter().enumerate().take(10).skip(at) {
                    rows.push(format!("{},{}", bid_columns(x), i + 1));
                }
            }
        }
    }
    rows
}

/// q15–q17's price rank.
fn rank_of(price: u64) -> usize {
    if price < 10_000 {
        1
    } else if price < 1_000_000 {
        2
    } else {
        3
    }
}

/// `DATE_FORMAT(t, 'yyyy-MM-dd')` in UTC, by counting days through years and
/// months.
fn day_string(ms: i64) -> String {
    let leap = |y: i64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let mut days = ms.div_euclid(86_400_000);
    assert!(days >= 0, "times before 1970 are not expected");
    let mut year = 1970;
    while days >= if leap(year) { 366 } else { 365 } {
        days -= if leap(year) { 366 } else { 365 };
        year += 1;
    }
    let february = if leap(year) { 29 } else { 28 };
    let mut month = 1;
    for len in [31, february, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31] {
        if days < len {
            break;
        }
        days -= len;
        month += 1;
    }
    format!("{year:04}-{month:02}-{:02}", days + 1)
}

/// `DATE_FORMAT(t, 'HH:mm')` in UTC.
fn minute_string(ms: i64) -> String {
    let minute_of_day = ms.div_euclid(60_000).rem_euclid(24 * 60);
    format!("{:02}:{:02}", minute_of_day / 60, minute_of_day % 60)
}

/// `auction,bidder,price,channel,url,dateTime,extra`.
fn bid_columns(b: &Bid) -> String {
    format!(
        "{},{},{},{},{},{},{}",
        b.auction, b.bidder, b.price, b.channel, b.url, b.date_time, b.extra
    )
}

/// Whether `query` emits a running result per key (an updated row per change).
fn is_running(query: Query) -> bool {
    matches!(
        query,
        Query::Q15 | Query::Q16 | Query::Q17 | Query::Q18 | Query::Q19
    )
}

/// A running query's last row per key (its final result), sorted. `rows` must
/// hold each key's rows in emission order.
fn final_rows(query: Query, rows: &[String]) -> Vec<String> {
    let mut last: HashMap<String, &String> = HashMap::new();
    for row in rows {
        let cols: Vec<&str> = row.split(',').collect();
        let key = match query {
            Query::Q15 => cols[0].to_string(),
            // (auction, rank_number)
            Query::Q19 => format!("{},{}", cols[0], cols[cols.len() - 1]),
            // (channel, day), (auction, day), (auction, bidder)
            _ => format!("{},{}", cols[0], cols[1]),
        };
        last.insert(key, row);
    }
    let mut rows: Vec<String> = last.into_values().cloned().collect();
    rows.sort();
    rows
}

fn bids(all: &[Event]) -> impl Iterator<Item = &Bid> {
    all.iter().filter_map(|e| match e {
        Event::Bid(b) => Some(b),
        _ => None,
    })
}

/// Per auction, the highest bid (earliest on ties) within its lifetime.
fn winning_bids(all: &[Event]) -> Vec<(Auction, Bid)> {
    let mut best: HashMap<u64, &Bid> = HashMap::new();
    let auctions: HashMap<u64, &Auction> = all
        .iter()
        .filter_map(|e| match e {
            Event::Auction(a) => Some((a.id, a)),
            _ => None,
        })
        .collect();
    for b in bids(all) {
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
    best.into_iter()
        .map(|(id, b)| (auctions[&id].clone(), b.clone()))
        .collect()
}

/// q12's rows reduced to bids per bidder over all windows.
fn q12_totals(rows: &[String]) -> Vec<String> {
    let mut counts: BTreeMap<u64, u64> = BTreeMap::new();
    for row in rows {
        let mut cols = row.split(',');
        let bidder: u64 = cols.next().unwrap().parse().unwrap();
        *counts.entry(bidder).or_default() += cols.next().unwrap().parse::<u64>().unwrap();
    }
    counts
        .into_iter()
        .map(|(b, n)| format!("{b},{n}"))
        .collect()
}

/// The rows as collected: each subtask's rows in the order it emitted them.
fn run_generator_in_order(query: Query, p: u32) -> Vec<String> {
    let env = StreamEnv::new(engine(p));
    let out = build(query, generator_source(&env, config()));
    let handle = out.rows().collect();
    env.execute(&format!("nexmark {query} p={p}"))
        .unwrap_or_else(|e| panic!("{query} at parallelism {p}: {e}"));
    handle.take()
}

fn run_generator(query: Query, p: u32) -> Vec<String> {
    let mut rows = run_generator_in_order(query, p);
    if query == Query::Q12 {
        return q12_totals(&rows);
    }
    rows.sort();
    rows
}

fn run_file(query: Query, path: PathBuf) -> Result<Vec<String>, String> {
    let env = StreamEnv::new(engine(2));
    let out = build(query, json_file_source(&env, path));
    let handle = out.rows().collect();
    env.execute(&format!("nexmark {query} from file"))
        .map_err(|e| e.to_string())?;
    Ok(handle.take())
}

fn all_events() -> Vec<Event> {
    events(&config(), 0..N).collect()
}

fn check(query: Query) {
    // The engine runs first: q13's reference reads the side input it creates.
    let runs: Vec<(u32, Vec<String>)> = [1, 2].map(|p| (p, run_generator(query, p))).into();
    let expected = reference(query, &all_events());
    assert!(!expected.is_empty(), "{query}: the reference has no rows");
    for (p, got) in runs {
        assert_same(&format!("{query} p={p}"), &got, &expected);
    }
}

/// A running query: every row at parallelism 1, the final row per key at
/// parallelism 1 and 2.
fn check_running(query: Query) {
    let in_order = reference_in_order(query, &all_events());
    assert!(!in_order.is_empty(), "{query}: the reference has no rows");
    let expected_final = final_rows(query, &in_order);
    let mut expected = in_order;
    expected.sort();
    for p in [1, 2] {
        let got = run_generator_in_order(query, p);
        assert_same(
            &format!("{query} p={p} final rows"),
            &final_rows(query, &got),
            &expected_final,
        );
        if p == 1 {
            let mut got = got;
            got.sort();
            assert_same(&format!("{query} p=1 all rows"), &got, &expected);
        }
    }
}

fn assert_same(what: &str, got: &[String], expected: &[String]) {
    assert_eq!(got.len(), expected.len(), "{what}: row count");
    if got != expected {
        let first = got
            .iter()
            .zip(expected)
            .find(|(g, e)| g != e)
            .map(|(g, e)| format!("engine '{g}' vs reference '{e}'"));
        panic!("{what}: rows differ, first difference: {first:?}");
    }
}

macro_rules! query_tests {
    ($($name:ident: $query:expr;)*) => {$(
        #[test]
        fn $name() {
            check($query);
        }
    )*};
}

query_tests! {
    q4_matches_reference: Query::Q4;
    q5_matches_reference: Query::Q5;
    q6_matches_reference: Query::Q6;
    q7_matches_reference: Query::Q7;
    q8_matches_reference: Query::Q8;
    q9_matches_reference: Query::Q9;
    q11_matches_reference: Query::Q11;
    q12_counts_every_bid_once: Query::Q12;
    q13_matches_reference: Query::Q13;
    q14_matches_reference: Query::Q14;
    q20_matches_reference: Query::Q20;
    q21_matches_reference: Query::Q21;
    q22_matches_reference: Query::Q22;
}

#[test]
fn q15_matches_reference() {
    check_running(Query::Q15);
}

#[test]
fn q16_matches_reference() {
    check_running(Query::Q16);
}

#[test]
fn q17_matches_reference() {
    check_running(Query::Q17);
}

#[test]
fn q18_matches_reference() {
    check_running(Query::Q18);
}

#[test]
fn q19_matches_reference() {
    check_running(Query::Q19);
}

#[test]
fn q0_matches_reference() {
    check(Query::Q0);
}

#[test]
fn q1_matches_reference() {
    check(Query::Q1);
}

#[test]
fn q2_matches_reference() {
    check(Query::Q2);
}

#[test]
fn q3_matches_reference() {
    check(Query::Q3);
}

#[test]
fn q3_emits_pairs_whatever_the_order() {
    // A person arriving after its auctions, and two persons with the same id.
    let person = |id: u64, name: &str| {
        Event::Person(rheon::nexmark::Person {
            id,
            name: name.into(),
            email_address: Str::new(),
            credit_card: Str::new(),
            city: "Boise".into(),
            state: "ID".into(),
            date_time: 0,
            extra: Str::new(),
        })
    };
    let auction = |id: u64, seller: u64, category: u64| {
        Event::Auction(rheon::nexmark::Auction {
            id,
            item_name: Str::new(),
            description: Str::new(),
            initial_bid: 0,
            reserve: 0,
            date_time: 0,
            expires: 0,
            seller,
            category,
            extra: Str::new(),
        })
    };
    let input = vec![
        auction(1, 7, 10),
        auction(2, 7, 11),
        auction(3, 7, 10),
        person(7, "a"),
        auction(4, 7, 10),
        person(7, "b"),
        person(8, "c"),
    ];
    let env = StreamEnv::new(engine(2));
    let out = build(Query::Q3, env.from_collection(input.clone()));
    let handle = out.rows().collect();
    env.execute("q3 order").unwrap();
    let mut got = handle.take();
    got.sort();
    assert_eq!(got, reference(Query::Q3, &input));
    assert_eq!(got.len(), 6);
}

fn write_json(path: &PathBuf, all: &[Event]) {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut line = String::new();
    for e in all {
        line.clear();
        to_json_line(e, &mut line);
        writeln!(file, "{line}").unwrap();
    }
    file.flush().unwrap();
}

fn temp_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("rheon-nexmark-{}-{name}", std::process::id()))
}

#[test]
fn json_file_source_equals_generator() {
    let all = all_events();
    let path = temp_path("events.jsonl");
    write_json(&path, &all);
    for query in Query::ALL {
        if query == Query::Q12 {
            continue; // processing time: windows differ from run to run
        }
        let mut from_file = run_file(query, path.clone()).unwrap();
        let generated = if is_running(query) {
            from_file = final_rows(query, &from_file);
            final_rows(query, &run_generator_in_order(query, 2))
        } else {
            from_file.sort();
            run_generator(query, 2)
        };
        assert!(from_file == generated, "{query}: file and generator differ");
    }
    let _ = std::fs::remove_file(&path);
}

#[test]
fn malformed_line_fails_naming_file_and_line() {
    let all: Vec<Event> = events(&config(), 0..10).collect();
    let path = temp_path("bad.jsonl");
    let mut text = String::new();
    for (i, e) in all.iter().enumerate() {
        let mut line = String::new();
        to_json_line(e, &mut line);
        if i == 4 {
            line.truncate(line.len() / 2);
        }
        text.push_str(&line);
        text.push('\n');
    }
    std::fs::write(&path, text).unwrap();
    let err = run_file(Query::Q0, path.clone()).unwrap_err();
    let _ = std::fs::remove_file(&path);
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(err.contains("line 5"), "{err}");
}

#[test]
fn missing_file_fails_naming_it() {
    let path = temp_path("does-not-exist.jsonl");
    let err = run_file(Query::Q2, path.clone()).unwrap_err();
    assert!(err.contains(&path.display().to_string()), "{err}");
}

#[test]
fn unknown_query_lists_supported() {
    let err = "q10".parse::<Query>().unwrap_err();
    assert!(err.contains("q0, q1, q2, q3, q4"), "{err}");
    assert_eq!("Q3".parse::<Query>().unwrap(), Query::Q3);
}
