//! An output queue of one console source (Basalt's log, or one domain),
//! waiting for the serial line.
//!
//! Bytes arrive in *units*: a line, a multi-line report, or a piece of raw
//! output of the domain that has the console, each with a sequence number
//! the caller takes from one counter shared by all sources. The drainer
//! takes bytes oldest first, may switch to another source only at the end of
//! a unit ([`OutRing::at_boundary`]), and then goes on with the source whose
//! next unit has the lowest sequence number ([`OutRing::next_seq`]): output
//! leaves in the order it was produced, and a unit is never interleaved
//! with another source's output. The queue never grows: a unit that does not fit is
//! either refused whole and counted ([`OutRing::push_unit`]: output nobody
//! waits for) or taken in part, the writer keeping the rest
//! ([`OutRing::push_partial`]: back-pressure on the domain with the
//! console). Each `\n` is queued as `\r\n`, the line end a terminal on the
//! serial line expects, so the drainer copies bytes as they are.

use crate::ring::Ring;

/// Unit ends remembered; when more units wait, the newest ones merge into
/// one (still never interleaved, only a longer stretch for this source).
const UNITS: usize = 128;

/// Bytes of one line the drainer sends before it lets another source in
/// even though the line has not ended (see [`OutRing::in_line`]).
pub const LINE_HOLD: usize = 512;

/// Counters of one output queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OutStats {
    /// Bytes accepted, ever.
    pub queued: u64,
    /// Bytes refused because the queue was full (whole units).
    pub dropped_bytes: u64,
    /// Units (lines) refused because the queue was full.
    pub dropped_units: u64,
    /// Bytes waiting for the line now.
    pub pending: usize,
}

/// The bytes of one source waiting for the serial line, `N` at most.
#[derive(Debug, Clone)]
pub struct OutRing<const N: usize> {
    ring: Ring<N>,
    /// Waiting units, oldest first, as a ring of `UNITS`: the absolute
    /// position (bytes accepted before it) where each ends, and its
    /// sequence number.
    ends: [(u64, u64); UNITS],
    ends_head: usize,
    ends_len: usize,
    dropped_bytes: u64,
    dropped_units: u64,
    /// Whether part of a unit was drained and the rest waits.
    mid_unit: bool,
    /// Bytes drained since the last line end.
    since_newline: usize,
}

impl<const N: usize> Default for OutRing<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> OutRing<N> {
    /// An empty queue.
    pub const fn new() -> Self {
        Self {
            ring: Ring::new(),
            ends: [(0, 0); UNITS],
            ends_head: 0,
            ends_len: 0,
            dropped_bytes: 0,
            dropped_units: 0,
            mid_unit: false,
            since_newline: 0,
        }
    }

    /// Bytes that fit now.
    pub fn free(&self) -> usize {
        N - self.ring.len()
    }

    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// The counters.
    pub fn stats(&self) -> OutStats {
        OutStats {
            queued: self.ring.written(),
            dropped_bytes: self.dropped_bytes,
            dropped_units: self.dropped_units,
            pending: self.ring.len(),
        }
    }

    /// Absolute position of the next byte to drain.
    fn read_pos(&self) -> u64 {
        self.ring.written() - self.ring.len() as u64
    }

    fn note_end(&mut self, seq: u64) {
        let end = self.ring.written();
        if self.ends_len == UNITS {
            // Merge with the newest waiting unit (which keeps its number).
            let last = (self.ends_head + UNITS - 1) % UNITS;
            self.ends[last].0 = end;
        } else {
            self.ends[(self.ends_head + self.ends_len) % UNITS] = (end, seq);
            self.ends_len += 1;
        }
    }

    /// Forgets the units drained completely.
    fn drop_passed(&mut self) {
        let pos = self.read_pos();
        while self.ends_len > 0 && self.ends[self.ends_head].0 <= pos {
            self.ends_head = (self.ends_head + 1) % UNITS;
            self.ends_len -= 1;
        }
    }

    /// The sequence number of the unit the next byte belongs to (`None`:
    /// nothing waits).
    pub fn next_seq(&mut self) -> Option<u64> {
        self.drop_passed();
        if self.is_empty() || self.ends_len == 0 {
            return None;
        }
        Some(self.ends[self.ends_head].1)
    }

    /// Queues `unit` (sequence number `seq`) whole, or, when it does not
    /// fit, refuses it whole and counts it. Returns whether it was queued.
    /// An empty unit is a no-op.
    pub fn push_unit(&mut self, unit: &[u8], seq: u64) -> bool {
        if unit.is_empty() {
            return true;
        }
        if expanded_len(unit) > self.free() {
            self.dropped_bytes += unit.len() as u64;
            self.dropped_units += 1;
            return false;
        }
        self.write_expanded(unit);
        self.note_end(seq);
        true
    }

