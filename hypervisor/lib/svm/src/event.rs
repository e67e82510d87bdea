//! Event injection and the event a #VMEXIT interrupted (APM Vol. 2 §15.20 "Event Injection",
//! §15.7.2 "Intercepts During IDT Interrupt Delivery"): the EVENTINJ and EXITINTINFO formats.
//!
//! | bits | field |
//! |---|---|
//! | 7:0 | vector |
//! | 10:8 | type: 0 external interrupt, 2 NMI, 3 exception, 4 software interrupt |
//! | 11 | EV: an error code is pushed |
//! | 31 | V: valid |
//! | 63:32 | error code |

/// An event, as the vendor-neutral layer names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// An external (maskable) interrupt.
    External(u8),
    /// A non-maskable interrupt.
    Nmi,
    /// A hardware exception with its error code (if it pushes one).
    Exception {
        /// The vector (0-31).
        vector: u8,
        /// The error code.
        error: Option<u32>,
    },
    /// A software interrupt (`INT n`, and on SVM `INT3`/`INTO`, which it reports as
    /// exceptions of type 3 but which restart after the instruction).
    Software(u8),
}

const TYPE_INTR: u64 = 0;
const TYPE_NMI: u64 = 2;
const TYPE_EXCEPTION: u64 = 3;
const TYPE_SOFT: u64 = 4;
const EV: u64 = 1 << 11;
const VALID: u64 = 1 << 31;

/// Whether hardware exception `vector` pushes an error code (#DF, #TS, #NP, #SS, #GP, #PF,
/// #AC, #CP).
pub fn has_error_code(vector: u8) -> bool {
    matches!(vector, 8 | 10..=14 | 17 | 21)
}

impl Event {
    /// The EVENTINJ encoding (valid bit set). An exception's error code is pushed only when
    /// the vector has one.
    pub fn encode(self) -> u64 {
        let (vector, kind, error) = match self {
            Self::External(v) => (v, TYPE_INTR, None),
            Self::Nmi => (2, TYPE_NMI, None),
            Self::Exception { vector, error } => (
                vector,
                TYPE_EXCEPTION,
                if has_error_code(vector) {
                    Some(error.unwrap_or(0))
                } else {
                    None
                },
            ),
            Self::Software(v) => (v, TYPE_SOFT, None),
        };
        let mut raw = u64::from(vector) | (kind << 8) | VALID;
        if let Some(e) = error {
            raw |= EV | (u64::from(e) << 32);
        }
        raw
    }

    /// Decodes EXITINTINFO: the event whose delivery the #VMEXIT interrupted, to be injected
    /// again. `None` when none was (V clear) or the type is reserved. Under QEMU's TCG an
    /// interrupted virtual interrupt comes back as type 3 with its vector (measured): a type-3
    /// event with a vector of 32 or more is taken for the external interrupt it was.
    pub fn decode(raw: u64) -> Option<Self> {
        if raw & VALID == 0 {
            return None;
        }
        let vector = raw as u8;
        let error = (raw & EV != 0).then_some((raw >> 32) as u32);
        match (raw >> 8) & 7 {
            TYPE_INTR => Some(Self::External(vector)),
            TYPE_NMI => Some(Self::Nmi),
            TYPE_EXCEPTION if vector >= 32 => Some(Self::External(vector)),
            TYPE_EXCEPTION => Some(Self::Exception { vector, error }),
            TYPE_SOFT => Some(Self::Software(vector)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings() {
        assert_eq!(Event::External(0x31).encode(), 0x8000_0031);
        assert_eq!(Event::Nmi.encode(), 0x8000_0202);
        assert_eq!(
            Event::Exception {
                vector: 13,
                error: Some(0x18)
            }
            .encode(),
            0x0000_0018_8000_0b0d
        );
        // #UD pushes no error code, whatever the caller says.
        assert_eq!(
            Event::Exception {
                vector: 6,
                error: Some(5)
            }
            .encode(),
            0x8000_0306
        );
        // #PF without a code given pushes 0.
        assert_eq!(
            Event::Exception {
                vector: 14,
                error: None
            }
            .encode(),
            0x8000_0b0e
        );
        assert_eq!(Event::Software(0x80).encode(), 0x8000_0480);
    }

    #[test]
    fn exitintinfo_round_trips_and_tcg_quirk() {
        for e in [
            Event::External(0x40),
            Event::Nmi,
            Event::Exception {
                vector: 14,
                error: Some(2),
            },
            Event::Exception {
                vector: 3,
                error: None,
            },
            Event::Software(0x21),
        ] {
            assert_eq!(Event::decode(e.encode()), Some(e));
        }
        assert_eq!(Event::decode(0x0000_0330), None, "not valid");
        // QEMU 7.2 TCG: V_IRQ 0x30 whose delivery faulted comes back as 0x80000330.
        assert_eq!(Event::decode(0x8000_0330), Some(Event::External(0x30)));
        // Reserved types.
        assert_eq!(Event::decode(0x8000_0130), None);
        assert_eq!(Event::decode(0x8000_0730), None);
    }
}
