//! A count of every item of a kind and the first few of them: what a whole-store report keeps of
//! its failures (a copy's, gc's, a repair's, fsck's corrupt and misplaced blobs).
//!
//! A report that listed every failure would grow with the store when something fails for every
//! blob (a full target, expired credentials, a replica refusing writes, an unreadable mount): some
//! 250 bytes each, 10 GB at 40 million blobs. A [`Sample`] counts them all and keeps the first
//! [`SAMPLE_LIMIT`]; the operations log each one (or hand it to the caller) as it happens, so none
//! is lost to whoever wants them all.

use serde::Serialize;

/// How many items a [`Sample`] keeps. Enough to show what went wrong and to act on a few failures
/// by hand; past that, the failures are one outage, the count says how large, and the log lists
/// them all. At some 250 bytes an item, a report keeps at most a quarter of a megabyte of each.
pub const SAMPLE_LIMIT: usize = 1000;

/// Every item counted, the first [`SAMPLE_LIMIT`] kept in the order they came: what a
/// whole-store report keeps of its failures, which would grow with the store if all were kept
/// (an outage fails every blob). The operations log each item, or hand it to the caller, as it
/// happens. Serialized as `{"total": <count>, "kept": [<item>…]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Sample<T> {
    total: u64,
    kept: Vec<T>,
    #[serde(skip)]
    limit: usize,
}

impl<T> Default for Sample<T> {
    fn default() -> Self {
        Sample::new()
    }
}

impl<T> Sample<T> {
    /// An empty sample that keeps [`SAMPLE_LIMIT`] items.
    pub fn new() -> Self {
        Sample::with_limit(SAMPLE_LIMIT)
    }

    /// An empty sample that keeps `limit` items (tests: a limit small enough to pass).
    pub(crate) fn with_limit(limit: usize) -> Self {
        Sample {
            total: 0,
            kept: Vec::new(),
            limit,
        }
    }

    /// Counts `item`, and keeps it if fewer than the limit are kept.
    pub fn push(&mut self, item: T) {
        self.total += 1;
        if self.kept.len() < self.limit {
            self.kept.push(item);
        }
    }

    /// Counts every item of `other` and keeps as many of its kept ones, after this sample's, as
    /// the limit leaves room for (a sample per part of an operation, merged into its report).
    pub fn merge(&mut self, other: Sample<T>) {
        self.total += other.total;
        let room = self.limit.saturating_sub(self.kept.len());
        self.kept.extend(other.kept.into_iter().take(room));
    }

    /// How many items were counted, kept or not.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// How many items were kept (at most the limit; [`total`](Self::total) counts them all).
    pub fn len(&self) -> usize {
        self.kept.len()
    }

    /// Whether no item was counted at all.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// How many items were counted but not kept.
    pub fn omitted(&self) -> u64 {
        self.total - self.kept.len() as u64
    }

    /// The kept items.
    pub fn kept(&self) -> &[T] {
        &self.kept
    }

    /// The kept items, in the order they came unless sorted since.
    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.kept.iter()
    }

    /// Sorts the kept items (for display: which ones were kept does not change).
    pub fn sort_by(&mut self, compare: impl FnMut(&T, &T) -> std::cmp::Ordering) {
        self.kept.sort_by(compare);
    }
}

impl<T: Ord> Sample<T> {
    /// Sorts the kept items (for display: which ones were kept does not change).
    pub fn sort(&mut self) {
        self.kept.sort();
    }
}

impl<T> Extend<T> for Sample<T> {
    /// Pushes each item (see [`Sample::push`]).
    fn extend<I: IntoIterator<Item = T>>(&mut self, items: I) {
        for item in items {
            self.push(item);
        }
    }
}

impl<'a, T> IntoIterator for &'a Sample<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;

    fn into_iter(self) -> Self::IntoIter {
        self.kept.iter()
    }
}

impl<T> IntoIterator for Sample<T> {
    type Item = T;
    type IntoIter = std::vec::IntoIter<T>;

    fn into_iter(self) -> Self::IntoIter {
        self.kept.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Past the limit every item is counted and only the first ones are kept, in order.
    #[test]
    fn counts_every_item_and_keeps_the_first_in_order() {
        let mut s = Sample::with_limit(3);
        assert!(s.is_empty());
        for i in 0..10 {
            s.push(i);
        }
        assert_eq!(s.total(), 10);
        assert_eq!(s.len(), 3);
        assert_eq!(s.omitted(), 7);
        assert!(!s.is_empty());
        assert_eq!(s.kept(), &[0, 1, 2]);
        assert_eq!(s.iter().copied().collect::<Vec<_>>(), vec![0, 1, 2]);
        let json = serde_json::to_value(&s).expect("json");
        assert_eq!(json, serde_json::json!({"total": 10, "kept": [0, 1, 2]}));
    }

    /// A merge counts everything and fills the room left, this sample's items first.
    #[test]
    fn a_merge_counts_all_and_keeps_up_to_the_limit() {
        let mut a = Sample::with_limit(4);
        a.push("a1");
        a.push("a2");
        let mut b = Sample::with_limit(4);
        for x in ["b1", "b2", "b3"] {
            b.push(x);
        }
        a.merge(b);
        assert_eq!((a.total(), a.kept()), (5, &["a1", "a2", "b1", "b2"][..]));
        let mut full = Sample::with_limit(1);
        full.push("x");
        full.merge(a);
        assert_eq!((full.total(), full.kept()), (6, &["x"][..]));
        assert_eq!(Sample::<u8>::new().limit, SAMPLE_LIMIT);
    }
}
