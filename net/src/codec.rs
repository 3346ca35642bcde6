//! Record serialization: the [`Codec`] trait and its implementations for primitive
//! types, strings, options, vectors, boxes and tuples. The format is little endian;
//! `usize`/`isize` travel as 64 bits; strings and vectors carry a `u32` length prefix.
//! Decoding reads from the front of a slice and advances it, and never panics on bad
//! input: it returns a [`DecodeError`] saying what was expected and how much was left.

/// Why a payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The input ended early.
    #[error(
        "truncated record: expected {expected} ({needed_bytes} bytes) but only \
         {remaining_bytes} bytes were left"
    )]
    Truncated {
        expected: &'static str,
        needed_bytes: usize,
        remaining_bytes: usize,
    },
    /// The bytes are there but do not form a valid value.
    #[error("invalid record: expected {expected}, {detail} ({remaining_bytes} bytes left)")]
    Invalid {
        expected: &'static str,
        detail: &'static str,
        remaining_bytes: usize,
    },
}

/// A value that can be written into and read from a record payload.
pub trait Codec: Sized {
    /// Exact number of bytes [`encode`](Codec::encode) writes.
    fn encoded_len(&self) -> usize;
    /// Writes exactly `encoded_len()` bytes to the front of `out` (which is at least
    /// that long).
    fn encode(&self, out: &mut [u8]);
    /// Reads a value from the front of `input` and advances it past the value.
    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError>;
}

fn take<const N: usize>(input: &mut &[u8], expected: &'static str) -> Result<[u8; N], DecodeError> {
    match input.split_first_chunk::<N>() {
        Some((head, rest)) => {
            *input = rest;
            Ok(*head)
        }
        None => Err(DecodeError::Truncated {
            expected,
            needed_bytes: N,
            remaining_bytes: input.len(),
        }),
    }
}

macro_rules! codec_int {
    ($($t:ty),*) => {$(
        impl Codec for $t {
            #[inline]
            fn encoded_len(&self) -> usize {
                std::mem::size_of::<$t>()
            }
            #[inline]
            fn encode(&self, out: &mut [u8]) {
                out[..std::mem::size_of::<$t>()].copy_from_slice(&self.to_le_bytes());
            }
            #[inline]
            fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
                take::<{ std::mem::size_of::<$t>() }>(input, stringify!($t)).map(<$t>::from_le_bytes)
            }
        }
    )*};
}

codec_int!(u8, u16, u32, u64, u128, i8, i16, i32, i64, i128, f32, f64);

impl Codec for usize {
    fn encoded_len(&self) -> usize {
        8
    }
    fn encode(&self, out: &mut [u8]) {
        (*self as u64).encode(out)
    }
    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        let v = take::<8>(input, "usize (u64)").map(u64::from_le_bytes)?;
        usize::try_from(v).map_err(|_| DecodeError::Invalid {
            expected: "usize",
            detail: "value does not fit this platform's usize",
            remaining_bytes: input.len(),
        })
    }
}

impl Codec for isize {
    fn encoded_len(&self) -> usize {
        8
    }
    fn encode(&self, out: &mut [u8]) {
        (*self as i64).encode(out)
    }
    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        let v = take::<8>(input, "isize (i64)").map(i64::from_le_bytes)?;
        isize::try_from(v).map_err(|_| DecodeError::Invalid {
            expected: "isize",
            detail: "value does not fit this platform's isize",
            remaining_bytes: input.len(),
        })
    }
}

impl Codec for bool {
    fn encoded_len(&self) -> usize {
        1
    }
    fn encode(&self, out: &mut [u8]) {
        out[0] = *self as u8;
    }
    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        match take::<1>(input, "bool")?[0] {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(DecodeError::Invalid {
                expected: "bool",
                detail: "byte is neither 0 nor 1",
                remaining_bytes: input.len(),
            }),
        }
    }
}

impl Codec for char {
    fn encoded_len(&self) -> usize {
        4
    }
    fn encode(&self, out: &mut [u8]) {
        (*self as u32).encode(out)
    }
    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        let v = take::<4>(input, "char (u32)").map(u32::from_le_bytes)?;
        char::from_u32(v).ok_or(DecodeError::Invalid {
            expected: "char",
            detail: "not a Unicode scalar value",
            remaining_bytes: input.len(),
        })
    }
}

impl Codec for () {
    fn encoded_len(&self) -> usize {
        0
    }
    fn encode(&self, _out: &mut [u8]) {}
    fn decode(_input: &mut &[u8]) -> Result<Self, DecodeError> {
        Ok(())
    }
}

