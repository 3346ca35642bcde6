//! The Nexmark event model: people register, open auctions and place bids. Field names
//! follow the benchmark description (`docs` of the reference repository) in snake case;
//! the JSON form in [`super::json`] uses the reference's camel-case column names.
//! Strings are [`Str`]s (inline, static or shared; encoded as `String`s). Times are
//! milliseconds since the Unix epoch (UTC). Every type implements
//! [`Codec`] field by field in declaration order; [`Event`] adds a one-byte tag equal
//! to the reference's `event_type` (0 person, 1 auction, 2 bid).

use rheon_net::codec::{Codec, DecodeError};

use super::text::Str;

/// A person registering with the auction site.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Person {
    pub id: u64,
    pub name: Str,
    pub email_address: Str,
    pub credit_card: Str,
    pub city: Str,
    pub state: Str,
    /// Registration time, ms since the epoch.
    pub date_time: i64,
    pub extra: Str,
}

/// An item put up for auction.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Auction {
    pub id: u64,
    pub item_name: Str,
    pub description: Str,
    pub initial_bid: u64,
    pub reserve: u64,
    /// Opening time, ms since the epoch.
    pub date_time: i64,
    /// Closing time, ms since the epoch.
    pub expires: i64,
    /// Person id of the seller.
    pub seller: u64,
    pub category: u64,
    pub extra: Str,
}

/// A bid on an auction.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Bid {
    /// Auction id.
    pub auction: u64,
    /// Person id of the bidder.
    pub bidder: u64,
    /// Price in cents.
    pub price: u64,
    pub channel: Str,
    pub url: Str,
    /// Bid time, ms since the epoch.
    pub date_time: i64,
    pub extra: Str,
}

/// One element of the Nexmark stream.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    Person(Person),
    Auction(Auction),
    Bid(Bid),
}

impl Event {
    /// The event time: the `date_time` of the inner record.
    pub fn timestamp_ms(&self) -> i64 {
        match self {
            Event::Person(p) => p.date_time,
            Event::Auction(a) => a.date_time,
            Event::Bid(b) => b.date_time,
        }
    }

    /// The reference's `event_type`: 0 person, 1 auction, 2 bid.
    pub fn event_type(&self) -> u8 {
        match self {
            Event::Person(_) => 0,
            Event::Auction(_) => 1,
            Event::Bid(_) => 2,
        }
    }
}

use rheon_net::codec_struct;

codec_struct!(Person {
    id,
    name,
    email_address,
    credit_card,
    city,
    state,
    date_time,
    extra
});
codec_struct!(Auction {
    id,
    item_name,
    description,
    initial_bid,
    reserve,
    date_time,
    expires,
    seller,
    category,
    extra
});
codec_struct!(Bid {
    auction,
    bidder,
    price,
    channel,
    url,
    date_time,
    extra
});

impl Codec for Event {
    fn encoded_len(&self) -> usize {
        1 + match self {
            Event::Person(p) => p.encoded_len(),
            Event::Auction(a) => a.encoded_len(),
            Event::Bid(b) => b.encoded_len(),
        }
    }
    fn encode(&self, out: &mut [u8]) {
        out[0] = self.event_type();
        match self {
            Event::Person(p) => p.encode(&mut out[1..]),
            Event::Auction(a) => a.encode(&mut out[1..]),
            Event::Bid(b) => b.encode(&mut out[1..]),
        }
    }
    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        match u8::decode(input)? {
            0 => Person::decode(input).map(Event::Person),
            1 => Auction::decode(input).map(Event::Auction),
            2 => Bid::decode(input).map(Event::Bid),
            _ => Err(DecodeError::Invalid {
                expected: "Nexmark event tag",
                detail: "tag byte is not 0 (person), 1 (auction) or 2 (bid)",
                remaining_bytes: input.len(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rheon_net::codec::{decode_exact, encode_to_vec};

    fn samples() -> Vec<Event> {
        vec![
            Event::Person(Person {
                id: 1000,
                name: "Peter Smith".into(),
                email_address: "abc@def.com".into(),
                credit_card: "0001 0002 0003 0004".into(),
                city: "Boise".into(),
                state: "ID".into(),
                date_time: -5,
                extra: "xyz".into(),
            }),
            Event::Auction(Auction {
                id: 1001,
                item_name: "item".into(),
                description: "a thing".into(),
                initial_bid: 1,
                reserve: 2,
                date_time: 3,
                expires: 4,
                seller: 1000,
                category: 10,
                extra: Str::new(),
            }),
            Event::Bid(Bid {
                auction: 1001,
                bidder: 1000,
                price: u64::MAX,
                channel: "Google".into(),
                url: "https://www.nexmark.com/a/b/c/item.htm?query=1".into(),
                date_time: i64::MAX,
                extra: "é\\\"".into(),
            }),
        ]
    }

    #[test]
    fn codec_round_trips_and_reports_exact_length() {
        for e in samples() {
            let bytes = encode_to_vec(&e);
            assert_eq!(bytes.len(), e.encoded_len());
            assert_eq!(decode_exact::<Event>(&bytes).unwrap(), e);
        }
    }

    #[test]
    fn codec_rejects_bad_tag_and_truncation() {
        let mut bytes = encode_to_vec(&samples()[2]);
        assert!(decode_exact::<Event>(&bytes[..bytes.len() - 1]).is_err());
        bytes[0] = 7;
        let err = decode_exact::<Event>(&bytes).unwrap_err();
        assert!(err.to_string().contains("Nexmark event tag"), "{err}");
    }

    #[test]
    fn timestamp_and_type() {
        let s = samples();
        assert_eq!(s[0].timestamp_ms(), -5);
        assert_eq!(s[1].timestamp_ms(), 3);
        assert_eq!(
            s.iter().map(Event::event_type).collect::<Vec<_>>(),
            [0, 1, 2]
        );
    }
}
