//! The Nexmark query registry, and q0–q3, on the DataStream API with the semantics of
//! the Flink SQL of the `nexmark/nexmark` repository
//! (`nexmark-flink/src/main/resources/queries/`). The other queries live in
//! [`super::auctions`], [`super::windowed`], [`super::projections`] and
//! [`super::aggregates`].
//!
//! Every query produces a typed stream of result rows and a function that writes a
//! row as one comma-separated line ([`Query::header`]); [`QueryOutput`] formats rows
//! only for a text sink, so a discarding sink measures the query, not the formatting.
//! Queries on event time get the reference's watermark, event time minus 4 s.
//! Row formats of q0–q3:
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

use std::fmt::{self, Write as _};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::api::functions::{
    CheckpointedFunction, KeyedContext, KeyedProcessFunction, OneInputOperator,
    OperatorStateRestore, ValueStateRef,
};
use crate::api::stream::DataStream;
use crate::runtime::collector::Emitter;

use std::path::PathBuf;
use std::time::Duration;

use crate::graph::stream_graph::Data;
use crate::runtime::watermark::WatermarkStrategy;

use super::auctions::{self, bids};
use super::model::{Auction, Bid, Event, Person};
use super::{aggregates, projections, windowed};

/// The implemented queries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Query {
    Q0,
    Q1,
    Q2,
    Q3,
    Q4,
    Q5,
    Q6,
    Q7,
    Q8,
    Q9,
    Q11,
    Q12,
    Q13,
    Q14,
    Q15,
    Q16,
    Q17,
    Q18,
    Q19,
    Q20,
    Q21,
    Q22,
}

impl Query {
    /// Every implemented query, in order.
    pub const ALL: [Query; 22] = [
        Query::Q0,
        Query::Q1,
        Query::Q2,
        Query::Q3,
        Query::Q4,
        Query::Q5,
        Query::Q6,
        Query::Q7,
        Query::Q8,
        Query::Q9,
        Query::Q11,
        Query::Q12,
        Query::Q13,
        Query::Q14,
        Query::Q15,
        Query::Q16,
        Query::Q17,
        Query::Q18,
        Query::Q19,
        Query::Q20,
        Query::Q21,
        Query::Q22,
    ];

    /// `"q0"`, `"q1"`, ...
    pub fn name(self) -> &'static str {
        match self {
            Query::Q0 => "q0",
            Query::Q1 => "q1",
            Query::Q2 => "q2",
            Query::Q3 => "q3",
            Query::Q4 => "q4",
            Query::Q5 => "q5",
            Query::Q6 => "q6",
            Query::Q7 => "q7",
            Query::Q8 => "q8",
            Query::Q9 => "q9",
            Query::Q11 => "q11",
            Query::Q12 => "q12",
            Query::Q13 => "q13",
            Query::Q14 => "q14",
            Query::Q15 => "q15",
            Query::Q16 => "q16",
            Query::Q17 => "q17",
            Query::Q18 => "q18",
            Query::Q19 => "q19",
            Query::Q20 => "q20",
            Query::Q21 => "q21",
            Query::Q22 => "q22",
        }
    }

    /// The column names of the result rows, comma-separated.
    pub fn header(self) -> &'static str {
        match self {
            Query::Q0 | Query::Q1 => "auction,bidder,price,dateTime,extra",
            Query::Q2 => "auction,price",
            Query::Q3 => "name,city,state,id",
            Query::Q4 => "category,avg_final",
            Query::Q5 => "auction,num",
            Query::Q6 => "seller,avg_final",
            Query::Q7 => "auction,price,bidder,dateTime,extra",
            Query::Q8 => "id,name,starttime",
            Query::Q9 => {
                "id,itemName,description,initialBid,reserve,dateTime,expires,seller,category,\
                 extra,auction,bidder,price,bid_dateTime,bid_extra"
            }
            Query::Q11 | Query::Q12 => "bidder,bid_count,starttime,endtime",
            Query::Q13 => "auction,bidder,price,dateTime,value",
            Query::Q14 => "auction,bidder,price,bidTimeType,dateTime,extra,c_counts",
            Query::Q15 => {
                "day,total_bids,rank1_bids,rank2_bids,rank3_bids,total_bidders,rank1_bidders,\
                 rank2_bidders,rank3_bidders,total_auctions,rank1_auctions,rank2_auctions,\
                 rank3_auctions"
            }
            Query::Q16 => {
                "channel,day,minute,total_bids,rank1_bids,rank2_bids,rank3_bids,total_bidders,\
                 rank1_bidders,rank2_bidders,rank3_bidders,total_auctions,rank1_auctions,\
                 rank2_auctions,rank3_auctions"
            }
            Query::Q17 => {
                "auction,day,total_bids,rank1_bids,rank2_bids,rank3_bids,min_price,max_price,\
                 avg_price,sum_price"
            }
            Query::Q18 => "auction,bidder,price,channel,url,dateTime,extra",
            Query::Q19 => "auction,bidder,price,channel,url,dateTime,extra,rank_number",
            Query::Q20 => {
                "auction,bidder,price,channel,url,dateTime,extra,itemName,description,\
                 initialBid,reserve,auction_dateTime,expires,seller,category,auction_extra"
            }
            Query::Q21 => "auction,bidder,price,channel,channel_id",
            Query::Q22 => "auction,bidder,price,channel,dir1,dir2,dir3",
        }
    }

    /// Whether the query needs event time (watermarks on the events).
    pub fn uses_event_time(self) -> bool {
        matches!(
            self,
            Query::Q4 | Query::Q5 | Query::Q6 | Query::Q7 | Query::Q8 | Query::Q9 | Query::Q11
        )
    }

    /// `"q0, q1, ..."`.
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

