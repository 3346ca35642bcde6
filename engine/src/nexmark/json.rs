//! Nexmark events as JSON lines, in the shape the reference benchmark writes to Kafka:
//! Flink's `json` format over the `nexmark-flink/src/main/resources/queries/ddl_kafka.sql`
//! schema. One object per event:
//!
//! ```text
//! {"event_type":2,"person":null,"auction":null,"bid":{"auction":1000,"bidder":1001,
//!  "price":1234,"channel":"Google","url":"https://…","dateTime":"2015-07-15 00:00:00.004",
//!  "extra":"…"}}
//! ```
//!
//! - `event_type` is 0 (person), 1 (auction) or 2 (bid); the two other objects are `null`.
//! - Field names are the DDL's camel-case columns, in DDL order: person `id, name,
//!   emailAddress, creditCard, city, state, dateTime, extra`; auction `id, itemName,
//!   description, initialBid, reserve, dateTime, expires, seller, category, extra`; bid
//!   `auction, bidder, price, channel, url, dateTime, extra`.
//! - Times are `TIMESTAMP(3)` in Flink's default `SQL` timestamp standard, UTC:
//!   `yyyy-MM-dd HH:mm:ss.SSS`. The writer always writes three fraction digits (Flink
//!   itself drops trailing zeros); years outside 0000–9999 are written with a sign, as
//!   Java's `ISO_LOCAL_DATE` does.
//!
//! The parser is hand-written for this schema (no serde): any JSON whitespace, fields
//! in any order, unknown fields ignored, a missing field or a wrong type is an error
//! that names the field, the expected type and the object. It also accepts the
//! snake-case spellings (`email_address`, `date_time`, …) and `T` instead of the space
//! in times, with 0 to 9 fraction digits (truncated to milliseconds), so files written
//! by Flink and by snake-case systems read back. `to_json_line` writes no newline;
//! `parse_json_line` ignores surrounding whitespace, including a trailing `\r\n`.

use std::fmt::Write as _;

use super::model::{Auction, Bid, Event, Person};
use super::text::Str;

/// Appends `event` as one JSON object (no trailing newline) to `out`.
pub fn to_json_line(event: &Event, out: &mut String) {
    let _ = write!(out, "{{\"event_type\":{},", event.event_type());
    match event {
        Event::Person(p) => {
            out.push_str("\"person\":{");
            let _ = write!(out, "\"id\":{}", p.id);
            str_field(out, "name", &p.name);
            str_field(out, "emailAddress", &p.email_address);
            str_field(out, "creditCard", &p.credit_card);
            str_field(out, "city", &p.city);
            str_field(out, "state", &p.state);
            time_field(out, "dateTime", p.date_time);
            str_field(out, "extra", &p.extra);
            out.push_str("},\"auction\":null,\"bid\":null}");
        }
        Event::Auction(a) => {
            out.push_str("\"person\":null,\"auction\":{");
            let _ = write!(out, "\"id\":{}", a.id);
            str_field(out, "itemName", &a.item_name);
            str_field(out, "description", &a.description);
            let _ = write!(
                out,
                ",\"initialBid\":{},\"reserve\":{}",
                a.initial_bid, a.reserve
            );
            time_field(out, "dateTime", a.date_time);
            time_field(out, "expires", a.expires);
            let _ = write!(out, ",\"seller\":{},\"category\":{}", a.seller, a.category);
            str_field(out, "extra", &a.extra);
            out.push_str("},\"bid\":null}");
        }
        Event::Bid(b) => {
            out.push_str("\"person\":null,\"auction\":null,\"bid\":{");
            let _ = write!(
                out,
                "\"auction\":{},\"bidder\":{},\"price\":{}",
                b.auction, b.bidder, b.price
            );
            str_field(out, "channel", &b.channel);
            str_field(out, "url", &b.url);
            time_field(out, "dateTime", b.date_time);
            str_field(out, "extra", &b.extra);
            out.push_str("}}");
        }
    }
}

fn str_field(out: &mut String, name: &str, value: &str) {
    let _ = write!(out, ",\"{name}\":");
    write_json_string(out, value);
}