    /// Queues `unit` whole if it fits; else leaves it to the caller (not
    /// counted) and returns false.
    pub fn push_unit_or_keep(&mut self, unit: &[u8], seq: u64) -> bool {
        if expanded_len(unit) > self.free() {
            return false;
        }
        self.push_unit(unit, seq)
    }

    /// Queues as much of `bytes` as fits, as one unit numbered `seq`;
    /// returns how many were taken (the writer keeps the rest:
    /// back-pressure, nothing lost).
    pub fn push_partial(&mut self, bytes: &[u8], seq: u64) -> usize {
        let mut free = self.free();
        let mut n = 0;
        for &b in bytes {
            let need = if b == b'\n' { 2 } else { 1 };
            if need > free {
                break;
            }
            free -= need;
            n += 1;
        }
        if n > 0 {
            self.write_expanded(&bytes[..n]);
            self.note_end(seq);
        }
        n
    }

    /// Writes `bytes` with each `\n` as `\r\n` (the caller checked room).
    fn write_expanded(&mut self, bytes: &[u8]) {
        for line in bytes.split_inclusive(|b| *b == b'\n') {
            match line.split_last() {
                Some((b'\n', text)) => {
                    self.ring.write(text);
                    self.ring.write(b"\r\n");
                }
                _ => self.ring.write(line),
            }
        }
    }

    /// Whether the drainer may switch to another source now: no unit has
    /// been drained in part.
    pub fn at_boundary(&self) -> bool {
        !self.mid_unit
    }

    /// Whether the drainer should stay with this source although its unit
    /// ended: a line it started is not finished yet and its rest already
    /// waits (raw output of the domain with the console comes in pieces).
    /// Bounded by [`LINE_HOLD`] bytes, so a source that never ends its
    /// lines cannot keep the others out.
    pub fn in_line(&self) -> bool {
        !self.is_empty() && self.since_newline > 0 && self.since_newline < LINE_HOLD
    }

    /// Moves waiting bytes into `out` for the serial line, oldest first,
    /// stopping at the end of the current unit so the caller can switch
    /// sources there. Returns the bytes placed in `out`.
    pub fn pull(&mut self, out: &mut [u8]) -> usize {
        // Drop unit ends already passed, so the next end is ahead of us.
        self.drop_passed();
        let pos = self.read_pos();
        let limit = if self.ends_len > 0 {
            (self.ends[self.ends_head].0 - pos) as usize
        } else {
            self.ring.len()
        };
        let want = out.len().min(limit);
        let n = self.ring.read(&mut out[..want]);
        if n > 0 {
            self.mid_unit = n < limit;
            match out[..n].iter().rposition(|b| *b == b'\n') {
                Some(i) => self.since_newline = n - i - 1,
                None => self.since_newline += n,
            }
        }
        n
    }
}

