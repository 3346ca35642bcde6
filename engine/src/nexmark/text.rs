//! [`Str`]: the immutable string of the Nexmark model. It owns no per-event heap
//! memory in the common cases, so the generator can produce events without
//! allocating:
//!
//! - **inline**: up to [`Str::INLINE_CAPACITY_BYTES`] (22) bytes live in the value
//!   itself (names, emails, credit cards, cities, channel names, item names);
//! - **static**: a `&'static str`, for tables and pools built once (the generator's
//!   padding pool and channel URLs, constant names);
//! - **shared**: a byte range of a reference-counted `String`, for longer strings made
//!   at run time (decoded records, parsed JSON, `From<String>`); slicing it or cloning
//!   it is a reference-count increment.
//!
//! [`StaticAscii`] is a static text known to be ASCII, whose slices become static
//! `Str`s without reading the text.
//!
//! A `Str` is 24 bytes, like a `String`, and behaves as a `str` everywhere it is
//! observed: equality, ordering and hashing are those of the `str` it holds (so a
//! `HashMap<Str, _>` is looked up with a `&str`), `Debug` and `Display` print it as a
//! `str` does, and its [`Codec`] encoding is byte for byte that of `String`.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::{Deref, Range};
use std::sync::Arc;

use rheon_net::codec::{Codec, DecodeError};

/// An immutable, cheaply cloned string; see the [module documentation](self).
#[derive(Clone)]
pub struct Str(Repr);

#[derive(Clone)]
enum Repr {
    /// Invariant: `bytes[..len]` is valid UTF-8 and `len <= INLINE_CAPACITY_BYTES`;
    /// `as_str` relies on it.
    Inline {
        len: u8,
        bytes: [u8; Str::INLINE_CAPACITY_BYTES],
    },
    Static(&'static str),
    /// Invariant: `start..start + len` lies on character boundaries of `buf`.
    Shared {
        buf: Arc<String>,
        start: u32,
        len: u32,
    },
}

impl Str {
    /// The longest string held without a heap reference.
    pub const INLINE_CAPACITY_BYTES: usize = 22;

    /// The empty string.
    pub const fn new() -> Str {
        Str(Repr::Inline {
            len: 0,
            bytes: [0; Str::INLINE_CAPACITY_BYTES],
        })
    }

    /// A string referring to `s`; never allocates and costs nothing to clone or drop.
    pub const fn from_static(s: &'static str) -> Str {
        Str(Repr::Static(s))
    }

    /// `s` copied into the value, or `None` when it is longer than
    /// [`INLINE_CAPACITY_BYTES`](Str::INLINE_CAPACITY_BYTES).
    #[inline]
    pub fn inline(s: &str) -> Option<Str> {
        if s.len() > Str::INLINE_CAPACITY_BYTES {
            return None;
        }
        let mut bytes = [0; Str::INLINE_CAPACITY_BYTES];
        bytes[..s.len()].copy_from_slice(s.as_bytes());
        Some(Str(Repr::Inline {
            len: s.len() as u8,
            bytes,
        }))
    }

    /// `bytes` copied into the value, or `None` when they are not all ASCII or longer
    /// than [`INLINE_CAPACITY_BYTES`](Str::INLINE_CAPACITY_BYTES). Cheaper than
    /// validating UTF-8 for strings assembled byte by byte.
    #[inline]
    pub fn inline_ascii(bytes: &[u8]) -> Option<Str> {
        if bytes.len() > Str::INLINE_CAPACITY_BYTES || !bytes.is_ascii() {
            return None;
        }
        let mut buf = [0; Str::INLINE_CAPACITY_BYTES];
        buf[..bytes.len()].copy_from_slice(bytes);
        Some(Str(Repr::Inline {
            len: bytes.len() as u8,
            bytes: buf,
        }))
    }

    /// The first `len` bytes of `bytes`, stored inline as they are (no copy out of
    /// the array, no call to `memcpy`), or `None` when `len` exceeds
    /// [`INLINE_CAPACITY_BYTES`](Str::INLINE_CAPACITY_BYTES) or the bytes are not all
    /// ASCII. For strings assembled in a fixed-size buffer.
    #[inline]
    pub fn inline_ascii_array(bytes: [u8; Str::INLINE_CAPACITY_BYTES], len: usize) -> Option<Str> {
        if len > Str::INLINE_CAPACITY_BYTES || !bytes[..len].is_ascii() {
            return None;
        }
        Some(Str(Repr::Inline {
            len: len as u8,
            bytes,
        }))
    }

