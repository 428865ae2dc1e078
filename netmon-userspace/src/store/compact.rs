//! The per-peer lists: [`CappedSet`], and its storage, eight bytes holding
//! up to three small codes inline or else a pointer to a vector of them.
//!
//! A million records keep four such lists each, and most lists hold one to
//! three items (a port or two, a process, an owner), each of which fits in
//! 20 bits: a port with its protocol, an interned owner or process name.
//! A `SmallVec` or an enum beside a heap pointer takes 16 to 24 bytes for
//! the same.
use std::{cmp::Ordering, fmt, marker::PhantomData, ptr};

/// Up to three 20-bit codes inline, more (or a larger one) on the heap.
///
/// The word is a pointer: null for an empty list; one whose two low bits
/// give a length of one to three is no address but the codes, at bits 2,
/// 22 and 42; otherwise (an 8-aligned address) it is a `Box<Vec<u32>>`'s,
/// owned by this value.
pub struct Packed(*mut Vec<u32>);

/// Bits of each inline code.
const BITS: u32 = 20;
/// The low bits holding the inline length.
const LEN: usize = 0b11;

// SAFETY: a `Packed` owns its vector alone, as a `Box<Vec<u32>>` would,
// and a `Vec<u32>` may be sent and shared between threads.
unsafe impl Send for Packed {}
// SAFETY: as above; `&Packed` only ever reads the vector.
unsafe impl Sync for Packed {}

impl Default for Packed {
    fn default() -> Self {
        Self(ptr::null_mut())
    }
}

/// The codes of a list, wherever they are.
pub enum Codes<'a> {
    Inline(u64, usize),
    Heap(&'a [u32]),
}

impl Packed {
    pub fn codes(&self) -> Codes<'_> {
        let bits = self.0.addr();
        match bits & LEN {
            0 if bits == 0 => Codes::Inline(0, 0),
            // SAFETY: a non-null pointer without a length came from
            // `Box::into_raw` in `set` and is freed only by `drop`.
            0 => Codes::Heap(unsafe { &*self.0 }),
            len => Codes::Inline(bits as u64, len),
        }
    }

    pub fn len(&self) -> usize {
        match self.codes() {
            Codes::Inline(_, len) => len,
            Codes::Heap(codes) => codes.len(),
        }
    }

    pub fn get(&self, at: usize) -> u32 {
        match self.codes() {
            Codes::Inline(bits, _) => inline_code(bits, at),
            Codes::Heap(codes) => codes[at],
        }
    }

    /// Inserts `code` at `at` (at most the length).
    pub fn insert(&mut self, at: usize, code: u32) {
        match self.codes() {
            Codes::Inline(bits, len) => {
                let mut codes = [0; 4];
                for (index, slot) in codes[..len].iter_mut().enumerate() {
                    *slot = inline_code(bits, index);
                }
                codes.copy_within(at..len, at + 1);
                codes[at] = code;
                self.set(&codes[..=len]);
            }
            // SAFETY: as in `codes`, and `&mut self` is the only access.
            Codes::Heap(_) => unsafe { (*self.0).insert(at, code) },
        }
    }

    /// Holds `codes` (the list was inline): inline if they fit.
    fn set(&mut self, codes: &[u32]) {
        let fits = codes.len() <= 3 && codes.iter().all(|&code| code < 1 << BITS);
        if fits {
            let mut bits = codes.len();
            for (index, &code) in codes.iter().enumerate() {
                bits |= (code as usize) << (2 + BITS as usize * index);
            }
            self.0 = ptr::without_provenance_mut(bits);
        } else {
            let mut heap = Vec::with_capacity(codes.len().next_power_of_two().max(4));
            heap.extend_from_slice(codes);
            self.0 = Box::into_raw(Box::new(heap));
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.len()).map(|at| self.get(at))
    }
}

fn inline_code(bits: u64, at: usize) -> u32 {
    ((bits >> (2 + BITS as usize * at)) & ((1 << BITS) - 1)) as u32
}

impl Drop for Packed {
    fn drop(&mut self) {
        if let Codes::Heap(_) = self.codes() {
            // SAFETY: the pointer came from `Box::into_raw` and is dropped
            // once, here.
            drop(unsafe { Box::from_raw(self.0) });
        }
    }
}