/// The watermark delay of the Nexmark streams (the reference's 4 s).
pub const WATERMARK_DELAY: Duration = Duration::from_secs(4);

/// Settings of queries beyond their events.
#[derive(Clone, Debug, Default)]
pub struct QueryOptions {
    /// q13's side input (`key,value` lines); by default a file in the
    /// temporary directory, written by [`projections::write_side_input`] if missing.
    pub side_input: Option<PathBuf>,
    /// How far the watermark trails the largest event time; default
    /// [`WATERMARK_DELAY`]. Zero suits an in-order stream (the generator's
    /// default) when results should follow the stream closely.
    pub watermark_delay: Option<Duration>,
}

/// The default side input of q13.
pub fn default_side_input() -> PathBuf {
    std::env::temp_dir().join("rheon-nexmark-side-input.csv")
}

/// A query's typed result stream and how a row is written as text.
trait QueryRows {
    fn text(&self) -> DataStream<String>;
    fn discard(&self) -> RowCounter;
    fn write_text_file(&self, path: PathBuf) -> RowCounter;
    fn sink_to_files(&self, directory: PathBuf) -> RowCounter;
}

struct Typed<T> {
    stream: DataStream<T>,
    format: fn(&T, &mut String),
}

impl<T: Data> QueryRows for Typed<T> {
    fn text(&self) -> DataStream<String> {
        let format = self.format;
        self.stream
            .map(move |row: T| {
                let mut line = String::new();
                format(&row, &mut line);
                line
            })
            .name("row as text")
    }

    fn discard(&self) -> RowCounter {
        let (rows, counter) = count_rows(&self.stream);
        rows.discard();
        counter
    }

    fn write_text_file(&self, path: PathBuf) -> RowCounter {
        let (rows, counter) = count_rows(&self.stream);
        let format = self.format;
        rows.write_text_file(path, move |row: &T, line: &mut String| format(row, line));
        counter
    }

    fn sink_to_files(&self, directory: PathBuf) -> RowCounter {
        let (rows, counter) = count_rows(&self.stream);
        let format = self.format;
        rows.sink_to_files(directory, move |row: &T, line: &mut String| {
            format(row, line)
        });
        counter
    }
}

/// What [`build`] returns: the result rows of a query, typed inside; text is
/// made only where a sink needs it.
pub struct QueryOutput {
    pub query: Query,
    rows: Box<dyn QueryRows>,
}

impl QueryOutput {
    fn new<T: Data>(query: Query, stream: DataStream<T>, format: fn(&T, &mut String)) -> Self {
        QueryOutput {
            query,
            rows: Box::new(Typed { stream, format }),
        }
    }

    /// The rows as text lines, formatted as [`Query::header`] says.
    pub fn rows(&self) -> DataStream<String> {
        self.rows.text()
    }

    /// Ends the query in a discarding sink (no row is formatted); the counter
    /// holds the number of rows after the job.
    pub fn discard(&self) -> RowCounter {
        self.rows.discard()
    }

    /// Writes the rows as lines to `path` (a directory of part files at a
    /// parallelism above 1); the counter holds the number of rows.
    pub fn write_text_file(&self, path: PathBuf) -> RowCounter {
        self.rows.write_text_file(path)
    }