    /// `s` inline when it fits, else shared (one allocation that owns the bytes).
    pub fn copy_from(s: &str) -> Str {
        Str::inline(s).unwrap_or_else(|| Str::from_shared(Arc::new(s.to_owned()), 0..s.len()))
    }

    /// The bytes `range` of `buf`, sharing `buf`.
    ///
    /// # Panics
    /// If `range` is out of bounds or not on character boundaries (as `&buf[range]`
    /// would), or longer than `u32::MAX` bytes.
    pub fn from_shared(buf: Arc<String>, range: Range<usize>) -> Str {
        assert!(
            buf.get(range.clone()).is_some(),
            "range {range:?} is not a char-boundary range of a {}-byte string",
            buf.len()
        );
        let start = u32::try_from(range.start).expect("Str offsets are below 4 GiB");
        let len = u32::try_from(range.len()).expect("Str lengths are below 4 GiB");
        Str(Repr::Shared { buf, start, len })
    }

    /// The string as a `&str`.
    #[inline]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline { len, bytes } => {
                let bytes = &bytes[..usize::from(*len)];
                debug_assert!(std::str::from_utf8(bytes).is_ok());
                // SAFETY: the `Inline` invariant: `bytes[..len]` was copied from a
                // `&str` (`Str::inline`) or from bytes checked to be ASCII
                // (`Str::inline_ascii`), or is empty (`Str::new`); these are the only
                // constructors of `Inline`, and its fields are never mutated. So the
                // bytes are valid UTF-8.
                unsafe { std::str::from_utf8_unchecked(bytes) }
            }
            Repr::Static(s) => s,
            Repr::Shared { buf, start, len } => {
                let start = *start as usize;
                &buf[start..start + *len as usize]
            }
        }
    }

    /// The bytes `range` of this string, sharing its storage: no allocation and, for a
    /// shared string, one reference-count increment.
    ///
    /// # Panics
    /// If `range` is out of bounds or not on character boundaries (as `&s[range]`
    /// would).
    pub fn slice(&self, range: Range<usize>) -> Str {
        let Some(sub) = self.as_str().get(range.clone()) else {
            panic!(
                "range {range:?} is not a char-boundary range of a {}-byte string",
                self.len()
            );
        };
        match &self.0 {
            Repr::Inline { .. } => Str::inline(sub).expect("a slice of an inline string fits"),
            Repr::Static(s) => Str::from_static(&s[range]),
            Repr::Shared { buf, start, .. } => {
                let start = *start as usize;
                Str::from_shared(buf.clone(), start + range.start..start + range.end)
            }
        }
    }

    /// Whether the string lives in the value itself (no heap reference).
    pub fn is_inline(&self) -> bool {
        matches!(self.0, Repr::Inline { .. })
    }

    /// Whether the string refers to static memory.
    pub fn is_static(&self) -> bool {
        matches!(self.0, Repr::Static(_))
    }
}

/// A static string checked once to be ASCII, so that every byte range of it is a
/// `str`: [`StaticAscii::slice`] checks the bounds only and never reads the bytes.
/// For large static texts sliced per event (the generator's padding pool, its
/// channel URLs), where the char-boundary check of `&s[range]` would be a cache
/// miss on bytes nobody else reads.
#[derive(Clone, Copy)]
pub struct StaticAscii(&'static str);

impl StaticAscii {
    /// `s`, or `None` when it is not all ASCII.
    pub fn new(s: &'static str) -> Option<StaticAscii> {
        s.is_ascii().then_some(StaticAscii(s))
    }

    /// Length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the text is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The whole text.
    pub fn as_str(&self) -> &'static str {
        self.0
    }

    /// The bytes `range`, still known to be ASCII.
    ///
    /// # Panics
    /// If `range` is out of bounds.
    pub fn sub(&self, range: Range<usize>) -> StaticAscii {
        let bytes: &'static [u8] = &self.0.as_bytes()[range];
        // SAFETY: as in `slice`: ASCII bytes are valid UTF-8 (and stay ASCII).
        StaticAscii(unsafe { std::str::from_utf8_unchecked(bytes) })
    }

    /// The bytes `range` as a static [`Str`].
    ///
    /// # Panics
    /// If `range` is out of bounds (as `&s[range]` would).
    #[inline]
    pub fn slice(&self, range: Range<usize>) -> Str {
        let bytes: &'static [u8] = &self.0.as_bytes()[range];
        // SAFETY: `StaticAscii::new`, the only constructor, checked that every byte
        // of `self.0` is ASCII, and the field is never changed; any run of ASCII
        // bytes is valid UTF-8.
        Str::from_static(unsafe { std::str::from_utf8_unchecked(bytes) })
    }
}

