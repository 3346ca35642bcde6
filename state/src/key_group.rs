//! Key groups: the unit of keyed-state partitioning, as in Flink's
//! `KeyGroupRangeAssignment`. A key hashes to one of `max_parallelism` key groups; each of
//! `parallelism` subtasks owns a contiguous, inclusive range of key groups. State is
//! stored, snapshotted and restored per key group, so rescaling only moves whole key
//! groups between subtasks.
//!
//! Architecture Invariant: the functions here decide where every key's state lives, in
//! every process and across restarts. They must stay deterministic (no random seeds, no
//! per-process state) and must not change between releases that share snapshots; the
//! pinned vectors in the tests guard that.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::ops::RangeInclusive;

use rustc_hash::FxHasher;

use crate::error::StateError;

/// Max parallelism used when the job does not set one (Flink's
/// `DEFAULT_LOWER_BOUND_MAX_PARALLELISM`, 2^7).
pub const MAX_PARALLELISM_DEFAULT: u32 = 128;

/// Largest max parallelism, hence the largest number of key groups (Flink's
/// `UPPER_BOUND_MAX_PARALLELISM`, 2^15).
pub const MAX_PARALLELISM_BOUND: u32 = 32768;

const _: () = assert!(MAX_PARALLELISM_DEFAULT.is_power_of_two());
const _: () = assert!(MAX_PARALLELISM_BOUND.is_power_of_two());
const _: () =
    assert!(1 <= MAX_PARALLELISM_DEFAULT && MAX_PARALLELISM_DEFAULT <= MAX_PARALLELISM_BOUND);
// `for_operator` and `operator_index_for_key_group` multiply two values of at most the
// bound; that product must fit the u64 arithmetic they use.
const _: () =
    assert!((MAX_PARALLELISM_BOUND as u64) * (MAX_PARALLELISM_BOUND as u64) < u64::MAX / 2);

/// Flink's `MathUtils.murmurHash(int)`: one round of Murmur3 over a single 32-bit block,
/// the Murmur3 finalizer, then made non-negative as Flink does (a negative result is
/// negated; `i32::MIN` becomes 0). The result is therefore always below 2^31.
///
/// Java's `int` arithmetic wraps, and its `>>>` is the logical shift that `u32 >>` is.
pub fn murmur_hash(code: u32) -> u32 {
    let mut h = code;
    h = h.wrapping_mul(0xcc9e_2d51);
    h = h.rotate_left(15);
    h = h.wrapping_mul(0x1b87_3593);

    h = h.rotate_left(13);
    h = h.wrapping_mul(5).wrapping_add(0xe654_6b64);

    h ^= 4; // Flink mixes in the length, 4 bytes.
    h = bit_mix(h);

    let signed = h as i32;
    if signed >= 0 {
        signed as u32
    } else if signed != i32::MIN {
        signed.wrapping_neg() as u32
    } else {
        0
    }
}

/// Flink's `MathUtils.bitMix`: Murmur3's 32-bit finalizer (fmix32).
fn bit_mix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// The 32-bit hash of a key that decides its key group (the role Java's `hashCode` plays
/// in Flink): `rustc_hash::FxHasher` from its zero state, its 64-bit result folded to 32
/// bits by xor-ing the halves.
///
/// Deterministic across processes and runs of the same binary on a 64-bit target:
/// `FxHasher` has no random seed. It does depend on the key type's `Hash` impl and on the
/// `rustc-hash` version (pinned in the tests), so changing either relocates keys.
pub fn key_hash<K: Hash + ?Sized>(key: &K) -> u32 {
    let mut hasher = FxHasher::default();
    key.hash(&mut hasher);
    let h = hasher.finish();
    (h ^ (h >> 32)) as u32
}

/// The key group of a key hash: `murmur_hash(key_hash) % max_parallelism`, as in Flink's
/// `computeKeyGroupForKeyHash`.
pub fn key_group_for_hash(key_hash: u32, max_parallelism: u32) -> u32 {
    assert!(
        max_parallelism >= 1,
        "max parallelism must be at least 1, got 0"
    );
    murmur_hash(key_hash) % max_parallelism
}

