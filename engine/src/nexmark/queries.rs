//! Nexmark queries q0–q3 on the DataStream API, with the semantics of the Flink SQL of
//! the `nexmark/nexmark` repository (`nexmark-flink/src/main/resources/queries/`).
//!
//! Every query produces a `DataStream<String>` of result rows, one comma-separated line
//! per result, so one sink serves all of them. Row formats ([`Query::header`]):
//! - q0 `auction,bidder,price,dateTime,extra`: every bid.
//! - q1 `auction,bidder,price,dateTime,extra`: every bid with `price` in euros,
//!   `0.908 * price` as the SQL's exact `DECIMAL(23, 3)`: written with exactly three
//!   fraction digits (`1234` → `1120.472`), no rounding happens.
//! - q2 `auction,price`: bids whose `auction % 123 == 0`.
//! - q3 `name,city,state,id`: auctions of category 10 joined with their seller
//!   (`A.seller = P.id`) when the seller's state is OR, ID or CA. An unbounded inner
//!   join: per seller id both sides are kept, and every matching (person, auction) pair
//!   is emitted once, whichever arrives first, as Flink's regular join does.
//!
//! `dateTime` is written as milliseconds since the Unix epoch (UTC), an integer.

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::api::functions::{KeyedContext, KeyedProcessFunction, OneInputOperator, ValueStateRef};
use crate::api::stream::DataStream;
use crate::runtime::collector::Emitter;

use super::model::{Auction, Bid, Event, Person};

/// The implemented queries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Query {
    Q0,
    Q1,
    Q2,
    Q3,
}

impl Query {
    /// Every implemented query, in order.
    pub const ALL: [Query; 4] = [Query::Q0, Query::Q1, Query::Q2, Query::Q3];

