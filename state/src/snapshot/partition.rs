//! Counting sort by key group, as Flink's `KeyGroupPartitioner`: a histogram of the key
//! groups, exclusive prefix sums giving each key group's first slot, then every item
//! moved to its key group's next free slot. O(n + key groups), stable neither within nor
//! across runs of equal key groups (order within a key group is unspecified).
//!
//! Unlike Flink, which scatters into a second array, the permutation is done in place
//! (the cycle walk of American flag sort), so partitioning a large snapshot does not
//! need twice its memory, and no `unsafe` is needed for uninitialized slots.

use crate::key_group::KeyGroupRange;

/// Items grouped by key group: the output of [`partition_by_key_group`], and an input of
/// the snapshot writer. `Send` when `T` is, so it can be handed to a writer thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyGroupPartition<T> {
    range: KeyGroupRange,
    items: Vec<T>,
    /// `offsets[i]..offsets[i + 1]` are the items of key group `range.start + i`;
    /// `range.len() + 1` entries.
    offsets: Vec<usize>,
}

impl<T> KeyGroupPartition<T> {
    /// The key groups of the partition.
    pub fn key_group_range(&self) -> KeyGroupRange {
        self.range
    }

    /// The number of items over all key groups.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether no key group holds an item.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The items of one key group. Panics if `key_group` is outside the range.
    pub fn key_group(&self, key_group: u32) -> &[T] {
        assert!(
            self.range.contains(key_group),
            "key group {key_group} is outside the partition's key group range {}",
            self.range
        );
        let i = (key_group - self.range.start) as usize;
        &self.items[self.offsets[i]..self.offsets[i + 1]]
    }

    /// The histogram: `(key_group, item count)` for every key group of the range,
    /// ascending.
    pub fn histogram(&self) -> impl ExactSizeIterator<Item = (u32, usize)> + '_ {
        let start = self.range.start;
        self.offsets
            .windows(2)
            .enumerate()
            .map(move |(i, w)| (start + i as u32, w[1] - w[0]))
    }

    /// `(key_group, items)` for every key group of the range, ascending.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (u32, &[T])> + '_ {
        let start = self.range.start;
        self.offsets
            .windows(2)
            .enumerate()
            .map(move |(i, w)| (start + i as u32, &self.items[w[0]..w[1]]))
    }

    /// All items, key groups ascending.
    pub fn items(&self) -> &[T] {
        &self.items
    }

    /// The items and the offsets (`range.len() + 1` of them: key group
    /// `range.start + i` holds `items[offsets[i]..offsets[i + 1]]`).
    pub fn into_parts(self) -> (Vec<T>, Vec<usize>) {
        (self.items, self.offsets)
    }
}

/// Groups `(key_group, item)` pairs by key group with a counting sort, in place.
///
/// Panics if a key group is outside `range`: the caller routes each record to the
/// subtask that owns its key group, so one outside is a partitioning bug.
pub fn partition_by_key_group<T>(
    range: KeyGroupRange,
    mut items: Vec<(u32, T)>,
) -> KeyGroupPartition<T> {
    let groups = range.len() as usize;
    // Histogram.
    let mut counts = vec![0usize; groups];
    for (key_group, _) in &items {
        assert!(
            range.contains(*key_group),
            "key group {key_group} is outside the key group range {range} being partitioned"
        );
        counts[(key_group - range.start) as usize] += 1;
    }
    // Exclusive prefix sums: the first slot of each key group.
    let mut offsets = Vec::with_capacity(groups + 1);
    let mut sum = 0;
    offsets.push(0);
    for count in &counts {
        sum += count;
        offsets.push(sum);
    }
    // Permute in place: `next[g]` is the first slot of group g not yet holding one of its
    // own items. The item at that slot either belongs there (advance) or is swapped into
    // the next free slot of its own group, which then holds its final item. Each swap
    // places one item for good, so there are fewer than n swaps.
    let mut next: Vec<usize> = offsets[..groups].to_vec();
    for group in 0..groups {
        let end = offsets[group + 1];
        while next[group] < end {
            let slot = next[group];
            let home = (items[slot].0 - range.start) as usize;
            if home == group {
                next[group] += 1;
            } else {
                items.swap(slot, next[home]);
                next[home] += 1;
            }
        }
    }
    let items = items.into_iter().map(|(_, item)| item).collect();
    KeyGroupPartition {
        range,
        items,
        offsets,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn partitions_a_small_input() {
        let range = KeyGroupRange::new(3, 6);
        let input = vec![(5, 'a'), (3, 'b'), (5, 'c'), (6, 'd'), (3, 'e')];
        let partition = partition_by_key_group(range, input);
        assert_eq!(
            partition.histogram().collect::<Vec<_>>(),
            [(3, 2), (4, 0), (5, 2), (6, 1)]
        );
        let mut three = partition.key_group(3).to_vec();
        three.sort();
        assert_eq!(three, ['b', 'e']);
        assert!(partition.key_group(4).is_empty());
        let mut five = partition.key_group(5).to_vec();
        five.sort();
        assert_eq!(five, ['a', 'c']);
        assert_eq!(partition.key_group(6), ['d']);
        assert_eq!(partition.len(), 5);
    }

    #[test]
    #[should_panic(expected = "key group 7 is outside the key group range [3, 6]")]
    fn rejects_a_key_group_outside_the_range() {
        partition_by_key_group(KeyGroupRange::new(3, 6), vec![(7, ())]);
    }

    proptest! {
        /// Against a model: each key group's items, as a multiset, are exactly the input
        /// items with that key group.
        #[test]
        fn matches_a_sort_model(
            (start, len, input) in (0u32..100, 1u32..40).prop_flat_map(|(start, len)| {
                let items = proptest::collection::vec((start..start + len, any::<u16>()), 0..300);
                (Just(start), Just(len), items)
            })
        ) {
            let range = KeyGroupRange::new(start, start + len - 1);
            let partition = partition_by_key_group(range, input.clone());
            prop_assert_eq!(partition.len(), input.len());
            prop_assert_eq!(partition.histogram().len(), len as usize);
            for (key_group, items) in partition.iter() {
                let mut got = items.to_vec();
                got.sort();
                let mut want: Vec<u16> = input
                    .iter()
                    .filter(|(kg, _)| *kg == key_group)
                    .map(|&(_, item)| item)
                    .collect();
                want.sort();
                prop_assert_eq!(got, want, "key group {}", key_group);
            }
        }
    }
}