impl fmt::Debug for StaticAscii {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "StaticAscii({} bytes)", self.0.len())
    }
}

impl Default for Str {
    fn default() -> Self {
        Str::new()
    }
}

impl Deref for Str {
    type Target = str;
    #[inline]
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Str {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<[u8]> for Str {
    fn as_ref(&self) -> &[u8] {
        self.as_str().as_bytes()
    }
}

impl Borrow<str> for Str {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self.as_str(), f)
    }
}

impl fmt::Debug for Str {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq for Str {
    fn eq(&self, other: &Str) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Str {}

impl PartialEq<str> for Str {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Str {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<String> for Str {
    fn eq(&self, other: &String) -> bool {
        self.as_str() == other.as_str()
    }
}

impl PartialEq<Str> for str {
    fn eq(&self, other: &Str) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<Str> for &str {
    fn eq(&self, other: &Str) -> bool {
        *self == other.as_str()
    }
}

impl PartialEq<Str> for String {
    fn eq(&self, other: &Str) -> bool {
        self.as_str() == other.as_str()
    }
}

impl PartialOrd for Str {
    fn partial_cmp(&self, other: &Str) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Str {
    fn cmp(&self, other: &Str) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Hash for Str {
    /// Hashes exactly as the `str` does, as [`Borrow<str>`] requires.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}

impl From<&str> for Str {
    fn from(s: &str) -> Self {
        Str::copy_from(s)
    }
}

impl From<String> for Str {
    /// Inline when short (the `String` is freed); otherwise the `String`'s buffer is
    /// kept, not copied.
    fn from(s: String) -> Self {
        match Str::inline(&s) {
            Some(inline) => inline,
            None => {
                let len = s.len();
                Str::from_shared(Arc::new(s), 0..len)
            }
        }
    }
}

impl From<&String> for Str {
    fn from(s: &String) -> Self {
        Str::copy_from(s)
    }
}

impl From<Str> for String {
    fn from(s: Str) -> Self {
        s.as_str().to_owned()
    }
}

impl Codec for Str {
    /// As `String`: a `u32` little-endian byte length, then the UTF-8 bytes.
    fn encoded_len(&self) -> usize {
        4 + self.len()
    }

    fn encode(&self, out: &mut [u8]) {
        let len = u32::try_from(self.len()).expect("length prefix exceeds u32::MAX");
        out[..4].copy_from_slice(&len.to_le_bytes());
        out[4..4 + self.len()].copy_from_slice(self.as_bytes());
    }

    fn decode(input: &mut &[u8]) -> Result<Self, DecodeError> {
        rheon_net::codec::decode_str(input).map(Str::copy_from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rheon_net::codec::{decode_exact, encode_to_vec};
    use std::collections::hash_map::DefaultHasher;
    use std::collections::{BTreeSet, HashMap};

    fn hash_of<T: Hash + ?Sized>(value: &T) -> u64 {
        let mut h = DefaultHasher::new();
        value.hash(&mut h);
        h.finish()
    }

    /// Strings around the inline boundary, multi-byte characters, the empty string.
    fn samples() -> Vec<String> {
        let mut v = vec![
            String::new(),
            "a".to_owned(),
            "Peter Smith".to_owned(),
            "é\\\"ü€".to_owned(),
            "https://www.nexmark.com/abc/de_/fgh/item.htm?query=1&channel_id=1".to_owned(),
        ];
        for len in Str::INLINE_CAPACITY_BYTES - 1..=Str::INLINE_CAPACITY_BYTES + 2 {
            v.push("x".repeat(len));
        }
        // 21 bytes then a 2-byte character: 23 bytes, not inline.
        v.push(format!("{}é", "y".repeat(21)));
        v
    }

    /// Every way of making a `Str` holding `s`.
    fn forms(s: &str) -> Vec<Str> {
        let leaked: &'static str = Box::leak(s.to_owned().into_boxed_str());
        let padded = Arc::new(format!("<{s}>"));
        vec![
            Str::from(s),
            Str::from(s.to_owned()),
            Str::copy_from(s),
            Str::from_static(leaked),
            Str::from_shared(padded.clone(), 1..1 + s.len()),
            Str::from_shared(padded, 0..s.len() + 2).slice(1..1 + s.len()),
        ]
    }

    #[test]
    fn is_as_small_as_a_string() {
        assert_eq!(std::mem::size_of::<Str>(), std::mem::size_of::<String>());
        assert_eq!(std::mem::size_of::<Option<Str>>(), 24);
    }

    #[test]
    fn every_form_behaves_as_its_str() {
        for s in samples() {
            for t in forms(&s) {
                assert_eq!(t.as_str(), s);
                assert_eq!(&*t, s.as_str());
                assert_eq!(t.len(), s.len());
                assert_eq!(t, s.as_str());
                assert_eq!(t, *s.as_str());
                assert_eq!(t, s);
                assert_eq!(s.as_str(), t);
                assert_eq!(t, Str::from(s.as_str()));
                assert_eq!(hash_of(&t), hash_of(s.as_str()));
                assert_eq!(format!("{t}"), s);
                assert_eq!(format!("{t:?}"), format!("{s:?}"));
                assert_eq!(format!("{t:>30}"), format!("{s:>30}"));
                assert_eq!(t.cmp(&Str::from(s.as_str())), Ordering::Equal);
                let c = t.clone();
                drop(t);
                assert_eq!(c, s.as_str());
                assert_eq!(String::from(c), s);
            }
        }
    }

    #[test]
    fn inline_up_to_the_capacity_then_shared() {
        let cap = Str::INLINE_CAPACITY_BYTES;
        assert!(Str::from("x".repeat(cap).as_str()).is_inline());
        assert!(Str::from("x".repeat(cap)).is_inline());
        assert!(!Str::from("x".repeat(cap + 1).as_str()).is_inline());
        assert!(!Str::from("x".repeat(cap + 1)).is_inline());
        assert!(Str::inline(&"x".repeat(cap + 1)).is_none());
        assert_eq!(Str::inline_ascii(b"Peter Smith").unwrap(), "Peter Smith");
        assert!(Str::inline_ascii("x".repeat(cap).as_bytes()).is_some());
        assert!(Str::inline_ascii("x".repeat(cap + 1).as_bytes()).is_none());
        assert!(Str::inline_ascii("é".as_bytes()).is_none());
        assert!(Str::inline_ascii(&[b'a', 0xff]).is_none());
        assert!(Str::new().is_inline() && Str::default().is_empty());
        assert!(Str::from_static("static").is_static());
        assert!(Str::from_static("a long static string, over 22 bytes").is_static());
    }

    #[test]
    fn inline_arrays_and_static_ascii_slices() {
        let mut bytes = [0u8; Str::INLINE_CAPACITY_BYTES];
        bytes[..5].copy_from_slice(b"hello");
        let s = Str::inline_ascii_array(bytes, 5).unwrap();
        assert!(s.is_inline());
        assert_eq!(s, "hello");
        assert_eq!(Str::inline_ascii_array(bytes, 0).unwrap(), "");
        assert!(Str::inline_ascii_array(bytes, Str::INLINE_CAPACITY_BYTES + 1).is_none());
        bytes[2] = 0xc3;
        assert!(Str::inline_ascii_array(bytes, 5).is_none());
        assert_eq!(Str::inline_ascii_array(bytes, 2).unwrap(), "he");

        assert!(StaticAscii::new("é").is_none());
        let text = StaticAscii::new("the padding pool, longer than inline").unwrap();
        assert_eq!(text.len(), 36);
        let part = text.slice(4..11);
        assert!(part.is_static());
        assert_eq!(part, "padding");
        assert_eq!(text.slice(36..36), "");
        assert_eq!(text.sub(4..36).slice(0..7), "padding");
        assert_eq!(format!("{text:?}"), "StaticAscii(36 bytes)");
    }

    #[test]
    #[should_panic]
    fn static_ascii_slices_are_bounds_checked() {
        let _ = StaticAscii::new("abc").unwrap().slice(2..4);
    }

    #[test]
    fn order_and_hash_maps_follow_str() {
        let words = ["b", "a", "", "ab", "é", &"z".repeat(40), &"a".repeat(30)];
        let strs: BTreeSet<Str> = words.iter().map(|w| Str::from(*w)).collect();
        let plain: BTreeSet<&str> = words.iter().copied().collect();
        assert!(strs.iter().map(Str::as_str).eq(plain.iter().copied()));
        let mut map: HashMap<Str, usize> = HashMap::new();
        for (i, w) in words.iter().enumerate() {
            map.insert(Str::from(*w), i);
        }
        for (i, w) in words.iter().enumerate() {
            assert_eq!(map.get(*w), Some(&i), "{w}");
        }
        let (a, ab, long_b) = (Str::from("a"), Str::from("ab"), Str::from("b".repeat(30)));
        assert!(a < ab && ab < long_b && long_b > a);
        assert_eq!(long_b.cmp(&a), "b".repeat(30).as_str().cmp("a"));
    }

    #[test]
    fn slices_share_storage_and_keep_their_form() {
        let shared = Str::from("0123456789".repeat(5));
        let part = shared.slice(5..35);
        assert_eq!(part, &"0123456789".repeat(5)[5..35]);
        assert!(!part.is_inline() && !part.is_static());
        let Repr::Shared { buf, .. } = &shared.0 else {
            panic!("not shared")
        };
        assert_eq!(Arc::strong_count(buf), 2);
        drop(part);
        assert_eq!(Arc::strong_count(buf), 1);
        let pool = Str::from_static("the padding pool, longer than inline");
        assert!(pool.slice(4..30).is_static());
        assert_eq!(pool.slice(4..11), "padding");
        assert!(Str::from("inline").slice(1..3).is_inline());
        assert_eq!(Str::from("inline").slice(1..3), "nl");
        assert_eq!(shared.slice(3..3), "");
    }

    #[test]
    #[should_panic(expected = "char-boundary")]
    fn slicing_inside_a_character_panics() {
        let _ = Str::from("é").slice(0..1);
    }

    #[test]
    fn codec_is_the_string_codec() {
        for s in samples() {
            for t in forms(&s) {
                let bytes = encode_to_vec(&t);
                assert_eq!(bytes, encode_to_vec(&s));
                assert_eq!(bytes.len(), t.encoded_len());
                let back = decode_exact::<Str>(&bytes).unwrap();
                assert_eq!(back, s.as_str());
                assert_eq!(back.is_inline(), s.len() <= Str::INLINE_CAPACITY_BYTES);
                assert_eq!(decode_exact::<String>(&bytes).unwrap(), s);
            }
        }
    }

    #[test]
    fn codec_errors_match_the_string_codec() {
        let bytes = encode_to_vec(&"x".repeat(30));
        for cut in [0, 3, 4, 20, bytes.len() - 1] {
            let ours = decode_exact::<Str>(&bytes[..cut]).unwrap_err();
            let theirs = decode_exact::<String>(&bytes[..cut]).unwrap_err();
            assert_eq!(ours, theirs, "cut at {cut}");
        }
        let mut bad = encode_to_vec(&"ab".to_owned());
        bad[4] = 0xff;
        assert_eq!(
            decode_exact::<Str>(&bad).unwrap_err(),
            decode_exact::<String>(&bad).unwrap_err()
        );
    }

    #[test]
    fn is_send_sync_static() {
        fn check<T: Send + Sync + 'static>() {}
        check::<Str>();
    }
}