/// The key group of a key: [`key_group_for_hash`] of [`key_hash`].
pub fn assign_to_key_group<K: Hash + ?Sized>(key: &K, max_parallelism: u32) -> u32 {
    key_group_for_hash(key_hash(key), max_parallelism)
}

/// The index of the subtask that owns a key group: `key_group * parallelism /
/// max_parallelism`, as in Flink's `computeOperatorIndexForKeyGroup`. It is the inverse
/// of [`KeyGroupRange::for_operator`].
pub fn operator_index_for_key_group(max_parallelism: u32, parallelism: u32, key_group: u32) -> u32 {
    assert!(
        key_group < max_parallelism,
        "key group {key_group} is outside 0..{max_parallelism} (the max parallelism)"
    );
    (u64::from(key_group) * u64::from(parallelism) / u64::from(max_parallelism)) as u32
}

/// Checks `1 <= parallelism <= max_parallelism <= MAX_PARALLELISM_BOUND`.
pub fn check_parallelism(max_parallelism: u32, parallelism: u32) -> Result<(), StateError> {
    if max_parallelism == 0 || max_parallelism > MAX_PARALLELISM_BOUND {
        return Err(StateError::MaxParallelismOutOfBounds {
            max_parallelism,
            parallelism,
        });
    }
    if parallelism == 0 || parallelism > max_parallelism {
        return Err(StateError::ParallelismOutOfBounds {
            parallelism,
            max_parallelism,
        });
    }
    Ok(())
}

/// Flink's `computeDefaultMaxParallelism`: `parallelism * 1.5` rounded up to a power of
/// two, clamped to `[MAX_PARALLELISM_DEFAULT, MAX_PARALLELISM_BOUND]`.
///
/// Total where Flink throws: a parallelism of 0 gives the lower bound and one above the
/// bound gives the bound; [`check_parallelism`] then rejects what is invalid.
pub fn default_max_parallelism(parallelism: u32) -> u32 {
    let scaled = u64::from(parallelism) + u64::from(parallelism / 2);
    let rounded = scaled.max(1).next_power_of_two();
    rounded.clamp(
        u64::from(MAX_PARALLELISM_DEFAULT),
        u64::from(MAX_PARALLELISM_BOUND),
    ) as u32
}

/// An inclusive range of key groups `[start, end]`, as Flink's `KeyGroupRange`. It is
/// empty when `start > end` (Flink's empty range is `[0, -1]`; see [`Self::EMPTY`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyGroupRange {
    /// First key group in the range.
    pub start: u32,
    /// Last key group in the range (inclusive).
    pub end: u32,
}

impl KeyGroupRange {
    /// The canonical empty range. Any range with `start > end` is empty too, but compares
    /// unequal to this one.
    pub const EMPTY: Self = Self { start: 1, end: 0 };

    /// The inclusive range `[start, end]`; empty when `start > end`.
    pub const fn new(start: u32, end: u32) -> Self {
        Self { start, end }
    }

    /// The key groups subtask `operator_index` of `parallelism` owns:
    /// `[(i*M + p - 1) / p, ((i+1)*M - 1) / p]`, as Flink's
    /// `computeKeyGroupRangeForOperatorIndex`. Never empty for valid arguments.
    ///
    /// Panics unless `1 <= parallelism <= max_parallelism <= MAX_PARALLELISM_BOUND` and
    /// `operator_index < parallelism`: validate configuration with [`check_parallelism`]
    /// first.
    pub fn for_operator(max_parallelism: u32, parallelism: u32, operator_index: u32) -> Self {
        if let Err(error) = check_parallelism(max_parallelism, parallelism) {
            panic!("invalid parallelism for a key group range: {error}");
        }
        assert!(
            operator_index < parallelism,
            "operator index {operator_index} is outside 0..{parallelism} (the parallelism)"
        );
        let (m, p, i) = (
            u64::from(max_parallelism),
            u64::from(parallelism),
            u64::from(operator_index),
        );
        // Flink writes `(i*M + p - 1) / p`; the same ceiling division.
        let start = (i * m).div_ceil(p);
        let end = ((i + 1) * m - 1) / p;
        Self {
            start: start as u32,
            end: end as u32,
        }
    }