impl Clone for Packed {
    fn clone(&self) -> Self {
        let mut copy = Self::default();
        match self.codes() {
            Codes::Inline(..) => copy.0 = ptr::without_provenance_mut(self.0.addr()),
            Codes::Heap(codes) => copy.0 = Box::into_raw(Box::new(codes.to_vec())),
        }
        copy
    }
}

impl PartialEq for Packed {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

impl Eq for Packed {}

/// Entries kept in each per-peer list (ports, processes).
pub const LIST_CAP: usize = 64;

/// A small set that stops growing at [`LIST_CAP`] entries, kept sorted.
///
/// Eight bytes: most peers have one or two ports, one process and one
/// owner or none, and each is a number of at most 20 bits, so up to three
/// stay inline in the record (see `Packed`); a million records cost a
/// million records and not millions of heap allocations on top.
pub struct CappedSet<T: InlineItem>(Packed, PhantomData<fn() -> T>);

/// An item a [`CappedSet`] keeps, as a number: small (under 2^20) for the
/// ones most lists hold, so that three fit in the set's eight bytes.
pub trait InlineItem: Copy + Ord {
    /// `None` when the item cannot be kept (a name past its table's
    /// bound).
    fn code(self) -> Option<u32>;
    /// The item of a code [`Self::code`] gave.
    fn from_code(code: u32) -> Self;
}

impl<T: InlineItem> Default for CappedSet<T> {
    fn default() -> Self {
        Self(Packed::default(), PhantomData)
    }
}

impl<T: InlineItem> Clone for CappedSet<T> {
    fn clone(&self) -> Self {
        Self(self.0.clone(), PhantomData)
    }
}

impl<T: InlineItem> PartialEq for CappedSet<T> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl<T: InlineItem> Eq for CappedSet<T> {}

impl<T: InlineItem + fmt::Debug> fmt::Debug for CappedSet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T: InlineItem> CappedSet<T> {
    /// Adds `value` unless present or full; allocation happens only when a
    /// fourth value is kept. The value gets its code (a name its number in
    /// the process's table) only once it is to be kept: a record offering
    /// more names than it keeps must not fill the table for every other.
    pub fn insert(&mut self, value: T) {
        let (mut low, mut high) = (0, self.0.len());
        while low < high {
            let middle = (low + high) / 2;
            match T::from_code(self.0.get(middle)).cmp(&value) {
                Ordering::Less => low = middle + 1,
                Ordering::Equal => return,
                Ordering::Greater => high = middle,
            }
        }
        if self.0.len() < LIST_CAP
            && let Some(code) = value.code()
        {
            self.0.insert(low, code);
        }
    }

    /// The items, in order.
    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        self.0.iter().map(T::from_code)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.len() == 0
    }
}

impl<T: InlineItem> FromIterator<T> for CappedSet<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut set = Self::default();
        for value in iter {
            set.insert(value);
        }
        set
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{peer::Comm, store::PeerRecord};

    #[test]
    fn lists_are_capped() {
        let ports: CappedSet<u16> = (0..1000).rev().collect();
        assert!(ports.iter().eq(936..1000));
    }

    #[test]
    fn a_record_is_four_counts_and_four_words() {
        assert_eq!(size_of::<CappedSet<Comm>>(), 8);
        assert_eq!(size_of::<PeerRecord>(), 64);
    }

    #[test]
    fn eight_bytes_and_ordered_inserts() {
        assert_eq!(size_of::<Packed>(), 8);
        let mut set = Packed::default();
        assert_eq!(set.len(), 0);
        for (at, code) in [(0, 5u32), (0, 1), (1, 3)] {
            set.insert(at, code);
        }
        assert!(matches!(set.codes(), Codes::Inline(_, 3)));
        assert_eq!(set.iter().collect::<Vec<_>>(), [1, 3, 5]);
        for (at, code) in [(3, 9u32), (2, 4)] {
            set.insert(at, code);
        }
        assert_eq!(set.iter().collect::<Vec<_>>(), [1, 3, 4, 5, 9]);
        assert!(matches!(set.codes(), Codes::Heap(_)));
        assert!(set.clone() == set);
        let mut big = Packed::default();
        big.insert(0, (1 << BITS) - 1);
        big.insert(0, 0);
        assert!(matches!(big.codes(), Codes::Inline(_, 2)));
        big.insert(2, 1 << BITS);
        assert!(matches!(big.codes(), Codes::Heap(_)));
        assert_eq!(
            big.iter().collect::<Vec<_>>(),
            [0, (1 << BITS) - 1, 1 << BITS]
        );
        assert!(big != set);
    }
}