fn time_field(out: &mut String, name: &str, ms: i64) {
    let _ = write!(out, ",\"{name}\":\"");
    write_timestamp(out, ms);
    out.push('"');
}

fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, c) in s.char_indices() {
        let escape = match c {
            '"' => "\\\"",
            '\\' => "\\\\",
            '\n' => "\\n",
            '\r' => "\\r",
            '\t' => "\\t",
            '\u{8}' => "\\b",
            '\u{c}' => "\\f",
            c if c < ' ' => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push_str(escape);
        }
        start = i + c.len_utf8();
    }
    out.push_str(&s[start..]);
    out.push('"');
}

const MS_PER_DAY: i64 = 86_400_000;

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01:
/// the one the checkpoint inspector formats its timestamps with.
pub(crate) use rheon_state::checkpoint::inspect::civil_from_days;

/// Day count since 1970-01-01 of a valid proleptic Gregorian date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = year - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn write_timestamp(out: &mut String, ms: i64) {
    let (year, month, day) = civil_from_days(ms.div_euclid(MS_PER_DAY));
    let t = ms.rem_euclid(MS_PER_DAY);
    if (0..=9999).contains(&year) {
        let _ = write!(out, "{year:04}");
    } else if year > 9999 {
        let _ = write!(out, "+{year}");
    } else {
        let _ = write!(out, "-{:04}", year.unsigned_abs());
    }
    let _ = write!(
        out,
        "-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}",
        t / 3_600_000,
        t / 60_000 % 60,
        t / 1000 % 60,
        t % 1000
    );
}

/// Parses `yyyy-MM-dd[ T]HH:mm:ss[.f{1,9}]` (UTC) into ms since the epoch.
fn parse_timestamp(s: &str) -> Result<i64, &'static str> {
    const SHAPE: &str = "a time like \"2015-07-15 00:00:00.000\"";
    let b = s.as_bytes();
    let mut i = 0;
    let negative = match b.first() {
        Some(b'-') => {
            i = 1;
            true
        }
        Some(b'+') => {
            i = 1;
            false
        }
        _ => false,
    };
    let digits = |from: usize| b[from..].iter().take_while(|c| c.is_ascii_digit()).count();
    let year_len = digits(i);
    if !(4..=10).contains(&year_len) {
        return Err(SHAPE);
    }
    let mut year: i64 = s[i..i + year_len].parse().map_err(|_| SHAPE)?;
    if negative {
        year = -year;
    }
    i += year_len;
    let two = |i: &mut usize, sep: u8| -> Result<u32, &'static str> {
        if b.get(*i) != Some(&sep) || digits(*i + 1) < 2 {
            return Err(SHAPE);
        }
        let v = u32::from(b[*i + 1] - b'0') * 10 + u32::from(b[*i + 2] - b'0');
        *i += 3;
        Ok(v)
    };
    let month = two(&mut i, b'-')?;
    let day = two(&mut i, b'-')?;
    let sep = if b.get(i) == Some(&b'T') { b'T' } else { b' ' };
    let hour = two(&mut i, sep)?;
    let minute = two(&mut i, b':')?;
    let second = two(&mut i, b':')?;
    let mut millis = 0i64;
    if b.get(i) == Some(&b'.') {
        let n = digits(i + 1);
        if !(1..=9).contains(&n) {
            return Err(SHAPE);
        }
        for k in 0..3 {
            millis = millis * 10
                + b.get(i + 1 + k)
                    .filter(|_| k < n)
                    .map_or(0, |c| i64::from(c - b'0'));
        }
        i += 1 + n;
    }
    if i != b.len() {
        return Err(SHAPE);
    }
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err("a valid calendar date");
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err("a valid time of day");
    }
    let ms = i128::from(days_from_civil(year, month, day)) * i128::from(MS_PER_DAY)
        + i128::from((i64::from(hour) * 60 + i64::from(minute)) * 60 + i64::from(second)) * 1000
        + i128::from(millis);
    i64::try_from(ms).map_err(|_| "a time within the range of i64 milliseconds")
}

