//! A fixed-capacity list for code that runs before the heap exists.

use core::fmt;
use core::ops::Deref;

/// A list of at most `N` `Copy` items stored inline.
///
/// Pushing into a full list does not panic: [`FixedVec::push`] hands the item
/// back and the list counts it in [`FixedVec::dropped`], so callers can report
/// how much did not fit.
#[derive(Clone, Copy)]
pub struct FixedVec<T: Copy + Default, const N: usize> {
    items: [T; N],
    len: usize,
    dropped: usize,
}

impl<T: Copy + Default, const N: usize> FixedVec<T, N> {
    /// An empty list.
    pub fn new() -> Self {
        Self {
            items: [T::default(); N],
            len: 0,
            dropped: 0,
        }
    }

    /// Appends `item`, or returns it (and counts it as dropped) when full.
    pub fn push(&mut self, item: T) -> Result<(), T> {
        match self.items.get_mut(self.len) {
            Some(slot) => {
                *slot = item;
                self.len += 1;
                Ok(())
            }
            None => {
                self.dropped += 1;
                Err(item)
            }
        }
    }

    /// Inserts `item` at `index` (clamped to the length), shifting later items.
    /// When the list is full the last item falls off and is counted as dropped.
    pub fn insert(&mut self, index: usize, item: T) {
        let index = index.min(self.len);
        if index >= N {
            self.dropped += 1;
            return;
        }
        if self.len == N {
            self.dropped += 1;
        } else {
            self.len += 1;
        }
        self.items.copy_within(index..self.len - 1, index + 1);
        self.items[index] = item;
    }

    /// Removes the item at `index` (no-op when out of range).
    pub fn remove(&mut self, index: usize) {
        if index < self.len {
            self.items.copy_within(index + 1..self.len, index);
            self.len -= 1;
        }
    }

    /// Removes every item.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// The items, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.items[..self.len]
    }

    /// How many items did not fit.
    pub fn dropped(&self) -> usize {
        self.dropped
    }

    /// The capacity, `N`.
    pub const fn capacity(&self) -> usize {
        N
    }
}

impl<T: Copy + Default, const N: usize> Default for FixedVec<T, N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Copy + Default, const N: usize> Deref for FixedVec<T, N> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.items[..self.len]
    }
}

impl<T: Copy + Default + fmt::Debug, const N: usize> fmt::Debug for FixedVec<T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T: Copy + Default + PartialEq, const N: usize> PartialEq for FixedVec<T, N> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_until_full_then_count_drops() {
        let mut v: FixedVec<u32, 3> = FixedVec::new();
        for i in 0..5 {
            let _ = v.push(i);
        }
        assert_eq!(&*v, &[0, 1, 2]);
        assert_eq!(v.dropped(), 2);
    }

    #[test]
    fn insert_and_remove_keep_order() {
        let mut v: FixedVec<u32, 4> = FixedVec::new();
        v.insert(0, 3);
        v.insert(0, 1);
        v.insert(1, 2);
        assert_eq!(&*v, &[1, 2, 3]);
        v.insert(3, 4);
        v.insert(0, 0); // full: 4 falls off
        assert_eq!(&*v, &[0, 1, 2, 3]);
        assert_eq!(v.dropped(), 1);
        v.remove(1);
        assert_eq!(&*v, &[0, 2, 3]);
        v.remove(7);
        assert_eq!(&*v, &[0, 2, 3]);
    }
}