    /// Whether `key_group` lies in the range.
    pub fn contains(&self, key_group: u32) -> bool {
        self.start <= key_group && key_group <= self.end
    }

    /// The number of key groups in the range (0 when empty).
    pub fn len(&self) -> u32 {
        if self.is_empty() {
            0
        } else {
            self.end - self.start + 1
        }
    }

    /// Whether the range holds no key group.
    pub fn is_empty(&self) -> bool {
        self.start > self.end
    }

    /// The key groups in ascending order.
    pub fn iter(&self) -> RangeInclusive<u32> {
        self.start..=self.end
    }
}

impl fmt::Display for KeyGroupRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            write!(f, "[] (empty)")
        } else {
            write!(f, "[{}, {}]", self.start, self.end)
        }
    }
}

impl IntoIterator for KeyGroupRange {
    type Item = u32;
    type IntoIter = RangeInclusive<u32>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Checks the ranges of all `p` subtasks against hand-computed `[start, end]` pairs,
    /// and that every key group maps back to the subtask whose range holds it.
    fn check_ranges(max_parallelism: u32, parallelism: u32, expected: &[(u32, u32)]) {
        assert_eq!(
            expected.len(),
            parallelism as usize,
            "test table is incomplete"
        );
        for (i, &(start, end)) in expected.iter().enumerate() {
            let i = i as u32;
            let range = KeyGroupRange::for_operator(max_parallelism, parallelism, i);
            assert_eq!(
                range,
                KeyGroupRange::new(start, end),
                "M={max_parallelism} p={parallelism} i={i}"
            );
            for kg in range.iter() {
                assert_eq!(
                    operator_index_for_key_group(max_parallelism, parallelism, kg),
                    i,
                    "kg {kg}"
                );
            }
        }
    }

    #[test]
    fn ranges_match_hand_computed_vectors() {
        // M=128, p=3: i=0 [(0+2)/3, 127/3] = [0, 42]; i=1 [(128+2)/3, 255/3] = [43, 85];
        // i=2 [(256+2)/3, 383/3] = [86, 127].
        check_ranges(128, 3, &[(0, 42), (43, 85), (86, 127)]);
        // M=128, p=1: [(0+0)/1, 127/1].
        check_ranges(128, 1, &[(0, 127)]);
        // M=128, p=2: i=0 [1/2, 127/2] = [0, 63]; i=1 [129/2, 255/2] = [64, 127].
        check_ranges(128, 2, &[(0, 63), (64, 127)]);
        // M=10, p=3: i=0 [2/3, 9/3] = [0, 3]; i=1 [12/3, 19/3] = [4, 6];
        // i=2 [22/3, 29/3] = [7, 9].
        check_ranges(10, 3, &[(0, 3), (4, 6), (7, 9)]);
        // M=128, p=128: i [(128i + 127)/128, (128i + 127)/128] = [i, i].
        let each: Vec<(u32, u32)> = (0..128).map(|i| (i, i)).collect();
        check_ranges(128, 128, &each);
        // M=1, p=1: [0, 0].
        check_ranges(1, 1, &[(0, 0)]);
    }

    #[test]
    fn operator_index_matches_hand_computed_vectors() {
        // kg * p / M with M=10, p=3: 3*3/10 = 0, 4*3/10 = 1, 6*3/10 = 1, 7*3/10 = 2.
        for (kg, want) in [(0, 0), (3, 0), (4, 1), (6, 1), (7, 2), (9, 2)] {
            assert_eq!(operator_index_for_key_group(10, 3, kg), want, "kg {kg}");
        }
        // Largest values: 32767 * 32768 / 32768 = 32767.
        assert_eq!(operator_index_for_key_group(32768, 32768, 32767), 32767);
    }

