//! Stateless Nexmark queries beyond q0–q2, with the semantics of the
//! `nexmark-flink` SQL:
//!
//! - q13: bids joined with a bounded side input, a CSV file of `key,value`
//!   lines, on `auction % 10000 = key` (a lookup join).
//! - q14: bids with `0.908 * price` strictly between 1,000,000 and
//!   50,000,000, with a time-of-day label of the bid's UTC hour and the count
//!   of `c` characters in `extra`.
//! - q21: bids of the four hot channels or whose url has a `channel_id`
//!   parameter, with the channel id (`REGEXP_EXTRACT(url,
//!   '(&|^)channel_id=([^&]*)', 2)` written out by hand).
//! - q22: bids with the first three directories of their url
//!   (`SPLIT_INDEX(url, '/', 3..=5)`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use crate::api::stream::DataStream;

use super::auctions::bids;
use super::model::{Bid, Event};
use super::text::Str;

/// Keys of q13's side input: `auction % SIDE_INPUT_KEYS`.
pub const SIDE_INPUT_KEYS: u64 = 10_000;

/// Writes q13's side input: `key,value` for every key, the value being the
/// key in words of digits (`12` -> `one-two`), so rows are easy to check.
pub fn write_side_input(path: &Path) -> std::io::Result<()> {
    const DIGITS: [&str; 10] = [
        "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
    ];
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for key in 0..SIDE_INPUT_KEYS {
        let words: Vec<&str> = key
            .to_string()
            .bytes()
            .map(|d| DIGITS[(d - b'0') as usize])
            .collect();
        writeln!(out, "{key},{}", words.join("-"))?;
    }
    out.flush()
}

/// Reads a side input of `key,value` lines; errors name the file and line.
pub fn read_side_input(path: &Path) -> Result<HashMap<u64, Str>, String> {
    let file = std::fs::File::open(path)
        .map_err(|e| format!("side input file '{}': {e}", path.display()))?;
    let mut map = HashMap::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|e| format!("side input file '{}': {e}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let (key, value) = line.split_once(',').ok_or_else(|| {
            format!(
                "side input file '{}', line {}: expected 'key,value', found '{line}'",
                path.display(),
                n + 1
            )
        })?;
        let key = key.trim().parse::<u64>().map_err(|e| {
            format!(
                "side input file '{}', line {}: key '{key}' is not an unsigned integer: {e}",
                path.display(),
                n + 1
            )
        })?;
        map.insert(key, Str::from(value));
    }
    Ok(map)
}

/// q13: `(bid, side value)` for bids whose `auction % 10000` has a value
/// (values are `Str`s: copying one is inline or a reference count, not an
/// allocation per bid).
pub fn q13(events: &DataStream<Event>, side: Arc<HashMap<u64, Str>>) -> DataStream<(Bid, Str)> {
    bids(events)
        .flat_map(move |b: Bid| {
            side.get(&(b.auction % SIDE_INPUT_KEYS))
                .map(|value| (b, value.clone()))
        })
        .name("q13 lookup join with the side input")
}

/// q14's label of the bid's hour of day (UTC).
pub fn bid_time_type(date_time_ms: i64) -> &'static str {
    let hour = date_time_ms.div_euclid(3_600_000).rem_euclid(24);
    if (8..=18).contains(&hour) {
        "dayTime"
    } else if hour <= 6 || hour >= 20 {
        "nightTime"
    } else {
        "otherTime"
    }
}

/// q14: `(bid with price in milli-euros, time type, 'c' count)`.
pub fn q14(events: &DataStream<Event>) -> DataStream<(Bid, Str, u64)> {
    bids(events)
        .flat_map(|mut b: Bid| {
            // 0.908 * price in thousandths, exactly.
            let milli = b.price.saturating_mul(908);
            if milli <= 1_000_000_000 || milli >= 50_000_000_000 {
                return None;
            }
            b.price = milli;
            let c_count = b.extra.bytes().filter(|&c| c == b'c').count() as u64;
            let label = Str::from_static(bid_time_type(b.date_time));
            Some((b, label, c_count))
        })
        .name("q14 filter and project")
}

