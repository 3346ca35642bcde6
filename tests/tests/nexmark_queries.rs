//! Nexmark q0–q3 on the engine against plain reference implementations over the same
//! events: generator source at parallelism 1 and 2, the JSON-lines file source, and the
//! file source's error on a malformed line.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use rheon::nexmark::{
    build, count_rows, events, generator_source, json_file_source, to_json_line, Event,
    GeneratorConfig, Query,
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

/// The reference rows of `query` over `all`, written plainly.
fn reference(query: Query, all: &[Event]) -> Vec<String> {
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
    }
    rows.sort();
    rows
}

fn run_generator(query: Query, p: u32) -> Vec<String> {
    let env = StreamEnv::new(engine(p));
    let out = build(query, generator_source(&env, config()));
    let (rows, counter) = count_rows(&out.rows);
    let handle = rows.collect();
    env.execute(&format!("nexmark {query} p={p}"))
        .unwrap_or_else(|e| panic!("{query} at parallelism {p}: {e}"));
    let mut rows = handle.take();
    assert_eq!(
        counter.get(),
        rows.len() as u64,
        "{query} p={p}: row counter"
    );
    rows.sort();
    rows
}

fn run_file(query: Query, path: PathBuf) -> Result<Vec<String>, String> {
    let env = StreamEnv::new(engine(2));
    let out = build(query, json_file_source(&env, path));
    let handle = out.rows.collect();
    env.execute(&format!("nexmark {query} from file"))
        .map_err(|e| e.to_string())?;
    let mut rows = handle.take();
    rows.sort();
    Ok(rows)
}

fn all_events() -> Vec<Event> {
    events(&config(), 0..N).collect()
}

fn check(query: Query) {
    let expected = reference(query, &all_events());
    assert!(!expected.is_empty(), "{query}: the reference has no rows");
    for p in [1, 2] {
        let got = run_generator(query, p);
        assert_eq!(got.len(), expected.len(), "{query} p={p}: row count");
        assert!(got == expected, "{query} p={p}: rows differ");
    }
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
            email_address: String::new(),
            credit_card: String::new(),
            city: "Boise".into(),
            state: "ID".into(),
            date_time: 0,
            extra: String::new(),
        })
    };
    let auction = |id: u64, seller: u64, category: u64| {
        Event::Auction(rheon::nexmark::Auction {
            id,
            item_name: String::new(),
            description: String::new(),
            initial_bid: 0,
            reserve: 0,
            date_time: 0,
            expires: 0,
            seller,
            category,
            extra: String::new(),
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
    let handle = out.rows.collect();
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
        let from_file = run_file(query, path.clone()).unwrap();
        assert!(
            from_file == run_generator(query, 2),
            "{query}: file and generator differ"
        );
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
    let err = "q9".parse::<Query>().unwrap_err();
    assert!(err.contains("q0, q1, q2, q3"), "{err}");
    assert_eq!("Q3".parse::<Query>().unwrap(), Query::Q3);
}
