use super::*;

/// Redirection entry bit 12: delivery status (always 0 here).
const RTE_DELIVERY_STATUS: u64 = 1 << 12;
/// Redirection entry bit 13: active low.
const RTE_POLARITY: u64 = 1 << 13;
use crate::lapic::{Lapic, LapicConfig};

/// Programs redirection entry `pin` through IOREGSEL/IOWIN.
fn program(io: &mut IoApic, pin: u8, entry: u64) -> Option<IoApicInterrupt> {
    io.write(IOREGSEL, u32::from(REG_REDTBL + 2 * pin + 1));
    io.write(IOWIN, (entry >> 32) as u32);
    io.write(IOREGSEL, u32::from(REG_REDTBL + 2 * pin));
    io.write(IOWIN, entry as u32)
}

fn reg(io: &mut IoApic, index: u8) -> u32 {
    io.write(IOREGSEL, u32::from(index));
    io.read(IOWIN)
}

#[test]
fn identification_registers() {
    let mut io = IoApic::new(2);
    assert_eq!(reg(&mut io, REG_ID), 2 << 24);
    assert_eq!(reg(&mut io, REG_VERSION), 0x0017_0011);
    assert_eq!(reg(&mut io, REG_ARB), 2 << 24);
    assert_eq!(io.read(IOREGSEL), u32::from(REG_ARB));
    io.write(IOREGSEL, u32::from(REG_ID));
    io.write(IOWIN, 0xFFFF_FFFF);
    assert_eq!(io.read(IOWIN), 0x0F00_0000);
    // Read-only and absent registers.
    io.write(IOREGSEL, u32::from(REG_VERSION));
    io.write(IOWIN, 0);
    assert_eq!(io.read(IOWIN), VERSION);
    assert_eq!(reg(&mut io, 0x05), 0);
    assert_eq!(reg(&mut io, 0x40), 0);
    assert_eq!(io.read(0x20), 0);
}

#[test]
fn redirection_entries_reset_masked_and_keep_read_only_bits() {
    let mut io = IoApic::new(0);
    for pin in 0..PINS as u8 {
        assert_eq!(reg(&mut io, REG_REDTBL + 2 * pin), RTE_MASKED as u32);
        assert_eq!(reg(&mut io, REG_REDTBL + 2 * pin + 1), 0);
    }
    program(&mut io, 3, u64::MAX);
    let e = io.entry(3).expect("pin 3");
    assert_eq!(
        e & (RTE_REMOTE_IRR | RTE_DELIVERY_STATUS),
        0,
        "read-only bits stay clear"
    );
    assert_eq!(e, 0xFF00_0000_0001_AFFF);
}

#[test]
fn edge_pin_sends_on_rising_edge_only() {
    let mut io = IoApic::new(0);
    program(&mut io, 4, (1 << 56) | 0x34);
    let i = io.set_irq(4, true).expect("rising edge");
    assert_eq!(
        i,
        IoApicInterrupt {
            pin: 4,
            dest: 1,
            dest_mode: DestMode::Physical,
            vector: 0x34,
            delivery: Delivery::Fixed,
            trigger: Trigger::Edge
        }
    );
    assert_eq!(io.set_irq(4, true), None, "no edge");
    assert_eq!(io.set_irq(4, false), None);
    assert!(io.set_irq(4, true).is_some());
    assert_eq!(io.entry(4).expect("pin 4") & RTE_REMOTE_IRR, 0);
}

#[test]
fn masked_pins_send_nothing() {
    let mut io = IoApic::new(0);
    program(&mut io, 1, RTE_MASKED | 0x31);
    assert_eq!(io.set_irq(1, true), None);
    io.set_irq(1, false);
    // An edge while masked is lost on unmask.
    assert_eq!(program(&mut io, 1, 0x31), None);
    // A level pin asserted while masked sends when unmasked.
    program(&mut io, 2, RTE_MASKED | RTE_LEVEL | 0x32);
    assert_eq!(io.set_irq(2, true), None);
    let i = program(&mut io, 2, RTE_LEVEL | 0x32).expect("unmask sends");
    assert_eq!((i.vector, i.trigger), (0x32, Trigger::Level));
    assert_ne!(io.entry(2).expect("pin 2") & RTE_REMOTE_IRR, 0);
    assert_eq!(io.set_irq(99, true), None);
}

#[test]
fn level_remote_irr_cycle() {
    let mut io = IoApic::new(0);
    program(&mut io, 9, RTE_LEVEL | RTE_POLARITY | 0x49);
    let i = io.set_irq(9, true).expect("assert");
    assert_eq!(i.trigger, Trigger::Level);
    assert_ne!(reg(&mut io, REG_REDTBL + 18) & (RTE_REMOTE_IRR as u32), 0);
    // Still asserted, remote IRR set: nothing more.
    assert_eq!(io.set_irq(9, true), None);
    // EOI with the line still high re-fires.
    let again: Vec<_> = io.eoi(0x49).iter().collect();
    assert_eq!(again, vec![i]);
    assert_ne!(io.entry(9).expect("pin 9") & RTE_REMOTE_IRR, 0);
    // The device de-asserts; EOI clears remote IRR and sends nothing.
    assert_eq!(io.set_irq(9, false), None);
    assert!(io.eoi(0x49).is_empty());
    assert_eq!(io.entry(9).expect("pin 9") & RTE_REMOTE_IRR, 0);
    // An EOI for another vector changes nothing.
    io.set_irq(9, true);
    assert!(io.eoi(0x50).is_empty());
    assert_ne!(io.entry(9).expect("pin 9") & RTE_REMOTE_IRR, 0);
    // Switching the pin to edge clears remote IRR.
    program(&mut io, 9, 0x49);
    assert_eq!(io.entry(9).expect("pin 9") & RTE_REMOTE_IRR, 0);
}