/// `REGEXP_EXTRACT(url, '(&|^)channel_id=([^&]*)', 2)`: where in `url` the
/// value of the first `channel_id` parameter lies, at the start of the url or
/// after a `&`.
pub fn channel_id_range(url: &str) -> Option<Range<usize>> {
    const NAME: &str = "channel_id=";
    let mut from = 0;
    while let Some(at) = url[from..].find(NAME) {
        let start = from + at;
        if start == 0 || url.as_bytes()[start - 1] == b'&' {
            let value = start + NAME.len();
            let end = url[value..].find('&').map_or(url.len(), |i| value + i);
            return Some(value..end);
        }
        from = start + 1;
    }
    None
}

/// The channel id as text ([`channel_id_range`]).
pub fn channel_id_of(url: &str) -> Option<&str> {
    channel_id_range(url).map(|r| &url[r])
}

/// q21's id of the four hot channels, compared without case.
fn hot_channel_id(channel: &str) -> Option<&'static str> {
    ["apple", "google", "facebook", "baidu"]
        .iter()
        .position(|hot| channel.eq_ignore_ascii_case(hot))
        .map(|i| ["0", "1", "2", "3"][i])
}

/// q21: `(bid, channel id)`; the id is a slice of the bid's url, so a row
/// allocates nothing.
pub fn q21(events: &DataStream<Event>) -> DataStream<(Bid, Str)> {
    bids(events)
        .flat_map(|b: Bid| {
            let id = match hot_channel_id(&b.channel) {
                Some(id) => Some(Str::from_static(id)),
                None => channel_id_range(&b.url).map(|r| b.url.slice(r)),
            };
            id.map(|id| (b, id))
        })
        .name("q21 channel ids")
}

/// `SPLIT_INDEX(url, '/', index)`: where the `index`-th `/`-separated part
/// of `url` lies.
pub fn split_index_range(url: &str, index: usize) -> Option<Range<usize>> {
    let mut start = 0;
    for _ in 0..index {
        start += url[start..].find('/')? + 1;
    }
    let end = url[start..].find('/').map_or(url.len(), |i| start + i);
    Some(start..end)
}

/// `SPLIT_INDEX(url, '/', index)` as text.
pub fn split_index(url: &str, index: usize) -> Option<&str> {
    split_index_range(url, index).map(|r| &url[r])
}

/// q22: `(bid, dir1, dir2, dir3)`, slices of the bid's url (empty when the
/// url has fewer parts).
pub fn q22(events: &DataStream<Event>) -> DataStream<(Bid, Str, Str, Str)> {
    bids(events)
        .map(|b: Bid| {
            let dir = |i| split_index_range(&b.url, i).map_or(Str::new(), |r| b.url.slice(r));
            let (d1, d2, d3) = (dir(3), dir(4), dir(5));
            (b, d1, d2, d3)
        })
        .name("q22 url directories")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_id_follows_the_regular_expression() {
        assert_eq!(
            channel_id_of("https://x/y?query=1&channel_id=42"),
            Some("42")
        );
        assert_eq!(channel_id_of("channel_id=7&a=1"), Some("7"));
        assert_eq!(channel_id_of("https://x/y?query=1&xchannel_id=3"), None);
        assert_eq!(channel_id_of("a?xchannel_id=3&channel_id=5&b=2"), Some("5"));
        assert_eq!(channel_id_of("a?q=1&channel_id="), Some(""));
        assert_eq!(channel_id_of("https://x/y?query=1"), None);
    }

    #[test]
    fn split_index_and_time_types() {
        let url = "https://www.nexmark.com/abc/def/ghi/item.htm?query=1";
        assert_eq!(split_index(url, 3), Some("abc"));
        assert_eq!(split_index(url, 5), Some("ghi"));
        assert_eq!(split_index(url, 9), None);
        assert_eq!(bid_time_type(8 * 3_600_000), "dayTime");
        assert_eq!(bid_time_type(19 * 3_600_000 + 5), "otherTime");
        assert_eq!(bid_time_type(7 * 3_600_000), "otherTime");
        assert_eq!(bid_time_type(23 * 3_600_000), "nightTime");
        assert_eq!(bid_time_type(-1), "nightTime");
    }
}