/// A parsed JSON value; numbers keep their text until the schema says what they are.
#[derive(Debug)]
enum Value<'a> {
    Null,
    Bool(bool),
    Number(&'a str),
    Str(String),
    Array(usize),
    Object(Vec<(String, Value<'a>)>),
}

impl Value<'_> {
    fn describe(&self) -> String {
        match self {
            Value::Null => "null".into(),
            Value::Bool(b) => b.to_string(),
            Value::Number(n) => format!("the number {n}"),
            Value::Str(s) if s.chars().count() > 40 => {
                format!("a string \"{}…\"", s.chars().take(40).collect::<String>())
            }
            Value::Str(s) => format!("the string \"{s}\""),
            Value::Array(n) => format!("an array of {n} elements"),
            Value::Object(_) => "an object".into(),
        }
    }
}

const MAX_DEPTH: usize = 32;

struct Parser<'a> {
    text: &'a str,
    pos: usize,
    depth: usize,
}

impl<'a> Parser<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn error(&self, expected: &str) -> String {
        let found = match self.text[self.pos..].chars().next() {
            None => "the end of the line".to_owned(),
            Some(c) => format!("'{}'", c.escape_default()),
        };
        format!(
            "invalid JSON at byte {}: expected {expected}, found {found}",
            self.pos
        )
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.bytes().get(self.pos) {
            self.pos += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.skip_ws();
        if self.bytes().get(self.pos) == Some(&c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn literal(&mut self, word: &str, value: Value<'a>) -> Result<Value<'a>, String> {
        if self.text[self.pos..].starts_with(word) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.error("a JSON value"))
        }
    }

    fn value(&mut self) -> Result<Value<'a>, String> {
        self.skip_ws();
        match self.bytes().get(self.pos) {
            Some(b'{') => self.object(),
            Some(b'[') => self.array(),
            Some(b'"') => self.string().map(Value::Str),
            Some(b'n') => self.literal("null", Value::Null),
            Some(b't') => self.literal("true", Value::Bool(true)),
            Some(b'f') => self.literal("false", Value::Bool(false)),
            Some(b'-' | b'0'..=b'9') => self.number(),
            _ => Err(self.error("a JSON value")),
        }
    }

    fn enter(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!(
                "invalid JSON at byte {}: nesting deeper than {MAX_DEPTH} levels",
                self.pos
            ));
        }
        self.pos += 1;
        Ok(())
    }

    fn object(&mut self) -> Result<Value<'a>, String> {
        self.enter()?;
        let mut fields = Vec::new();
        if !self.eat(b'}') {
            loop {
                self.skip_ws();
                if self.bytes().get(self.pos) != Some(&b'"') {
                    return Err(self.error("a field name in double quotes"));
                }
                let key = self.string()?;
                if !self.eat(b':') {
                    return Err(self.error("':' after a field name"));
                }
                let value = self.value()?;
                fields.push((key, value));
                if self.eat(b'}') {
                    break;
                }
                if !self.eat(b',') {
                    return Err(self.error("',' or '}' in an object"));
                }
            }
        }
        self.depth -= 1;
        Ok(Value::Object(fields))
    }

    fn array(&mut self) -> Result<Value<'a>, String> {
        self.enter()?;
        let mut n = 0;
        if !self.eat(b']') {
            loop {
                self.value()?;
                n += 1;
                if self.eat(b']') {
                    break;
                }
                if !self.eat(b',') {
                    return Err(self.error("',' or ']' in an array"));
                }
            }
        }
        self.depth -= 1;
        Ok(Value::Array(n))
    }

    fn number(&mut self) -> Result<Value<'a>, String> {
        let b = self.bytes();
        let start = self.pos;
        let digits = |p: usize| b[p..].iter().take_while(|c| c.is_ascii_digit()).count();
        let mut p = start + usize::from(b[start] == b'-');
        let int = digits(p);
        if int == 0 || (int > 1 && b[p] == b'0') {
            self.pos = p;
            return Err(self.error("a number (digits, no leading zeros)"));
        }
        p += int;
        if b.get(p) == Some(&b'.') {
            let frac = digits(p + 1);
            if frac == 0 {
                self.pos = p + 1;
                return Err(self.error("digits after the decimal point"));
            }
            p += 1 + frac;
        }
        if let Some(b'e' | b'E') = b.get(p) {
            p += 1;
            if let Some(b'+' | b'-') = b.get(p) {
                p += 1;
            }
            let exp = digits(p);
            if exp == 0 {
                self.pos = p;
                return Err(self.error("digits in the exponent"));
            }
            p += exp;
        }
        self.pos = p;
        Ok(Value::Number(&self.text[start..p]))
    }

    /// A string starting at the opening quote.
    fn string(&mut self) -> Result<String, String> {
        self.pos += 1;
        let mut out = String::new();
        loop {
            let start = self.pos;
            while let Some(&c) = self.bytes().get(self.pos) {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            // Stops only at ASCII bytes, so both ends are character boundaries.
            out.push_str(&self.text[start..self.pos]);
            match self.bytes().get(self.pos) {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    let c = match self.bytes().get(self.pos) {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            out.push(self.unicode_escape()?);
                            continue;
                        }
                        _ => return Err(self.error("an escape (one of \\\" \\\\ / b f n r t u)")),
                    };
                    self.pos += 1;
                    out.push(c);
                }
                Some(_) => return Err(self.error("no raw control character inside a string")),
                None => return Err(self.error("'\"' to close the string")),
            }
        }
    }

    /// Four hex digits after `\u` (at `pos`, which points at the `u`).
    fn hex4(&mut self) -> Result<u32, String> {
        self.pos += 1;
        let hex = self
            .text
            .get(self.pos..self.pos + 4)
            .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()));
        let Some(hex) = hex else {
            return Err(self.error("four hex digits after \\u"));
        };
        self.pos += 4;
        Ok(u32::from_str_radix(hex, 16).expect("checked hex digits"))
    }

    /// A `\uXXXX` escape, or a surrogate pair of two, with `pos` at the first `u`.
    fn unicode_escape(&mut self) -> Result<char, String> {
        let first = self.hex4()?;
        let code = if (0xD800..0xDC00).contains(&first) {
            if !self.text[self.pos..].starts_with("\\u") {
                return Err(self.error("a low surrogate \\uDC00..\\uDFFF after a high surrogate"));
            }
            self.pos += 1;
            let second = self.hex4()?;
            if !(0xDC00..0xE000).contains(&second) {
                return Err(self.error("a low surrogate \\uDC00..\\uDFFF after a high surrogate"));
            }
            0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
        } else {
            first
        };
        char::from_u32(code)
            .ok_or_else(|| self.error("a Unicode scalar value, not a lone surrogate"))
    }
}