    /// Writes the rows exactly once into part files in `directory`
    /// (`DataStream::sink_to_files`): with checkpoints, rows become visible
    /// only once a checkpoint after them completes, so a recovered job's
    /// committed rows equal a failure-free run's.
    pub fn sink_to_files(&self, directory: PathBuf) -> RowCounter {
        self.rows.sink_to_files(directory)
    }
}

/// Adds `query` over `events` to the job with default options.
pub fn build(query: Query, events: DataStream<Event>) -> QueryOutput {
    build_with(query, events, &QueryOptions::default()).unwrap_or_else(|e| panic!("{query}: {e}"))
}

/// Adds `query` over `events` to the job and returns its result rows. Fails
/// when q13's side input cannot be read or written.
pub fn build_with(
    query: Query,
    events: DataStream<Event>,
    options: &QueryOptions,
) -> Result<QueryOutput, String> {
    let events = if query.uses_event_time() {
        events.assign_timestamps_and_watermarks(WatermarkStrategy::bounded_out_of_orderness(
            options.watermark_delay.unwrap_or(WATERMARK_DELAY),
            |e: &Event| e.timestamp_ms(),
        ))
    } else {
        events
    };
    Ok(match query {
        Query::Q0 => QueryOutput::new(query, bids(&events), format_q0),
        // q1 and q2 select the bids and transform them in one operator: each
        // chained operator costs a call and a copy of the record, about as much
        // as the transformation itself.
        Query::Q1 => QueryOutput::new(
            query,
            events
                .flat_map(|e: Event| match e {
                    Event::Bid(mut b) => {
                        b.price = b.price.saturating_mul(908);
                        Some(b)
                    }
                    _ => None,
                })
                .name("q1 bids, price in euros"),
            format_q1_row,
        ),
        Query::Q2 => QueryOutput::new(
            query,
            events
                .flat_map(|e: Event| match e {
                    Event::Bid(b) if b.auction % 123 == 0 => Some((b.auction, b.price)),
                    _ => None,
                })
                .name("q2 bids of auction % 123 == 0"),
            format_pair,
        ),
        Query::Q3 => QueryOutput::new(
            query,
            events
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
            |row: &String, line| line.push_str(row),
        ),
        Query::Q4 => QueryOutput::new(query, auctions::q4(&events), format_pair),
        Query::Q5 => QueryOutput::new(query, windowed::q5(&events), |r, line| {
            let _ = write!(line, "{},{}", r.0, r.1);
        }),
        Query::Q6 => QueryOutput::new(query, auctions::q6(&events), format_pair),
        Query::Q7 => QueryOutput::new(query, windowed::q7(&events), |b: &Bid, line| {
            let _ = write!(
                line,
                "{},{},{},{},{}",
                b.auction, b.price, b.bidder, b.date_time, b.extra
            );
        }),
        Query::Q8 => QueryOutput::new(query, windowed::q8(&events), |r, line| {
            let _ = write!(line, "{},{},{}", r.0, r.1, r.2);
        }),
        Query::Q9 => QueryOutput::new(query, auctions::q9(&events), |(a, b), line| {
            format_auction(a, line);
            let _ = write!(
                line,
                ",{},{},{},{},{}",
                b.auction, b.bidder, b.price, b.date_time, b.extra
            );
        }),
        Query::Q11 => QueryOutput::new(query, windowed::q11(&events), format_bidder_window),
        Query::Q12 => QueryOutput::new(query, windowed::q12(&events), format_bidder_window),
        Query::Q13 => {
            let path = options
                .side_input
                .clone()
                .unwrap_or_else(default_side_input);
            if options.side_input.is_none() && !path.exists() {
                projections::write_side_input(&path).map_err(|e| {
                    format!("cannot write side input file '{}': {e}", path.display())
                })?;
            }
            let side = Arc::new(projections::read_side_input(&path)?);
            QueryOutput::new(query, projections::q13(&events, side), |(b, v), line| {
                let _ = write!(
                    line,
                    "{},{},{},{},{}",
                    b.auction, b.bidder, b.price, b.date_time, v
                );
            })
        }
        Query::Q14 => QueryOutput::new(query, projections::q14(&events), |(b, t, c), line| {
            let _ = write!(
                line,
                "{},{},{}.{:03},{},{},{},{}",
                b.auction,
                b.bidder,
                b.price / 1000,
                b.price % 1000,
                t,
                b.date_time,
                b.extra,
                c
            );
        }),
        Query::Q15 => QueryOutput::new(query, aggregates::q15(&events), aggregates::format_q15),
        Query::Q16 => QueryOutput::new(query, aggregates::q16(&events), aggregates::format_q16),
        Query::Q17 => QueryOutput::new(query, aggregates::q17(&events), aggregates::format_q17),
        Query::Q18 => QueryOutput::new(query, aggregates::q18(&events), aggregates::format_q18),
        Query::Q19 => QueryOutput::new(query, aggregates::q19(&events), aggregates::format_q19),
        Query::Q20 => QueryOutput::new(query, auctions::q20(&events), |(b, a), line| {
            let _ = write!(
                line,
                "{},{},{},{},{},{},{},",
                b.auction, b.bidder, b.price, b.channel, b.url, b.date_time, b.extra
            );
            let _ = write!(
                line,
                "{},{},{},{},{},{},{},{},{}",
                a.item_name,
                a.description,
                a.initial_bid,
                a.reserve,
                a.date_time,
                a.expires,
                a.seller,
                a.category,
                a.extra
            );
        }),
        Query::Q21 => QueryOutput::new(query, projections::q21(&events), |(b, id), line| {
            let _ = write!(
                line,
                "{},{},{},{},{}",
                b.auction, b.bidder, b.price, b.channel, id
            );
        }),
        Query::Q22 => {
            QueryOutput::new(query, projections::q22(&events), |(b, d1, d2, d3), line| {
                let _ = write!(
                    line,
                    "{},{},{},{},{},{},{}",
                    b.auction, b.bidder, b.price, b.channel, d1, d2, d3
                );
            })
        }
    })
}