fn encode_len_prefix(len: usize, out: &mut [u8]) {
    let len = u32::try_from(len).expect("length prefix exceeds u32::MAX");
    len.encode(out);
}

fn decode_len_prefix(input: &mut &[u8], expected: &'static str) -> Result<usize, DecodeError> {
    take::<4>(input, expected).map(|b| u32::from_le_bytes(b) as usize)
}

/// Decodes a `String`'s encoding (u32 length, UTF-8 bytes) without copying
/// it: the text is borrowed from the input. For string types that keep the
/// text their own way.
pub fn decode_str<'a>(input: &mut &'a [u8]) -> Result<&'a str, DecodeError> {
    let mut rest = *input;
    let len = decode_len_prefix(&mut rest, "String length (u32)")?;
    if rest.len() < len {
        return Err(DecodeError::Truncated {
            expected: "String bytes",
            needed_bytes: len,
            remaining_bytes: rest.len(),
        });
    }
    let (bytes, after) = rest.split_at(len);
    let text = if bytes.is_ascii() {
        // SAFETY: ASCII is valid UTF-8. Most text is ASCII, and `is_ascii`
        // checks a word at a time where `from_utf8` starts byte by byte.
        unsafe { std::str::from_utf8_unchecked(bytes) }
    } else {
        std::str::from_utf8(bytes).map_err(|_| DecodeError::Invalid {
            expected: "String",
            detail: "bytes are not valid UTF-8",
            remaining_bytes: rest.len(),
        })?
    };
    *input = after;
    Ok(text)
}

impl Codec for String {
    fn encoded_len(&self) -> usize {
        4 + self.len()
    }
    fn encode(&self, out: &mut [u8]) {
        encode_len_prefix(self.len(), out);
        out[4..4 + self.len()].copy_from_slice(self.as_bytes());
    }
    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        decode_str(input).map(str::to_owned)
    }
}

fn sequence_len<'a, T: Codec + 'a>(items: impl Iterator<Item = &'a T>) -> usize {
    4 + items.map(Codec::encoded_len).sum::<usize>()
}

fn encode_sequence<'a, T: Codec + 'a>(
    len: usize,
    items: impl Iterator<Item = &'a T>,
    out: &mut [u8],
) {
    encode_len_prefix(len, out);
    let mut at = 4;
    for item in items {
        let n = item.encoded_len();
        item.encode(&mut out[at..at + n]);
        at += n;
    }
}

/// Decodes a length-prefixed sequence into `C`, element by element.
fn decode_sequence<T: Codec, C>(
    input: &mut &[u8],
    expected: &'static str,
    with_capacity: impl FnOnce(usize) -> C,
    mut push: impl FnMut(&mut C, T),
) -> Result<C, DecodeError> {
    let len = decode_len_prefix(input, expected)?;
    // Never trust the prefix for the allocation: each element takes at least a
    // byte unless it is zero-sized, so the remaining input bounds the capacity.
    let mut c = with_capacity(len.min(input.len()));
    for _ in 0..len {
        push(&mut c, T::decode(input)?);
    }
    Ok(c)
}

impl<T: Codec> Codec for Vec<T> {
    fn encoded_len(&self) -> usize {
        sequence_len(self.iter())
    }
    fn encode(&self, out: &mut [u8]) {
        encode_sequence(self.len(), self.iter(), out)
    }
    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        decode_sequence(input, "Vec length (u32)", Vec::with_capacity, Vec::push)
    }
}

impl<T: Codec> Codec for std::collections::VecDeque<T> {
    fn encoded_len(&self) -> usize {
        sequence_len(self.iter())
    }
    fn encode(&self, out: &mut [u8]) {
        encode_sequence(self.len(), self.iter(), out)
    }
    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        decode_sequence(
            input,
            "VecDeque length (u32)",
            std::collections::VecDeque::with_capacity,
            std::collections::VecDeque::push_back,
        )
    }
}

/// A map travels as its `(key, value)` pairs in key order.
impl<K: Codec + Ord, V: Codec> Codec for std::collections::BTreeMap<K, V> {
    fn encoded_len(&self) -> usize {
        4 + self
            .iter()
            .map(|(k, v)| k.encoded_len() + v.encoded_len())
            .sum::<usize>()
    }
    fn encode(&self, out: &mut [u8]) {
        encode_len_prefix(self.len(), out);
        let mut at = 4;
        for (k, v) in self {
            let (nk, nv) = (k.encoded_len(), v.encoded_len());
            k.encode(&mut out[at..at + nk]);
            v.encode(&mut out[at + nk..at + nk + nv]);
            at += nk + nv;
        }
    }
    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        decode_sequence(
            input,
            "BTreeMap length (u32)",
            |_| std::collections::BTreeMap::new(),
            |map, (k, v)| {
                map.insert(k, v);
            },
        )
    }
}