    #[test]
    fn range_basics() {
        let r = KeyGroupRange::new(43, 85);
        assert_eq!(r.len(), 43);
        assert!(!r.is_empty());
        assert!(r.contains(43) && r.contains(85));
        assert!(!r.contains(42) && !r.contains(86));
        assert_eq!(r.iter().count(), 43);
        assert_eq!(r.to_string(), "[43, 85]");

        for empty in [
            KeyGroupRange::EMPTY,
            KeyGroupRange::new(5, 4),
            KeyGroupRange::new(u32::MAX, 0),
        ] {
            assert!(empty.is_empty());
            assert_eq!(empty.len(), 0);
            assert_eq!(empty.iter().count(), 0);
            assert!(!empty.contains(0) && !empty.contains(4) && !empty.contains(5));
            assert_eq!(empty.to_string(), "[] (empty)");
        }
    }

    #[test]
    #[should_panic(expected = "operator index 3 is outside 0..3")]
    fn for_operator_rejects_index_beyond_parallelism() {
        KeyGroupRange::for_operator(128, 3, 3);
    }

    #[test]
    #[should_panic(expected = "parallelism 129 is outside 1..=128")]
    fn for_operator_rejects_parallelism_beyond_max() {
        KeyGroupRange::for_operator(128, 129, 0);
    }

    /// Expected values come from running Flink's `MathUtils.murmurHash(int)` and `bitMix`,
    /// copied verbatim into a Java program (OpenJDK, `java M`), which printed every step.
    /// The trace for 0 can be followed by hand: 0 * c1 = 0, rotations and * c2 keep 0,
    /// 0 * 5 + 0xe6546b64 = 0xe6546b64, ^ 4 = 0xe6546b60, fmix32 = 0x2362f9de = 593689054
    /// (non-negative, returned as is). The others, as (input, after ^4, after fmix32 as a
    /// Java int, result):
    ///   1:  0x26cf0572, 0xfbf1402a = -68075478   -> negated: 68075478
    ///   2:  0x77493ecf, 0x40b23b7f = 1085422463  -> 1085422463
    ///   42: 0x0ed18dd2, 0xbc5b91e3 = -1134849565 -> 1134849565
    ///   -1: 0x145ee0d1, 0x76293b50 = 1982413648  -> 1982413648
    ///   i32::MIN: 0xde54ebc4, 0x9994d794 = -1718298732 -> 1718298732
    ///   i32::MAX: 0x0c5ec132, 0x9d6eb342 = -1653689534 -> 1653689534
    /// 68075478 for murmurHash(1) also appears as a printed result in a public Java snippet
    /// that copies Flink's function.
    #[test]
    fn murmur_hash_matches_flink() {
        let vectors: [(i32, u32); 7] = [
            (0, 593_689_054),
            (1, 68_075_478),
            (2, 1_085_422_463),
            (42, 1_134_849_565),
            (-1, 1_982_413_648),
            (i32::MIN, 1_718_298_732),
            (i32::MAX, 1_653_689_534),
        ];
        for (input, want) in vectors {
            assert_eq!(murmur_hash(input as u32), want, "murmur_hash({input})");
        }
        // Flink's key group for an Integer key k with max parallelism 128 is
        // murmurHash(k) % 128: 593689054 % 128 = 94, 68075478 % 128 = 86.
        assert_eq!(key_group_for_hash(0, 128), 94);
        assert_eq!(key_group_for_hash(1, 128), 86);
        assert_eq!(key_group_for_hash(42, 128), 29);
    }

    #[test]
    fn bit_mix_matches_flink_trace() {
        // Step values from the Java trace of murmurHash(0) above.
        assert_eq!(bit_mix(0), 0);
        assert_eq!(bit_mix(0xe654_6b60), 0x2362_f9de);
    }