fn format_pair(r: &(u64, u64), line: &mut String) {
    let _ = write!(line, "{},{}", r.0, r.1);
}

fn format_bidder_window(r: &(u64, u64, i64, i64), line: &mut String) {
    let _ = write!(line, "{},{},{},{}", r.0, r.1, r.2, r.3);
}

/// An auction's columns in declaration order.
pub fn format_auction(a: &Auction, line: &mut String) {
    let _ = write!(
        line,
        "{},{},{},{},{},{},{},{},{},{}",
        a.id,
        a.item_name,
        a.description,
        a.initial_bid,
        a.reserve,
        a.date_time,
        a.expires,
        a.seller,
        a.category,
        a.extra
    );
}

/// A q1 row from a bid whose price already is in thousandths of euros.
fn format_q1_row(b: &Bid, line: &mut String) {
    let _ = write!(
        line,
        "{},{},{}.{:03},{},{}",
        b.auction,
        b.bidder,
        b.price / 1000,
        b.price % 1000,
        b.date_time,
        b.extra
    );
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

/// Per seller id: the matching persons and auctions seen so far (both sides are kept,
/// as an unbounded regular join keeps them).
#[derive(Clone, Default)]
pub struct Q3State {
    /// Rows' person part: `name,city,state,` prefix per person with this id.
    persons: Vec<String>,
    auctions: Vec<u64>,
}
rheon_net::codec_struct!(Q3State { persons, auctions });

/// The q3 join; the state is changed in place through `value_mut`.
#[derive(Clone)]
struct Q3Join;

impl KeyedProcessFunction<u64, Event, String> for Q3Join {
    type State = Q3State;

    fn process_element(
        &mut self,
        _key: &u64,
        record: Event,
        state: &mut ValueStateRef<'_, Self::State>,
        _ctx: &mut KeyedContext<'_, u64>,
        out: &mut Emitter<'_, String>,
    ) {
        if state.value().is_none() {
            state.update(Q3State::default());
        }
        let Some(st) = state.value_mut() else { return };
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

/// The count of rows not yet added to the total is operator state: a restore
/// continues it, so the total counts every row of the committed output once.
impl CheckpointedFunction for CountRows {
    fn snapshot_state(&mut self, _checkpoint_id: u64) -> Result<Vec<Vec<u8>>, String> {
        Ok(vec![self.local.to_le_bytes().to_vec()])
    }
    fn restore_state(&mut self, restore: &OperatorStateRestore<'_>) -> Result<(), String> {
        self.local = 0;
        for element in restore.share() {
            let bytes: [u8; 8] = element.try_into().map_err(|_| {
                format!(
                    "the checkpointed row count is {} bytes, expected 8",
                    element.len()
                )
            })?;
            self.local += u64::from_le_bytes(bytes);
        }
        Ok(())
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
    (stream.transform_checkpointed("Count rows", op), counter)
}