impl<T: Codec> Codec for Option<T> {
    fn encoded_len(&self) -> usize {
        1 + self.as_ref().map_or(0, Codec::encoded_len)
    }
    fn encode(&self, out: &mut [u8]) {
        match self {
            None => out[0] = 0,
            Some(v) => {
                out[0] = 1;
                v.encode(&mut out[1..]);
            }
        }
    }
    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        match take::<1>(input, "Option tag")?[0] {
            0 => Ok(None),
            1 => T::decode(input).map(Some),
            _ => Err(DecodeError::Invalid {
                expected: "Option tag",
                detail: "tag byte is neither 0 nor 1",
                remaining_bytes: input.len(),
            }),
        }
    }
}

impl<T: Codec> Codec for Box<T> {
    fn encoded_len(&self) -> usize {
        (**self).encoded_len()
    }
    fn encode(&self, out: &mut [u8]) {
        (**self).encode(out)
    }
    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        T::decode(input).map(Box::new)
    }
}

/// Implements [`Codec`] for a struct by encoding the listed fields in order
/// (all of them, each a `Codec`); generic parameters must be `Codec` too:
///
/// ```
/// use rheon_net::codec::{decode_exact, encode_to_vec};
/// #[derive(Debug, PartialEq)]
/// struct Pair<T> { left: T, right: u64 }
/// rheon_net::codec_struct!(Pair<T> { left, right });
/// let pair = Pair { left: String::from("a"), right: 7 };
/// assert_eq!(decode_exact::<Pair<String>>(&encode_to_vec(&pair)).unwrap(), pair);
/// ```
#[macro_export]
macro_rules! codec_struct {
    ($ty:ident $(< $($g:ident),+ >)? { $($field:ident),+ $(,)? }) => {
        impl $(< $($g: $crate::codec::Codec),+ >)? $crate::codec::Codec for $ty $(< $($g),+ >)? {
            fn encoded_len(&self) -> usize {
                0 $(+ $crate::codec::Codec::encoded_len(&self.$field))+
            }
            fn encode(&self, out: &mut [u8]) {
                let mut at = 0;
                $(
                    let n = $crate::codec::Codec::encoded_len(&self.$field);
                    $crate::codec::Codec::encode(&self.$field, &mut out[at..at + n]);
                    at += n;
                )+
                let _ = at;
            }
            fn decode(
                input: &mut &[u8],
            ) -> Result<Self, $crate::codec::DecodeError> {
                Ok($ty { $($field: $crate::codec::Codec::decode(input)?),+ })
            }
        }
    };
}

macro_rules! codec_tuple {
    ($($name:ident $idx:tt),+) => {
        impl<$($name: Codec),+> Codec for ($($name,)+) {
            fn encoded_len(&self) -> usize {
                0 $(+ self.$idx.encoded_len())+
            }
            fn encode(&self, out: &mut [u8]) {
                let mut at = 0;
                $(
                    let n = self.$idx.encoded_len();
                    self.$idx.encode(&mut out[at..at + n]);
                    at += n;
                )+
                let _ = at;
            }
            fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
                Ok(($($name::decode(input)?,)+))
            }
        }
    };
}

codec_tuple!(A 0);
codec_tuple!(A 0, B 1);
codec_tuple!(A 0, B 1, C 2);
codec_tuple!(A 0, B 1, C 2, D 3);
codec_tuple!(A 0, B 1, C 2, D 3, E 4);
codec_tuple!(A 0, B 1, C 2, D 3, E 4, F 5);

/// Encodes `value` into a fresh `Vec` (for tests and cold paths).
pub fn encode_to_vec<T: Codec>(value: &T) -> Vec<u8> {
    let mut out = vec![0u8; value.encoded_len()];
    value.encode(&mut out);
    out
}

/// Decodes one value that must span all of `bytes`.
pub fn decode_exact<T: Codec>(mut bytes: &[u8]) -> Result<T, DecodeError> {
    let v = T::decode(&mut bytes)?;
    if bytes.is_empty() {
        Ok(v)
    } else {
        Err(DecodeError::Invalid {
            expected: "end of record",
            detail: "trailing bytes after the value",
            remaining_bytes: bytes.len(),
        })
    }
}
