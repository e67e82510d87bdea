//! Random bytes never panic the decoder; what decodes is consistent.

use super::*;
use crate::{DecodeError, MAX_LENGTH, emulate::Cpu, emulate::Mmio};

/// xorshift64*: deterministic, no dependency.
pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Bytes biased toward the ones the decoder knows, so that many strings decode.
const INTERESTING: &[u8] = &[
    0x66, 0x67, 0x26, 0x2e, 0x36, 0x3e, 0x64, 0x65, 0xf0, 0xf2, 0xf3, 0x40, 0x41, 0x44, 0x48, 0x4c,
    0x4f, 0x88, 0x89, 0x8a, 0x8b, 0xc6, 0xc7, 0x0f, 0xb6, 0xb7, 0xbe, 0xbf, 0xa0, 0xa1, 0xa2, 0xa3,
    0x84, 0x85, 0xf6, 0xf7, 0x80, 0x81, 0x83, 0x20, 0x21, 0x08, 0x09, 0x0b, 0x39, 0x04, 0x05, 0x24,
    0x25, 0x44, 0x84, 0x85, 0x45, 0x00, 0xff,
];

struct NullCpu([u64; 16], u64);
impl Cpu for NullCpu {
    fn reg(&self, n: u8) -> u64 {
        self.0[usize::from(n)]
    }
    fn set_reg(&mut self, n: u8, value: u64) {
        self.0[usize::from(n)] = value;
    }
    fn rflags(&self) -> u64 {
        self.1
    }
    fn set_rflags(&mut self, value: u64) {
        self.1 = value;
    }
}
struct NullMmio;
impl Mmio for NullMmio {
    fn read(&mut self, _: u64, _: u8) -> u64 {
        u64::MAX
    }
    fn write(&mut self, _: u64, _: u8, _: u64) {}
}

fn check(bytes: &[u8], mode: Mode, stats: &mut [u32; 8]) {
    match decode(bytes, mode) {
        Ok(insn) => {
            stats[0] += 1;
            let len = usize::from(insn.length);
            assert!(
                (1..=MAX_LENGTH).contains(&len) && len <= bytes.len(),
                "{bytes:02x?}"
            );
            assert!(matches!(insn.size, 1 | 2 | 4 | 8));
            assert!(matches!(insn.memory.address_size, 2 | 4 | 8));
            assert!(matches!(insn.memory.scale, 1 | 2 | 4 | 8));
            if let Some(r) = insn.destination.or(match insn.source {
                Some(Source::Register(r)) => Some(r),
                _ => None,
            }) {
                assert!(r.number < 16 && (!r.high_byte || (r.number < 4 && r.size == 1)));
            }
            // Re-decoding exactly the instruction's bytes gives the same instruction.
            assert_eq!(decode(&bytes[..len], mode), Ok(insn), "{bytes:02x?}");
            // One byte less is truncated.
            assert_eq!(decode(&bytes[..len - 1], mode), Err(DecodeError::Truncated));
            let mut cpu = NullCpu([u64::MAX; 16], 0);
            assert_eq!(
                crate::emulate(&insn, &mut cpu, &mut NullMmio, 0),
                len as u64
            );
        }
        Err(DecodeError::Truncated) => stats[1] += 1,
        Err(DecodeError::TooLong) => stats[2] += 1,
        Err(DecodeError::Unsupported { .. } | DecodeError::UnsupportedGroup { .. }) => {
            stats[3] += 1;
        }
        Err(DecodeError::RegisterOperand { .. }) => stats[4] += 1,
        Err(DecodeError::BadPrefix { .. }) => stats[5] += 1,
        Err(DecodeError::Repeat { .. }) => stats[6] += 1,
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut stats = [0u32; 8];
    let mut bytes = [0u8; 20];
    for i in 0..200_000 {
        let len = rng.below(21) as usize;
        let biased = i % 2 == 0;
        for b in &mut bytes[..len] {
            *b = if biased {
                INTERESTING[rng.below(INTERESTING.len() as u64) as usize]
            } else {
                rng.next() as u8
            };
        }
        for mode in [Mode::Long64, Mode::Protected32, Mode::Real16] {
            check(&bytes[..len], mode, &mut stats);
        }
    }
    // Each outcome is exercised (15-byte overruns are rare with 20 random bytes).
    for (i, n) in stats[..7].iter().enumerate() {
        assert!(*n > 0, "outcome {i} seen {n} times: {stats:?}");
    }
}

#[test]
fn prefix_soup_is_bounded() {
    // Up to 20 random prefixes in front of a valid instruction.
    let prefixes = [0x66, 0x67, 0x26, 0x2e, 0x36, 0x3e, 0x64, 0x65, 0x48, 0x41];
    let mut rng = Rng(7);
    for _ in 0..20_000 {
        let n = rng.below(21) as usize;
        let mut bytes: Vec<u8> = (0..n)
            .map(|_| prefixes[rng.below(prefixes.len() as u64) as usize])
            .collect();
        bytes.extend_from_slice(&[0x8b, 0x84, 0x24, 1, 2, 3, 4]); // mov disp32(%rsp),%eax
        for mode in [Mode::Long64, Mode::Protected32, Mode::Real16] {
            match decode(&bytes, mode) {
                Ok(insn) => assert!(usize::from(insn.length) <= MAX_LENGTH),
                Err(e) => assert!(
                    matches!(e, DecodeError::TooLong | DecodeError::Unsupported { .. }),
                    "{bytes:02x?} {mode:?}: {e:?}"
                ),
            }
        }
    }
}