    /// Pinned `key_hash` values, computed independently (Python) from rustc-hash 2.1's
    /// algorithm on 64-bit targets: per written word `h = (h + w) * 0xf1357aea2e62a9c5`
    /// (wrapping), `finish` rotates left by 26, then we fold `h ^ (h >> 32)` to 32 bits.
    /// A change here relocates every key, breaking restore of existing snapshots.
    #[test]
    fn key_hash_is_pinned() {
        assert_eq!(key_hash(&0u64), 0);
        assert_eq!(key_hash(&42u64), 3_829_114_816);
        assert_eq!(key_hash(&7u32), 326_308_832);
        assert_eq!(key_hash(&(1u32, 2u32)), 2_307_585_744);
        // Same value through a reference or a boxed value hashes the same.
        assert_eq!(key_hash(&&42u64), key_hash(&Box::new(42u64)));
        // Unsized keys work.
        assert_eq!(key_hash("abc"), key_hash(&String::from("abc")));
        assert_eq!(
            assign_to_key_group(&42u64, 128),
            murmur_hash(3_829_114_816) % 128
        );
    }

    #[test]
    fn check_parallelism_bounds() {
        assert_eq!(check_parallelism(1, 1), Ok(()));
        assert_eq!(check_parallelism(128, 128), Ok(()));
        assert_eq!(
            check_parallelism(MAX_PARALLELISM_BOUND, MAX_PARALLELISM_BOUND),
            Ok(())
        );
        for (max_p, p) in [
            (128, 0),
            (128, 129),
            (0, 0),
            (0, 1),
            (32769, 1),
            (32769, 32769),
            (10, 11),
        ] {
            let err = check_parallelism(max_p, p).expect_err("must be rejected");
            let msg = err.to_string();
            assert!(
                msg.contains(&max_p.to_string()) && msg.contains(&p.to_string()),
                "{msg}"
            );
        }
        assert_eq!(
            check_parallelism(128, 129),
            Err(StateError::ParallelismOutOfBounds {
                parallelism: 129,
                max_parallelism: 128
            })
        );
        assert_eq!(
            check_parallelism(32769, 1),
            Err(StateError::MaxParallelismOutOfBounds {
                max_parallelism: 32769,
                parallelism: 1
            })
        );
        assert_eq!(
            check_parallelism(128, 129).unwrap_err().to_string(),
            "parallelism 129 is outside 1..=128 (1 up to the max parallelism)"
        );
    }

    #[test]
    fn default_max_parallelism_matches_flink() {
        // roundUpToPowerOfTwo(p + p/2), clamped to [128, 32768].
        for (p, want) in [
            (0, 128),
            (1, 128),
            (85, 128),      // 85 + 42 = 127 -> 128
            (86, 256),      // 86 + 43 = 129 -> 256
            (100, 256),     // 150 -> 256
            (171, 256),     // 171 + 85 = 256, already a power of two
            (172, 512),     // 172 + 86 = 258 -> 512
            (21846, 32768), // 21846 + 10923 = 32769 -> 65536 -> clamped
            (32768, 32768),
            (u32::MAX, 32768),
        ] {
            assert_eq!(default_max_parallelism(p), want, "p={p}");
        }
    }

    fn max_and_parallelism() -> impl Strategy<Value = (u32, u32)> {
        prop_oneof![
            (1u32..=MAX_PARALLELISM_BOUND).prop_flat_map(|m| (Just(m), 1..=m)),
            (1u32..=300).prop_flat_map(|m| (Just(m), 1..=m)),
        ]
    }

    proptest! {
        #[test]
        fn ranges_partition_all_key_groups((max_p, p) in max_and_parallelism()) {
            let mut next = 0u32;
            for i in 0..p {
                let range = KeyGroupRange::for_operator(max_p, p, i);
                prop_assert!(!range.is_empty(), "range of {} is empty: {}", i, range);
                prop_assert_eq!(range.start, next, "gap or overlap before subtask {}", i);
                for kg in range.iter() {
                    prop_assert_eq!(operator_index_for_key_group(max_p, p, kg), i);
                }
                next = range.end + 1;
            }
            prop_assert_eq!(next, max_p);
        }

        #[test]
        fn key_groups_are_in_bounds(hash in any::<u32>(), max_p in 1u32..=MAX_PARALLELISM_BOUND) {
            prop_assert!(murmur_hash(hash) <= i32::MAX as u32);
            prop_assert!(key_group_for_hash(hash, max_p) < max_p);
        }
    }
}
