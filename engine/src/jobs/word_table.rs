//! A counting hash table for the words of word count, built for the one thing
//! the tokenizer does per word: add one to a short key.
//!
//! Word count over a large vocabulary is bound by cache misses on the table,
//! not by arithmetic. Two things address that here: keys of up to 15 bytes live
//! inline in 32-byte slots (a probe touches one cache line, no heap pointer),
//! and words arrive in batches whose home slots are prefetched before any is
//! probed, so the misses of a batch overlap instead of queueing. Longer words
//! go to an ordinary map.
//!
//! Invariants: a key is never all zero (its last byte holds the word's length,
//! at least 1), so a zero key marks an empty slot; the table is at most half
//! full (`len <= capacity / 2`), so linear probing always finds a slot.

use rustc_hash::FxHashMap;

/// Longest word stored inline.
pub const SHORT_WORD_BYTES_MAX: usize = 15;
/// Words gathered before their slots are prefetched and probed.
pub const BATCH_WORDS_MAX: usize = 32;

#[derive(Clone, Copy, Default)]
#[repr(C, align(32))]
struct Slot {
    key: [u64; 2],
    count: u64,
}

#[derive(Clone, Copy, Default)]
struct Pending {
    key: [u64; 2],
    hash: u64,
}

#[derive(Clone)]
pub struct WordTable {
    slots: Vec<Slot>,
    len: usize,
    long: FxHashMap<String, u64>,
    batch: [Pending; BATCH_WORDS_MAX],
    batch_len: usize,
}

/// Up to 8 bytes as a little-endian integer, with overlapping loads instead
/// of a variable-length copy (which compiles to a `memcpy` call).
#[inline]
fn load_partial(b: &[u8]) -> u64 {
    let n = b.len();
    debug_assert!(n <= 8);
    if n >= 4 {
        let first = u32::from_le_bytes(b[..4].try_into().expect("4 bytes")) as u64;
        let last = u32::from_le_bytes(b[n - 4..].try_into().expect("4 bytes")) as u64;
        first | (last << (8 * (n - 4)))
    } else if n > 0 {
        (b[0] as u64) | ((b[n / 2] as u64) << (8 * (n / 2))) | ((b[n - 1] as u64) << (8 * (n - 1)))
    } else {
        0
    }
}

/// The inline key of a word of 1 to 15 bytes: its bytes, zero padded, with the
/// length in the last byte.
#[inline]
fn short_key(word: &str) -> Option<[u64; 2]> {
    let bytes = word.as_bytes();
    let n = bytes.len();
    if n == 0 || n > SHORT_WORD_BYTES_MAX {
        return None;
    }
    let (lo, hi) = if n >= 8 {
        (
            u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")),
            load_partial(&bytes[8..]),
        )
    } else {
        (load_partial(bytes), 0)
    };
    Some([lo, hi | ((n as u64) << 56)])
}

#[inline]
fn key_hash(key: [u64; 2]) -> u64 {
    let mut h =
        key[0].wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ key[1].wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    h ^= h >> 32;
    h = h.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    h ^ (h >> 29)
}

fn key_string(key: [u64; 2]) -> String {
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&key[0].to_le_bytes());
    raw[8..].copy_from_slice(&key[1].to_le_bytes());
    let len = raw[15] as usize;
    String::from_utf8(raw[..len].to_vec()).expect("keys are built from str")
}

#[inline]
fn prefetch(slot: &Slot) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is a hint; it never faults and reads nothing, and the
    // pointer comes from a live reference.
    #[allow(unused_unsafe)]
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
            (slot as *const Slot).cast::<i8>(),
        );
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = slot;
}