/// Parses a whole line into a value.
fn parse_value(line: &str) -> Result<Value<'_>, String> {
    let mut p = Parser {
        text: line,
        pos: 0,
        depth: 0,
    };
    let v = p.value()?;
    p.skip_ws();
    if p.pos != line.len() {
        return Err(p.error("the end of the line after the JSON object"));
    }
    Ok(v)
}

/// One object of the schema, named for error messages.
struct Obj<'v, 'a> {
    name: &'static str,
    fields: &'v [(String, Value<'a>)],
}

impl<'v, 'a> Obj<'v, 'a> {
    /// The field called `names[0]` (or one of its aliases).
    fn get(&self, names: &[&'static str]) -> Result<Option<&'v Value<'a>>, String> {
        let mut found = None;
        for (k, v) in self.fields {
            if names.contains(&k.as_str()) {
                if found.is_some() {
                    return Err(format!(
                        "field '{}' appears more than once in the {}",
                        names[0], self.name
                    ));
                }
                found = Some(v);
            }
        }
        Ok(found)
    }

    fn require(&self, names: &[&'static str], what: &str) -> Result<&'v Value<'a>, String> {
        match self.get(names)? {
            Some(v) => Ok(v),
            None => Err(format!(
                "expected field '{}' ({what}) in the {}, but it is missing",
                names[0], self.name
            )),
        }
    }

    fn wrong(&self, names: &[&'static str], what: &str, found: &Value<'_>) -> String {
        format!(
            "expected field '{}' ({what}) in the {}, found {}",
            names[0],
            self.name,
            found.describe()
        )
    }

    fn u64(&self, names: &[&'static str]) -> Result<u64, String> {
        const WHAT: &str = "a non-negative integer";
        let v = self.require(names, WHAT)?;
        match v {
            Value::Number(n) => n.parse().map_err(|_| self.wrong(names, WHAT, v)),
            _ => Err(self.wrong(names, WHAT, v)),
        }
    }

    fn string(&self, names: &[&'static str]) -> Result<Str, String> {
        const WHAT: &str = "a string";
        match self.require(names, WHAT)? {
            Value::Str(s) => Ok(Str::copy_from(s)),
            v => Err(self.wrong(names, WHAT, v)),
        }
    }

    fn time(&self, names: &[&'static str]) -> Result<i64, String> {
        const WHAT: &str = "a time string \"yyyy-MM-dd HH:mm:ss.SSS\"";
        match self.require(names, WHAT)? {
            Value::Str(s) => parse_timestamp(s).map_err(|expected| {
                format!(
                    "expected field '{}' ({expected}) in the {}, found \"{s}\"",
                    names[0], self.name
                )
            }),
            v => Err(self.wrong(names, WHAT, v)),
        }
    }

    /// The nested object `names`, or `None` if it is null or absent.
    fn object(
        &self,
        names: &[&'static str],
        name: &'static str,
    ) -> Result<Option<Obj<'v, 'a>>, String> {
        match self.get(names)? {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(fields)) => Ok(Some(Obj { name, fields })),
            Some(v) => Err(self.wrong(names, "an object or null", v)),
        }
    }
}

/// Parses one line written by [`to_json_line`] (or by Flink's JSON format over the
/// reference schema). Errors say what was expected and where.
pub fn parse_json_line(line: &str) -> Result<Event, String> {
    let value = parse_value(line)?;
    let Value::Object(fields) = &value else {
        return Err(format!(
            "expected a JSON object for a Nexmark event, found {}",
            value.describe()
        ));
    };
    let top = Obj {
        name: "event object",
        fields,
    };
    let kind = top.u64(&["event_type"])?;
    let person = top.object(&["person"], "person object")?;
    let auction = top.object(&["auction"], "auction object")?;
    let bid = top.object(&["bid"], "bid object")?;
    let (present, label) = match kind {
        0 => (person.is_some(), "person"),
        1 => (auction.is_some(), "auction"),
        2 => (bid.is_some(), "bid"),
        _ => {
            return Err(format!(
                "expected field 'event_type' (0 for a person, 1 for an auction, 2 for a bid) in the event object, found the number {kind}"
            ))
        }
    };
    if !present {
        return Err(format!(
            "expected field '{label}' (an object) in the event object for event_type {kind}, but it is null or missing"
        ));
    }
    let others = [
        ("person", person.is_some()),
        ("auction", auction.is_some()),
        ("bid", bid.is_some()),
    ];
    if let Some((other, _)) = others.iter().find(|(name, set)| *set && *name != label) {
        return Err(format!(
            "expected field '{other}' to be null in the event object for event_type {kind} (a {label})"
        ));
    }
    if let Some(p) = person {
        return Ok(Event::Person(Person {
            id: p.u64(&["id"])?,
            name: p.string(&["name"])?,
            email_address: p.string(&["emailAddress", "email_address"])?,
            credit_card: p.string(&["creditCard", "credit_card"])?,
            city: p.string(&["city"])?,
            state: p.string(&["state"])?,
            date_time: p.time(&["dateTime", "date_time"])?,
            extra: p.string(&["extra"])?,
        }));
    }
    if let Some(a) = auction {
        return Ok(Event::Auction(Auction {
            id: a.u64(&["id"])?,
            item_name: a.string(&["itemName", "item_name"])?,
            description: a.string(&["description"])?,
            initial_bid: a.u64(&["initialBid", "initial_bid"])?,
            reserve: a.u64(&["reserve"])?,
            date_time: a.time(&["dateTime", "date_time"])?,
            expires: a.time(&["expires"])?,
            seller: a.u64(&["seller"])?,
            category: a.u64(&["category"])?,
            extra: a.string(&["extra"])?,
        }));
    }
    let b = bid.expect("event_type 2 has a bid object");
    Ok(Event::Bid(Bid {
        auction: b.u64(&["auction"])?,
        bidder: b.u64(&["bidder"])?,
        price: b.u64(&["price"])?,
        channel: b.string(&["channel"])?,
        url: b.string(&["url"])?,
        date_time: b.time(&["dateTime", "date_time"])?,
        extra: b.string(&["extra"])?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bid() -> Event {
        Event::Bid(Bid {
            auction: 1000,
            bidder: 1001,
            price: 1234,
            channel: "Google".into(),
            url: "https://www.nexmark.com/a/b_c/d/item.htm?query=1".into(),
            date_time: 1_436_918_400_004,
            extra: "ab\\c\"d\u{1}é😀".into(),
        })
    }

    fn line(e: &Event) -> String {
        let mut s = String::new();
        to_json_line(e, &mut s);
        s
    }

    #[test]
    fn bid_line_has_the_reference_shape() {
        let mut e = bid();
        if let Event::Bid(b) = &mut e {
            b.extra = "xyz".into();
        }
        assert_eq!(
            line(&e),
            "{\"event_type\":2,\"person\":null,\"auction\":null,\"bid\":{\"auction\":1000,\
             \"bidder\":1001,\"price\":1234,\"channel\":\"Google\",\
             \"url\":\"https://www.nexmark.com/a/b_c/d/item.htm?query=1\",\
             \"dateTime\":\"2015-07-15 00:00:00.004\",\"extra\":\"xyz\"}}"
        );
    }

    #[test]
    fn escapes_round_trip() {
        let e = bid();
        let l = line(&e);
        assert!(l.contains(r#""extra":"ab\\c\"d\u0001é😀""#), "{l}");
        assert_eq!(parse_json_line(&l).unwrap(), e);
    }

    #[test]
    fn timestamps_round_trip_across_the_range() {
        for ms in [
            0,
            -1,
            1,
            86_399_999,
            951_782_400_000, // 2000-02-29
            1_436_918_400_000,
            253_402_300_799_999, // 9999-12-31 23:59:59.999
            253_402_300_800_000,
            -62_167_219_200_000, // 0000-01-01
            -62_167_219_200_001,
            i64::MAX,
            i64::MIN,
        ] {
            let mut s = String::new();
            write_timestamp(&mut s, ms);
            assert_eq!(parse_timestamp(&s), Ok(ms), "{ms} written as {s}");
        }
        let mut s = String::new();
        write_timestamp(&mut s, 951_782_400_000);
        assert_eq!(s, "2000-02-29 00:00:00.000");
    }

    #[test]
    fn flink_and_iso_time_variants_parse() {
        let base = 1_436_918_400_000;
        assert_eq!(parse_timestamp("2015-07-15 00:00:00"), Ok(base));
        assert_eq!(parse_timestamp("2015-07-15 00:00:00.1"), Ok(base + 100));
        assert_eq!(
            parse_timestamp("2015-07-15T00:00:00.123456789"),
            Ok(base + 123)
        );
        assert!(parse_timestamp("2015-02-29 00:00:00").is_err());
        assert!(parse_timestamp("2015-07-15 24:00:00").is_err());
        assert!(parse_timestamp("2015-07-15 00:00:00.").is_err());
        assert!(parse_timestamp("15-07-15 00:00:00").is_err());
    }

    #[test]
    fn snake_case_fields_unknown_fields_and_whitespace_are_accepted() {
        let l =
            " { \"bid\" : null , \"auction\": null, \"event_type\" : 0, \"person\": {\"id\": 7,\
                 \"name\":\"n\",\"email_address\":\"e\",\"credit_card\":\"c\",\"city\":\"x\",\
                 \"state\":\"OR\",\"date_time\":\"1970-01-01 00:00:01.5\",\"extra\":\"\",\
                 \"more\":[1,{\"a\":true}]}}\r\n";
        let e = parse_json_line(l).unwrap();
        assert_eq!(e.timestamp_ms(), 1500);
        assert!(matches!(e, Event::Person(ref p) if p.id == 7 && p.state == "OR"));
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let l = "[".repeat(100_000);
        let err = parse_json_line(&l).unwrap_err();
        assert!(err.contains("nesting"), "{err}");
    }
}
