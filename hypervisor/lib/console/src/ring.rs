//! A bounded byte ring: the newest `N` bytes of a domain's console output.

/// The last `N` bytes written, with a count of the bytes that were
/// overwritten before anyone read them. Writing never blocks and never
/// fails: a chatty guest cannot stall Basalt or the operator.
#[derive(Debug, Clone)]
pub struct Ring<const N: usize> {
    buf: [u8; N],
    /// Index of the oldest unread byte.
    head: usize,
    /// Unread bytes.
    len: usize,
    /// Bytes overwritten unread, ever.
    dropped: u64,
    /// Bytes written, ever.
    written: u64,
}

impl<const N: usize> Default for Ring<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Ring<N> {
    /// An empty ring.
    pub const fn new() -> Self {
        Self {
            buf: [0; N],
            head: 0,
            len: 0,
            dropped: 0,
            written: 0,
        }
    }

    /// Appends `bytes`, overwriting the oldest unread ones when full.
    pub fn write(&mut self, bytes: &[u8]) {
        if N == 0 {
            self.dropped += bytes.len() as u64;
            self.written += bytes.len() as u64;
            return;
        }
        for &b in bytes {
            let tail = (self.head + self.len) % N;
            self.buf[tail] = b;
            if self.len == N {
                self.head = (self.head + 1) % N;
                self.dropped += 1;
            } else {
                self.len += 1;
            }
        }
        self.written += bytes.len() as u64;
    }

    /// Moves up to `out.len()` unread bytes into `out`, oldest first.
    pub fn read(&mut self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.len);
        for slot in out.iter_mut().take(n) {
            *slot = self.buf[self.head];
            self.head = (self.head + 1) % N.max(1);
        }
        self.len -= n;
        n
    }

    /// The unread byte `i` places after the oldest, without reading it.
    pub fn peek(&self, i: usize) -> Option<u8> {
        (i < self.len).then(|| self.buf[(self.head + i) % N])
    }

    /// Unread bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is unread.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes overwritten before they were read.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Bytes written in total.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// For a ring used as a history (written, never read): copies the kept
    /// bytes from stream position `pos` on (position n = the n-th byte ever
    /// written, from 0) into `out`, without reading them. A position older
    /// than what is kept starts at the oldest kept byte, one past the
    /// newest copies nothing. Returns where the copy started and how many
    /// bytes it copied; the next call passes `start + count`.
    pub fn copy_at(&self, pos: u64, out: &mut [u8]) -> (u64, usize) {
        let oldest = self.written - self.len as u64;
        let start = pos.clamp(oldest, self.written);
        let offset = (start - oldest) as usize;
        let count = out.len().min(self.len - offset);
        for (i, slot) in out.iter_mut().take(count).enumerate() {
            *slot = self.buf[(self.head + offset + i) % N.max(1)];
        }
        (start, count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_and_counts_drops() {
        let mut r: Ring<4> = Ring::new();
        r.write(b"abcdef");
        assert_eq!(r.len(), 4);
        assert_eq!(r.dropped(), 2);
        let mut out = [0; 8];
        assert_eq!(r.read(&mut out), 4);
        assert_eq!(&out[..4], b"cdef");
        assert!(r.is_empty());
        r.write(b"xy");
        assert_eq!(r.read(&mut out[..1]), 1);
        assert_eq!(out[0], b'x');
        assert_eq!(r.written(), 8);
    }

    #[test]
    fn copy_at_reads_a_history_by_position() {
        let mut r: Ring<8> = Ring::new();
        let mut out = [0u8; 16];
        assert_eq!(r.copy_at(0, &mut out), (0, 0));
        r.write(b"hello");
        assert_eq!(r.copy_at(0, &mut out), (0, 5));
        assert_eq!(&out[..5], b"hello");
        assert_eq!(r.copy_at(3, &mut out), (3, 2));
        assert_eq!(&out[..2], b"lo");
        // Beyond the newest: nothing, at the end.
        assert_eq!(r.copy_at(99, &mut out), (5, 0));
        r.write(b", world");
        // 12 written, 8 kept: positions 4..12.
        assert_eq!(r.copy_at(0, &mut out), (4, 8));
        assert_eq!(&out[..8], b"o, world");
        assert_eq!(r.copy_at(10, &mut out[..1]), (10, 1));
        assert_eq!(out[0], b'l');
        // Copying reads nothing.
        assert_eq!(r.len(), 8);
        let mut empty: Ring<0> = Ring::new();
        empty.write(b"abc");
        assert_eq!(empty.copy_at(0, &mut out), (3, 0));
    }

    #[test]
    fn zero_capacity_drops_everything() {
        let mut r: Ring<0> = Ring::new();
        r.write(b"abc");
        assert_eq!(r.dropped(), 3);
        assert_eq!(r.read(&mut [0; 2]), 0);
    }

    #[test]
    fn random_use_matches_a_model() {
        let mut r: Ring<16> = Ring::new();
        let mut model: std::collections::VecDeque<u8> = Default::default();
        let mut seed = 0x1234_5678u64;
        for _ in 0..10_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            if seed.is_multiple_of(3) {
                let mut out = [0; 5];
                let n = r.read(&mut out);
                let expect: Vec<u8> = (0..n).filter_map(|_| model.pop_front()).collect();
                assert_eq!(&out[..n], &expect[..]);
            } else {
                let bytes: Vec<u8> = (0..(seed % 7)).map(|i| (seed >> i) as u8).collect();
                r.write(&bytes);
                for b in bytes {
                    if model.len() == 16 {
                        model.pop_front();
                    }
                    model.push_back(b);
                }
            }
            assert_eq!(r.len(), model.len());
        }
    }
}
