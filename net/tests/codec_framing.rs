//! Codec and framing against a model: random records of mixed types and sizes are
//! packed into buffers and must read back equal; bad input must give an error, never a
//! panic.

use proptest::prelude::*;
use rheon_net::codec::{decode_exact, encode_to_vec};
use rheon_net::{Buffer, BufferBuilder, Codec, DecodeError, NetError, SegmentPool};

type Rec = (u64, String, Vec<u16>, Option<i32>, (bool, char), Box<f64>);

/// A generic struct with collections, encoded by `codec_struct!`.
#[derive(Debug, PartialEq)]
struct Tagged<T> {
    tag: u8,
    deque: std::collections::VecDeque<T>,
    map: std::collections::BTreeMap<i64, String>,
}
rheon_net::codec_struct!(Tagged<T> { tag, deque, map });

fn rec_strategy() -> impl Strategy<Value = Rec> {
    (
        any::<u64>(),
        prop_oneof![".{0,8}", ".{0,200}"],
        proptest::collection::vec(any::<u16>(), 0..100),
        any::<Option<i32>>(),
        (any::<bool>(), any::<char>()),
        any::<f64>()
            .prop_filter("NaN != NaN", |f| !f.is_nan())
            .prop_map(Box::new),
    )
}

/// Packs `recs` into as many buffers as needed and returns them.
fn pack(pool: &rheon_net::LocalBufferPool, recs: &[Rec]) -> Vec<Buffer> {
    let mut out = Vec::new();
    let mut b = BufferBuilder::new(pool.try_take().expect("segment"));
    for r in recs {
        if !b.try_append(r).expect("record fits a segment") {
            out.push(b.finish());
            b = BufferBuilder::new(pool.try_take().expect("segment"));
            assert!(b.try_append(r).unwrap(), "record fits an empty segment");
        }
    }
    if !b.is_empty() {
        out.push(b.finish());
    }
    out
}