impl WordTable {
    /// A table holding up to `capacity / 2` distinct short words;
    /// `capacity` is rounded up to a power of two.
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(2).next_power_of_two();
        WordTable {
            slots: vec![Slot::default(); capacity],
            len: 0,
            long: FxHashMap::default(),
            batch: [Pending::default(); BATCH_WORDS_MAX],
            batch_len: 0,
        }
    }

    /// Distinct words held (after `flush_batch`).
    pub fn distinct(&self) -> usize {
        self.len + self.long.len()
    }

    /// Whether the table should be drained before more words are added: it
    /// could not take another full batch while staying half empty.
    pub fn is_full(&self) -> bool {
        self.len + BATCH_WORDS_MAX > self.slots.len() / 2
    }

    /// Counts one occurrence of `word` (possibly deferred to the next
    /// `flush_batch`).
    #[inline]
    pub fn add(&mut self, word: &str) {
        match short_key(word) {
            Some(key) => {
                let hash = key_hash(key);
                prefetch(&self.slots[hash as usize & (self.slots.len() - 1)]);
                self.batch[self.batch_len] = Pending { key, hash };
                self.batch_len += 1;
                if self.batch_len == BATCH_WORDS_MAX {
                    self.flush_batch();
                }
            }
            None => match self.long.get_mut(word) {
                Some(count) => *count += 1,
                None => {
                    self.long.insert(word.to_owned(), 1);
                }
            },
        }
    }

    /// Probes the slots of the gathered words (already prefetched).
    pub fn flush_batch(&mut self) {
        while self.len + self.batch_len > self.slots.len() / 2 {
            // A line with more new words than the owner's `is_full` check
            // allowed for: grow rather than break the half-empty invariant.
            self.grow();
        }
        let mask = self.slots.len() - 1;
        for i in 0..self.batch_len {
            let Pending { key, hash } = self.batch[i];
            let mut index = hash as usize & mask;
            loop {
                let slot = &mut self.slots[index];
                if slot.key == key {
                    slot.count += 1;
                    break;
                }
                if slot.key == [0, 0] {
                    *slot = Slot { key, count: 1 };
                    self.len += 1;
                    assert!(
                        self.len <= self.slots.len() / 2,
                        "word table over half full"
                    );
                    break;
                }
                index = (index + 1) & mask;
            }
        }
        self.batch_len = 0;
    }

    fn grow(&mut self) {
        let doubled = vec![Slot::default(); self.slots.len() * 2];
        let old = std::mem::replace(&mut self.slots, doubled);
        let mask = self.slots.len() - 1;
        for slot in old.into_iter().filter(|s| s.key != [0, 0]) {
            let mut index = key_hash(slot.key) as usize & mask;
            while self.slots[index].key != [0, 0] {
                index = (index + 1) & mask;
            }
            self.slots[index] = slot;
        }
    }

    /// Every word with its count; leaves the table empty.
    pub fn drain(&mut self, mut f: impl FnMut(String, u64)) {
        self.flush_batch();
        if self.len > 0 {
            for slot in &mut self.slots {
                if slot.key != [0, 0] {
                    f(key_string(slot.key), slot.count);
                    *slot = Slot::default();
                }
            }
            self.len = 0;
        }
        for (word, count) in self.long.drain() {
            f(word, count);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn counts_like_a_hash_map_across_batches_and_drains() {
        let mut table = WordTable::with_capacity(256);
        let mut model: HashMap<String, u64> = HashMap::new();
        let mut drained: HashMap<String, u64> = HashMap::new();
        let long = "a-word-longer-than-fifteen-bytes";
        for i in 0..5000u64 {
            let word = match i % 7 {
                0 => long.to_string(),
                1 => "é".repeat((i % 9) as usize + 1),
                _ => format!("w{}", (i * 31) % 97),
            };
            table.add(&word);
            *model.entry(word).or_insert(0) += 1;
            if table.is_full() {
                table.drain(|w, c| *drained.entry(w).or_insert(0) += c);
            }
        }
        table.drain(|w, c| *drained.entry(w).or_insert(0) += c);
        assert_eq!(drained, model);
        assert_eq!(table.distinct(), 0);
    }

    #[test]
    fn short_keys_hold_the_bytes_and_the_length() {
        for word in [
            "a",
            "ab",
            "abc",
            "abcd",
            "abcde",
            "abcdefg",
            "abcdefgh",
            "abcdefghi",
            "abcdefghijklmno",
        ] {
            let key = short_key(word).expect("short");
            assert_eq!(key_string(key), word);
        }
        assert_eq!(short_key(""), None);
        assert_eq!(short_key("abcdefghijklmnop"), None);
        assert_ne!(short_key("ab"), short_key("ab\0"));
    }

    #[test]
    fn grows_when_a_batch_would_overfill_it() {
        let mut table = WordTable::with_capacity(8);
        for i in 0..1000 {
            table.add(&format!("k{i}"));
        }
        let mut n = 0;
        table.drain(|_, c| n += c);
        assert_eq!(n, 1000);
    }
}
