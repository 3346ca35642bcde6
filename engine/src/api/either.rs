//! `Either`: one record of two possible types. Two-input operators
//! (`connect`, window joins) carry both inputs through one stream of
//! `Either<A, B>`, and window operators with a late-data side output carry
//! results and late records the same way.

use rheon_net::codec::{Codec, DecodeError};

/// A record of the first (`Left`) or the second (`Right`) input.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Either<L, R> {
    Left(L),
    Right(R),
}

impl<L, R> Either<L, R> {
    pub fn left(self) -> Option<L> {
        match self {
            Either::Left(l) => Some(l),
            Either::Right(_) => None,
        }
    }

    pub fn right(self) -> Option<R> {
        match self {
            Either::Left(_) => None,
            Either::Right(r) => Some(r),
        }
    }
}

/// A tag byte (0 left, 1 right), then the value.
impl<L: Codec, R: Codec> Codec for Either<L, R> {
    fn encoded_len(&self) -> usize {
        1 + match self {
            Either::Left(l) => l.encoded_len(),
            Either::Right(r) => r.encoded_len(),
        }
    }

    fn encode(&self, out: &mut [u8]) {
        match self {
            Either::Left(l) => {
                out[0] = 0;
                l.encode(&mut out[1..]);
            }
            Either::Right(r) => {
                out[0] = 1;
                r.encode(&mut out[1..]);
            }
        }
    }

    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        match u8::decode(input)? {
            0 => L::decode(input).map(Either::Left),
            1 => R::decode(input).map(Either::Right),
            _ => Err(DecodeError::Invalid {
                expected: "Either tag",
                detail: "tag byte is neither 0 nor 1",
                remaining_bytes: input.len(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_bad_tags() {
        for value in [Either::Left(7u32), Either::Right("x".to_string())] {
            let mut buf = vec![0; value.encoded_len()];
            value.encode(&mut buf);
            let mut input = &buf[..];
            assert_eq!(Either::<u32, String>::decode(&mut input).unwrap(), value);
            assert!(input.is_empty());
        }
        let mut bad: &[u8] = &[2, 0, 0, 0, 0];
        assert!(Either::<u32, u32>::decode(&mut bad).is_err());
    }
}