    /// `"q0"` .. `"q3"`.
    pub fn name(self) -> &'static str {
        match self {
            Query::Q0 => "q0",
            Query::Q1 => "q1",
            Query::Q2 => "q2",
            Query::Q3 => "q3",
        }
    }

    /// The column names of the result rows, comma-separated.
    pub fn header(self) -> &'static str {
        match self {
            Query::Q0 | Query::Q1 => "auction,bidder,price,dateTime,extra",
            Query::Q2 => "auction,price",
            Query::Q3 => "name,city,state,id",
        }
    }

    /// `"q0, q1, q2, q3"`.
    pub fn supported() -> String {
        Query::ALL
            .iter()
            .map(|q| q.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Query {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let lower = s.trim().to_ascii_lowercase();
        Query::ALL
            .into_iter()
            .find(|q| q.name() == lower)
            .ok_or_else(|| {
                format!(
                    "unknown Nexmark query '{s}'; supported queries: {}",
                    Query::supported()
                )
            })
    }
}

/// What [`build`] returns: the result rows of a query.
pub struct QueryOutput {
    pub query: Query,
    /// One line per result, formatted as [`Query::header`] says.
    pub rows: DataStream<String>,
}

/// Adds `query` over `events` to the job and returns its result rows.
pub fn build(query: Query, events: DataStream<Event>) -> QueryOutput {
    let rows = match query {
        Query::Q0 => bids(&events)
            .map(|b: Bid| {
                let mut row = String::with_capacity(48 + b.extra.len());
                format_q0(&b, &mut row);
                row
            })
            .name("q0 row"),
        Query::Q1 => bids(&events)
            .map(|b: Bid| {
                let mut row = String::with_capacity(48 + b.extra.len());
                format_q1(&b, &mut row);
                row
            })
            .name("q1 row"),
        Query::Q2 => bids(&events)
            .filter(|b: &Bid| b.auction % 123 == 0)
            .name("q2 auction % 123 == 0")
            .map(|b: Bid| format_q2(&b))
            .name("q2 row"),
        Query::Q3 => events
            .filter(|e: &Event| match e {
                Event::Person(p) => q3_person_matches(p),
                Event::Auction(a) => q3_auction_matches(a),
                Event::Bid(_) => false,
            })
            .name("q3 persons in OR/ID/CA, auctions of category 10")
            .key_by(|e: &Event| match e {
                Event::Person(p) => p.id,
                Event::Auction(a) => a.seller,
                // Filtered out above.
                Event::Bid(b) => b.bidder,
            })
            .process(Q3Join)
            .name("q3 join auction.seller = person.id"),
    };
    QueryOutput { query, rows }
}

/// The bids of an event stream.
fn bids(events: &DataStream<Event>) -> DataStream<Bid> {
    events
        .filter(|e: &Event| matches!(e, Event::Bid(_)))
        .name("bids")
        .map(|e: Event| match e {
            Event::Bid(b) => b,
            // Filtered out above.
            _ => unreachable!("only bids pass the filter"),
        })
        .name("as bid")
}

/// q3's condition on the person side.
pub fn q3_person_matches(p: &Person) -> bool {
    matches!(p.state.as_str(), "OR" | "ID" | "CA")
}

/// q3's condition on the auction side.
pub fn q3_auction_matches(a: &Auction) -> bool {
    a.category == 10
}

/// A q0 row: `auction,bidder,price,dateTime,extra`.
pub fn format_q0(b: &Bid, row: &mut String) {
    let _ = write!(
        row,
        "{},{},{},{},{}",
        b.auction, b.bidder, b.price, b.date_time, b.extra
    );
}

/// A q1 row: like q0 with the price `0.908 * price` written with three decimals.
pub fn format_q1(b: &Bid, row: &mut String) {
    let milli = b.price as u128 * 908;
    let _ = write!(
        row,
        "{},{},{}.{:03},{},{}",
        b.auction,
        b.bidder,
        milli / 1000,
        milli % 1000,
        b.date_time,
        b.extra
    );
}

/// A q2 row: `auction,price`.
pub fn format_q2(b: &Bid) -> String {
    format!("{},{}", b.auction, b.price)
}

/// A q3 row: `name,city,state,id`.
pub fn format_q3(p: &Person, auction_id: u64) -> String {
    format!("{},{},{},{}", p.name, p.city, p.state, auction_id)
}

/// Per seller id: the matching persons and auctions seen so far (both sides are kept,
/// as an unbounded regular join keeps them).
#[derive(Default)]
pub struct Q3State {
    /// Rows' person part: `name,city,state,` prefix per person with this id.
    persons: Vec<String>,
    auctions: Vec<u64>,
}

/// The q3 join. The state sits in a `RefCell` because [`ValueStateRef`] gives only
/// shared access to the current value (no `value_mut`); this avoids cloning the state
/// on each event.
#[derive(Clone)]
struct Q3Join;

impl KeyedProcessFunction<u64, Event, String> for Q3Join {
    type State = RefCell<Q3State>;

    fn process_element(
        &mut self,
        _key: &u64,
        record: Event,
        state: &mut ValueStateRef<'_, Self::State>,
        _ctx: &mut KeyedContext<'_, u64>,
        out: &mut Emitter<'_, String>,
    ) {
        if state.value().is_none() {
            state.update(RefCell::new(Q3State::default()));
        }
        let Some(cell) = state.value() else { return };
        let mut st = cell.borrow_mut();
        match record {
            Event::Person(p) => {
                let prefix = format!("{},{},{},", p.name, p.city, p.state);
                for a in &st.auctions {
                    let mut row = prefix.clone();
                    let _ = write!(row, "{a}");
                    out.emit(row);
                }
                st.persons.push(prefix);
            }
            Event::Auction(a) => {
                for prefix in &st.persons {
                    let mut row = prefix.clone();
                    let _ = write!(row, "{}", a.id);
                    out.emit(row);
                }
                st.auctions.push(a.id);
            }
            Event::Bid(_) => {}
        }
    }
}

/// Counts the rows that pass through [`count_rows`]' operator.
#[derive(Clone, Debug, Default)]
pub struct RowCounter(Arc<AtomicU64>);

impl RowCounter {
    /// Rows counted by subtasks that have finished (all of them after `execute`).
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct CountRows {
    local: u64,
    total: Arc<AtomicU64>,
}

impl<T: 'static> OneInputOperator<T, T> for CountRows {
    #[inline]
    fn process(&mut self, record: T, out: &mut Emitter<'_, T>) {
        self.local += 1;
        out.emit(record);
    }
    fn finish(&mut self, _out: &mut Emitter<'_, T>) {
        self.total.fetch_add(self.local, Ordering::Relaxed);
        self.local = 0;
    }
}

/// A pass-through operator (chained with its neighbours) that counts the records it
/// sees; the count is complete when the job has ended. Needed because the job
/// metrics count records per vertex (chain), not per operator, so a sink chained to
/// the query has no count of its own.
pub fn count_rows<T: crate::graph::stream_graph::Data>(
    stream: &DataStream<T>,
) -> (DataStream<T>, RowCounter) {
    let counter = RowCounter::default();
    let op = CountRows {
        local: 0,
        total: counter.0.clone(),
    };
    (stream.transform("Count rows", op), counter)
}