/// Bytes `bytes` take in a queue, each `\n` as `\r\n`.
fn expanded_len(bytes: &[u8]) -> usize {
    bytes.len() + bytes.iter().filter(|b| **b == b'\n').count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain<const N: usize>(r: &mut OutRing<N>, chunk: usize) -> Vec<u8> {
        let mut all = Vec::new();
        let mut buf = vec![0; chunk];
        loop {
            let n = r.pull(&mut buf);
            if n == 0 {
                break;
            }
            all.extend_from_slice(&buf[..n]);
        }
        all
    }

    fn expand(bytes: &[u8]) -> Vec<u8> {
        bytes
            .iter()
            .flat_map(|&b| {
                if b == b'\n' {
                    vec![b'\r', b'\n']
                } else {
                    vec![b]
                }
            })
            .collect()
    }

    #[test]
    fn a_line_end_needs_room_for_both_bytes() {
        let mut r: OutRing<4> = OutRing::new();
        assert_eq!(r.push_partial(b"abc\n", 1), 3, "\\r\\n does not fit in 1");
        assert!(!r.push_unit(b"\n", 2));
        let mut out = [0; 2];
        assert_eq!(r.pull(&mut out), 2);
        assert_eq!(r.push_partial(b"\nxy", 3), 2);
        assert_eq!(drain(&mut r, 8), b"c\r\nx");
    }

    #[test]
    fn a_started_line_holds_the_drainer_while_its_rest_waits() {
        let mut r: OutRing<2048> = OutRing::new();
        r.push_partial(b"prompt", 1);
        r.push_partial(b"> more", 2);
        let mut out = [0; 6];
        assert_eq!(r.pull(&mut out), 6);
        assert!(r.at_boundary());
        assert!(r.in_line(), "the line goes on in the next unit");
        assert_eq!(r.pull(&mut out), 6);
        assert!(!r.in_line(), "nothing waits");
        r.push_partial(b"\nnext", 3);
        let mut big = [0; 16];
        r.pull(&mut big);
        assert!(!r.in_line());
        // A line that never ends lets others in after LINE_HOLD bytes.
        r.push_partial(&[b'x'; LINE_HOLD + 100], 4);
        let mut chunk = [0; 64];
        let mut drained = 0;
        while r.in_line() || drained == 0 {
            drained += r.pull(&mut chunk);
        }
        assert!(
            (LINE_HOLD - 64..=LINE_HOLD + 64).contains(&drained),
            "{drained}"
        );
    }

    #[test]
    fn units_that_do_not_fit_are_refused_whole_and_counted() {
        let mut r: OutRing<16> = OutRing::new();
        assert!(r.push_unit(b"(d1) hello\n", 1));
        assert!(!r.push_unit(b"(d1) world\n", 2));
        let s = r.stats();
        assert_eq!((s.dropped_units, s.dropped_bytes, s.pending), (1, 11, 12));
        assert_eq!(drain(&mut r, 4), b"(d1) hello\r\n");
        assert!(r.push_unit(b"(d1) world\n", 2));
        assert_eq!(r.stats().queued, 24);
    }

    #[test]
    fn partial_pushes_take_what_fits() {
        let mut r: OutRing<8> = OutRing::new();
        assert_eq!(r.push_partial(b"0123456789", 1), 8);
        assert_eq!(r.push_partial(b"x", 2), 0);
        assert_eq!(r.free(), 0);
        let mut out = [0; 3];
        assert_eq!(r.pull(&mut out), 3);
        assert_eq!(r.push_partial(b"89ab", 3), 3);
        assert_eq!(drain(&mut r, 16), b"3456789a");
        assert_eq!(r.stats().dropped_bytes, 0);
    }

    #[test]
    fn pull_stops_at_unit_ends_and_never_splits_crlf() {
        let mut r: OutRing<64> = OutRing::new();
        r.push_unit(b"ab\n", 1);
        r.push_unit(b"cd\n", 2);
        assert!(r.at_boundary());
        assert_eq!(r.next_seq(), Some(1));
        let mut out = [0; 3];
        assert_eq!(r.pull(&mut out), 3);
        assert_eq!(&out, b"ab\r");
        assert!(!r.at_boundary());
        assert_eq!(r.pull(&mut out), 1, "stops at the first unit's end");
        assert_eq!(out[0], b'\n');
        assert!(r.at_boundary(), "the first unit ended");
        assert_eq!(r.next_seq(), Some(2));
        let mut big = [0; 32];
        assert_eq!(r.pull(&mut big), 4, "the second unit");
        assert!(r.at_boundary());
        assert!(r.is_empty());
        assert_eq!(r.next_seq(), None);
    }

    #[test]
    fn many_units_merge_but_keep_order() {
        let mut r: OutRing<4096> = OutRing::new();
        let mut expect = Vec::new();
        for i in 0..200u32 {
            let line = format!("line {i}\n");
            assert!(r.push_unit(line.as_bytes(), u64::from(i)));
            expect.extend_from_slice(line.replace('\n', "\r\n").as_bytes());
        }
        let mut got = Vec::new();
        let mut buf = [0; 16];
        let mut boundaries = 0;
        while !r.is_empty() {
            let n = r.pull(&mut buf);
            got.extend_from_slice(&buf[..n]);
            if r.at_boundary() {
                boundaries += 1;
                // A boundary is always right after a whole line.
                assert!(got.ends_with(b"\r\n"));
            }
        }
        assert_eq!(got, expect);
        assert!(boundaries >= UNITS - 1, "{boundaries}");
    }

    #[test]
    fn random_use_keeps_every_accepted_byte_in_order() {
        let mut r: OutRing<64> = OutRing::new();
        let mut model: std::collections::VecDeque<u8> = Default::default();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..20_000 {
            let x = next();
            match x % 3 {
                0 => {
                    let mut out = [0; 7];
                    let n = r.pull(&mut out);
                    for &b in &out[..n] {
                        assert_eq!(Some(b), model.pop_front());
                    }
                }
                1 => {
                    let len = (x >> 8) as usize % 20;
                    let unit: Vec<u8> = (0..len).map(|i| b"ab\ncd"[(i + len) % 5]).collect();
                    if r.push_unit(&unit, x) {
                        model.extend(expand(&unit));
                    }
                }
                _ => {
                    let len = (x >> 8) as usize % 20;
                    let bytes: Vec<u8> = (0..len).map(|i| b"x\nyz"[i % 4]).collect();
                    let n = r.push_partial(&bytes, x);
                    model.extend(expand(&bytes[..n]));
                }
            }
            assert_eq!(r.len(), model.len());
        }
    }
}