#[test]
fn level_cycle_through_a_lapic() {
    let mut io = IoApic::new(0);
    let mut cpu = Lapic::new(LapicConfig::new(0, true));
    cpu.write(crate::lapic::REG_SVR, 0x1FF, 0);
    program(&mut io, 10, RTE_LEVEL | 0x5A);
    let msg = io.set_irq(10, true).expect("sent");
    assert!(msg.destinations(&[cpu.target()]).contains(0));
    cpu.receive(msg.delivery, msg.vector, msg.trigger);
    let v = cpu.highest_pending().expect("pending");
    cpu.acknowledge(v);
    let eoi = cpu.eoi().expect("in service");
    assert!(eoi.level_triggered);
    io.set_irq(10, false);
    assert!(io.eoi(eoi.vector).is_empty());
    assert_eq!(cpu.highest_pending(), None);
}

#[test]
fn delivery_modes_and_logical_destinations() {
    let mut io = IoApic::new(0);
    program(&mut io, 0, (0x0F << 56) | (1 << 11) | (1 << 8) | 0x60);
    let i = io.set_irq(0, true).expect("sent");
    assert_eq!(
        (i.dest, i.dest_mode, i.delivery),
        (0x0F, DestMode::Logical, Delivery::LowestPriority)
    );
    program(&mut io, 1, 4 << 8);
    assert_eq!(io.set_irq(1, true).map(|i| i.delivery), Some(Delivery::Nmi));
    program(&mut io, 2, 7 << 8);
    assert_eq!(
        io.set_irq(2, true).map(|i| i.delivery),
        Some(Delivery::ExtInt)
    );
    program(&mut io, 3, 3 << 8);
    assert_eq!(io.set_irq(3, true), None, "reserved delivery mode");
}

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

#[test]
fn random_operations_keep_the_invariants() {
    let mut rng = Rng(0xDEAD_BEEF_1234_5678);
    let mut io = IoApic::new(1);
    for _ in 0..100_000 {
        let r = rng.next();
        match r % 4 {
            0 => {
                io.write(
                    [IOREGSEL, IOWIN, 0x20][(r >> 8) as usize % 3],
                    (rng.next() >> ((r >> 32) % 32)) as u32,
                );
            }
            1 => {
                let _ = io.read([IOREGSEL, IOWIN][(r >> 8) as usize % 2]);
            }
            2 => {
                if let Some(i) = io.set_irq((r >> 8) as usize % 26, r & (1 << 40) != 0) {
                    assert!(!matches!(
                        i.delivery,
                        Delivery::Reserved | Delivery::StartUp
                    ));
                    let e = io.entry(usize::from(i.pin)).expect("pin");
                    assert_eq!(e & RTE_MASKED, 0);
                }
            }
            _ => {
                for i in io.eoi((r >> 8) as u8).iter() {
                    assert_eq!(i.trigger, Trigger::Level);
                    assert!(io.line(usize::from(i.pin)));
                }
            }
        }
        for pin in 0..PINS {
            let e = io.entry(pin).expect("pin");
            assert_eq!(e & RTE_DELIVERY_STATUS, 0);
            if e & RTE_LEVEL == 0 {
                assert_eq!(e & RTE_REMOTE_IRR, 0, "remote IRR only on level pins");
            }
            // An asserted, unmasked level pin is always waiting for an EOI.
            if e & RTE_LEVEL != 0 && e & RTE_MASKED == 0 && io.line(pin) {
                let d = Delivery::from_bits((e >> 8) as u32);
                if !matches!(d, Delivery::Reserved | Delivery::StartUp) {
                    assert_ne!(e & RTE_REMOTE_IRR, 0, "pin {pin}");
                }
            }
        }
    }
}

#[test]
fn msi_messages_decode_or_are_refused() {
    let m = IoApicInterrupt::from_msi(0xFEE0_3000, 0x4027).expect("fixed");
    assert_eq!(
        (m.dest, m.dest_mode, m.vector),
        (3, DestMode::Physical, 0x27)
    );
    assert_eq!((m.delivery, m.trigger), (Delivery::Fixed, Trigger::Edge));
    let lowest = IoApicInterrupt::from_msi(0xFEE0_100C, 0x0131).expect("lowest priority");
    assert_eq!((lowest.dest, lowest.dest_mode), (1, DestMode::Logical));
    assert_eq!(lowest.delivery, Delivery::Fixed);
    for (address, data, why) in [
        (0xFEE0_0000, 0x0230, "SMI"),
        (0xFEE0_0000, 0x0430, "NMI"),
        (0xFEE0_0000, 0x0500, "INIT"),
        (0xFEE0_0000, 0x0700, "ExtINT"),
        (0xFEE0_0000, 0x000F, "vector below 16"),
        (0xFED0_0000, 0x0030, "not the APIC window"),
        (0x1_FEE0_0000, 0x0030, "upper address"),
    ] {
        assert!(IoApicInterrupt::from_msi(address, data).is_none(), "{why}");
    }
}
