//! The storage of a [`CappedSet`](super::CappedSet) of four-byte items
//! (ports with their protocol, interned owners): up to three inline in 16
//! bytes, the size of a heap pointer and a tag, where a `SmallVec` takes 24
//! for the same three. A million records keep two such lists each.
use std::fmt;

/// How many items are inline: one to three.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Len {
    One = 1,
    Two,
    Three,
}

/// Up to three items inline, more on the heap; sorted by the set.
#[derive(Clone, PartialEq, Eq)]
pub struct Compact<T: Copy>(Repr<T>);

// Derived, `Default` would ask the same of `T`.
impl<T: Copy> Default for Compact<T> {
    fn default() -> Self {
        Self(Repr::Empty)
    }
}

#[derive(Clone, PartialEq, Eq)]
enum Repr<T: Copy> {
    Empty,
    /// The slots past `Len` hold copies of the first item: every slot is
    /// a valid `T`, so nothing here needs `unsafe`.
    Inline(Len, [T; 3]),
    // One pointer, where a Vec is three words: the variant must fit in
    // the 16 bytes the inline one takes.
    #[allow(clippy::box_collection)]
    Heap(Box<Vec<T>>),
}

impl<T: Copy + fmt::Debug> fmt::Debug for Compact<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.as_slice()).finish()
    }
}

impl<T: Copy> Compact<T> {
    pub fn as_slice(&self) -> &[T] {
        match &self.0 {
            Repr::Empty => &[],
            Repr::Inline(len, items) => &items[..*len as usize],
            Repr::Heap(items) => items,
        }
    }

    /// Inserts `value` at `at` (at most the length).
    pub fn insert(&mut self, at: usize, value: T) {
        self.0 = match std::mem::replace(&mut self.0, Repr::Empty) {
            Repr::Empty => Repr::Inline(Len::One, [value; 3]),
            Repr::Inline(len, mut items) if len != Len::Three => {
                let len = len as usize;
                items.copy_within(at..len, at + 1);
                items[at] = value;
                Repr::Inline(if len == 1 { Len::Two } else { Len::Three }, items)
            }
            Repr::Inline(_, items) => {
                let mut heap = Vec::with_capacity(4);
                heap.extend_from_slice(&items);
                heap.insert(at, value);
                Repr::Heap(Box::new(heap))
            }
            Repr::Heap(mut items) => {
                items.insert(at, value);
                Repr::Heap(items)
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixteen_bytes_and_ordered_inserts() {
        assert_eq!(size_of::<Compact<u32>>(), 16);
        let mut set = Compact::default();
        for (at, value) in [(0, 5u32), (0, 1), (1, 3), (3, 9), (2, 4)] {
            set.insert(at, value);
        }
        assert_eq!(set.as_slice(), [1, 3, 4, 5, 9]);
        assert!(matches!(set.0, Repr::Heap(_)));
        let mut small = Compact::default();
        small.insert(0, 2u32);
        small.insert(0, 1);
        assert_eq!(small.as_slice(), [1, 2]);
        assert_eq!(small.clone(), small);
    }
}