proptest! {
    #[test]
    fn records_round_trip_through_buffers(
        recs in proptest::collection::vec(rec_strategy(), 0..200),
        segment_size_bytes in 2048usize..4096,
    ) {
        let pool = SegmentPool::new(segment_size_bytes, 256);
        let local = pool.reserve(256).unwrap();
        let bufs = pack(&local, &recs);
        let mut back = Vec::new();
        for buf in &bufs {
            prop_assert!(buf.len_bytes() <= segment_size_bytes);
            let mut n = 0;
            for r in buf.decode_records::<Rec>() {
                back.push(r.unwrap());
                n += 1;
            }
            prop_assert_eq!(n, buf.record_count());
        }
        prop_assert_eq!(&back, &recs);
        // A transport that copies the filled bytes into another segment gets the same.
        for buf in bufs {
            let mut seg = local.try_take().unwrap();
            seg.as_mut_slice()[..buf.len_bytes()].copy_from_slice(buf.as_bytes());
            let copy = Buffer::from_filled(seg, buf.len_bytes()).unwrap();
            prop_assert_eq!(copy.record_count(), buf.record_count());
            prop_assert!(copy.records().eq(buf.records()));
            local.recycle(buf.into_segment());
            local.recycle(copy.into_segment());
        }
    }

    #[test]
    fn value_round_trip_and_every_truncation_is_an_error(r in rec_strategy()) {
        let bytes = encode_to_vec(&r);
        prop_assert_eq!(bytes.len(), r.encoded_len());
        prop_assert_eq!(decode_exact::<Rec>(&bytes).unwrap(), r);
        for cut in 0..bytes.len() {
            prop_assert!(decode_exact::<Rec>(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn collections_and_structs_round_trip_and_truncations_are_errors(
        deque in proptest::collection::vec_deque(any::<u32>(), 0..50),
        map in proptest::collection::btree_map(any::<i64>(), ".{0,12}", 0..50),
        tag in any::<u8>(),
    ) {
        let value = Tagged { tag, deque, map };
        let bytes = encode_to_vec(&value);
        prop_assert_eq!(bytes.len(), value.encoded_len());
        prop_assert_eq!(&decode_exact::<Tagged<u32>>(&bytes).unwrap(), &value);
        for cut in 0..bytes.len() {
            prop_assert!(decode_exact::<Tagged<u32>>(&bytes[..cut]).is_err());
        }
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300), len in 0usize..400) {
        let _ = decode_exact::<Rec>(&bytes);
        let _ = decode_exact::<Vec<String>>(&bytes);
        let _ = decode_exact::<Option<(char, bool, usize)>>(&bytes);
        let pool = SegmentPool::new(256, 1);
        let mut seg = pool.reserve(1).unwrap().try_take().unwrap();
        seg.as_mut_slice()[..bytes.len().min(256)].copy_from_slice(&bytes[..bytes.len().min(256)]);
        if let Ok(buf) = Buffer::from_filled(seg, len) {
            // Whatever validated must iterate without panicking and match the count.
            prop_assert_eq!(buf.records().count(), buf.record_count());
        }
    }
}

#[test]
fn record_too_large_is_reported_and_nothing_is_written() {
    let pool = SegmentPool::new(1024, 1);
    let mut b = BufferBuilder::new(pool.reserve(1).unwrap().try_take().unwrap());
    let big = "x".repeat(1024);
    match b.try_append(&big) {
        Err(NetError::RecordTooLarge {
            len_bytes,
            max_bytes,
        }) => {
            assert_eq!(len_bytes, 1028);
            assert_eq!(max_bytes, 1020);
        }
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    assert!(b.is_empty());
    // Exactly the maximum fits an empty segment; then nothing more does.
    let max = "y".repeat(1020 - 4);
    assert!(b.try_append(&max).unwrap());
    assert_eq!(b.len_bytes(), 1024);
    assert!(!b.try_append(&0u8).unwrap());
    assert_eq!(b.record_count(), 1);
}

#[test]
fn decode_errors_say_what_and_how_much() {
    let err = decode_exact::<u64>(&[1, 2, 3]).unwrap_err();
    assert_eq!(
        err,
        DecodeError::Truncated {
            expected: "u64",
            needed_bytes: 8,
            remaining_bytes: 3
        }
    );
    assert!(err.to_string().contains("expected u64"));
    let err = decode_exact::<bool>(&[7]).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::Invalid {
            expected: "bool",
            ..
        }
    ));
    // A huge length prefix with no bytes behind it fails without allocating.
    let err = decode_exact::<Vec<u64>>(&u32::MAX.to_le_bytes()).unwrap_err();
    assert!(matches!(err, DecodeError::Truncated { .. }));
    let err = decode_exact::<String>(&[2, 0, 0, 0, 0xff, 0xfe]).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::Invalid {
            expected: "String",
            ..
        }
    ));
    let err = decode_exact::<u8>(&[1, 2]).unwrap_err();
    assert!(matches!(
        err,
        DecodeError::Invalid {
            expected: "end of record",
            ..
        }
    ));
}

#[test]
fn corrupt_framing_is_rejected() {
    let pool = SegmentPool::new(256, 2);
    let local = pool.reserve(2).unwrap();
    let mut seg = local.try_take().unwrap();
    seg.as_mut_slice()[..4].copy_from_slice(&100u32.to_le_bytes());
    match Buffer::from_filled(seg, 50) {
        Err(NetError::CorruptBuffer { offset: 0, .. }) => {}
        other => panic!("expected CorruptBuffer, got {other:?}"),
    }
    let seg = local.try_take().unwrap();
    assert!(matches!(
        Buffer::from_filled(seg, 2),
        Err(NetError::CorruptBuffer { .. })
    ));
}

#[test]
fn all_primitive_impls_round_trip() {
    fn rt<T: Codec + PartialEq + std::fmt::Debug>(v: T) {
        assert_eq!(decode_exact::<T>(&encode_to_vec(&v)).unwrap(), v);
    }
    rt(7u8);
    rt(7u16);
    rt(7u32);
    rt(u64::MAX);
    rt(u128::MAX);
    rt(-7i8);
    rt(-7i16);
    rt(-7i32);
    rt(i64::MIN);
    rt(i128::MIN);
    rt(usize::MAX);
    rt(isize::MIN);
    rt(1.5f32);
    rt(-2.5f64);
    rt(true);
    rt('é');
    rt(());
    rt(String::from("rheon"));
    rt(vec![Some(1u8), None]);
    rt(Box::new(3u16));
    rt((1u8,));
    rt((1u8, 2u16, 3u32, 4u64, 5i8, String::from("six")));
    assert_eq!(encode_to_vec(&1usize).len(), 8);
    assert_eq!(
        encode_to_vec(&String::from("ab")),
        vec![2, 0, 0, 0, b'a', b'b']
    );
}
