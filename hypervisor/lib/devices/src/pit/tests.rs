use super::*;

/// Port of channel 1's counter.
const CHANNEL1: u16 = 0x41;

/// Linux's `LATCH` for HZ = 1000.
const LATCH_1000HZ: u16 = 1193;

/// Time of `ticks` PIT clocks after 0, as the model counts them.
fn at(ticks: u64) -> u64 {
    ticks_to_ns(ticks)
}

fn program(p: &mut Pit, channel: u16, mode: u8, count: u16, now: u64) {
    p.write(CONTROL, (channel as u8) << 6 | 0x30 | mode << 1, now);
    p.write(CHANNEL0 + channel, count as u8, now);
    p.write(CHANNEL0 + channel, (count >> 8) as u8, now);
}

fn read_word(p: &mut Pit, channel: u16, now: u64) -> u16 {
    let lo = p.read(CHANNEL0 + channel, now);
    let hi = p.read(CHANNEL0 + channel, now);
    u16::from(lo) | u16::from(hi) << 8
}

#[test]
fn conversions_round_trip() {
    for t in [0, 1, 2, 1193, 59659, 0x10000, 1 << 40] {
        let ns = ticks_to_ns(t);
        assert_eq!(ns_to_ticks(ns), t);
        if ns > 0 {
            assert_eq!(ns_to_ticks(ns - 1), t - 1);
        }
    }
    for v in [0, 1, 9, 10, 99, 1234, 9999] {
        assert_eq!(from_bcd(to_bcd(v)), v);
    }
    assert_eq!(to_bcd(1234), 0x1234);
}

#[test]
fn power_on_state() {
    let mut p = Pit::new();
    assert!(!p.out(0, 0));
    assert_eq!(p.next_irq0_edge(0), None);
    assert_eq!(p.read(PORT61, 0) & (PORT61_GATE2 | PORT61_OUT2), 0);
    assert!(Pit::handles(0x43) && Pit::handles(0x61) && !Pit::handles(0x44));
    assert_eq!(p.read(CONTROL, 0), 0xFF);
}

#[test]
fn linux_periodic_mode2_at_1000hz() {
    let mut p = Pit::new();
    let t0 = 5_000_000;
    // pit_set_periodic: 0x34, LATCH low, LATCH high.
    p.write(CONTROL, 0x34, t0);
    p.write(CHANNEL0, LATCH_1000HZ as u8, t0);
    p.write(CHANNEL0, (LATCH_1000HZ >> 8) as u8, t0);
    assert_eq!(p.programming(0), (1193, 2, false));
    let n = u64::from(LATCH_1000HZ);
    let mut now = t0;
    for k in 1..=1000u64 {
        let edge = p.next_irq0_edge(now).expect("periodic");
        assert_eq!(edge, t0 + at(k * n));
        assert!(p.out(0, edge));
        assert!(!p.out(0, edge - 1), "low for the last clock");
        assert!(p.out(0, edge - at(2)));
        now = edge;
    }
    // 1000 periods of 1193 clocks: 999.847 ms.
    assert_eq!((now - t0) / 1000, 999_847);
    // The count reloads: it reads N at the edge.
    assert_eq!(p.count(0, now), 1193);
    assert_eq!(p.count(0, now + at(1)), 1192);
}

#[test]
fn mode3_square_wave() {
    let mut p = Pit::new();
    program(&mut p, 0, 3, 100, 0);
    for d in 0..300u64 {
        assert_eq!(p.out(0, at(d)), d % 100 < 50, "d = {d}");
    }
    assert_eq!(p.next_irq0_edge(0), Some(at(100)));
    assert_eq!(p.next_irq0_edge(at(100)), Some(at(200)));
    // Counts down by two, twice per period.
    assert_eq!(p.count(0, at(10)), 80);
    assert_eq!(p.count(0, at(60)), 80);
    // Odd count: high one clock longer.
    program(&mut p, 0, 3, 5, 0);
    let outs: Vec<bool> = (0..5).map(|d| p.out(0, at(d))).collect();
    assert_eq!(outs, [true, true, true, false, false]);
}

#[test]
fn mode0_one_shot() {
    let mut p = Pit::new();
    let t0 = 123_456_789;
    program(&mut p, 0, 0, 1000, t0);
    assert!(!p.out(0, t0));
    let edge = p.next_irq0_edge(t0).expect("one-shot");
    assert_eq!(edge, t0 + at(1000));
    assert!(!p.out(0, edge - 1));
    assert!(p.out(0, edge));
    assert_eq!(p.next_irq0_edge(edge), None, "fires once");
    assert!(p.out(0, edge + 1_000_000_000));
    // The counter keeps counting down and wraps.
    assert_eq!(p.count(0, edge), 0);
    assert_eq!(p.count(0, edge + at(1)), 0xFFFF);
    // A new count re-arms it.
    program(&mut p, 0, 0, 10, edge);
    assert!(!p.out(0, edge));
    assert_eq!(p.next_irq0_edge(edge), Some(edge + at(10)));
}

#[test]
fn linux_oneshot_mode4_and_shutdown() {
    let mut p = Pit::new();
    // pit_set_oneshot: 0x38 then pit_next_event writes the delta.
    p.write(CONTROL, 0x38, 0);
    p.write(CHANNEL0, 100, 0);
    p.write(CHANNEL0, 0, 0);
    assert!(p.out(0, 0));
    assert_eq!(p.next_irq0_edge(0), Some(at(101)));
    assert!(!p.out(0, at(100)));
    assert!(p.out(0, at(101)));
    assert_eq!(p.next_irq0_edge(at(101)), None);
    // pit_shutdown: mode 0 and a zero count (0x10000 clocks).
    p.write(CONTROL, 0x30, at(200));
    p.write(CHANNEL0, 0, at(200));
    p.write(CHANNEL0, 0, at(200));
    assert_eq!(p.programming(0).0, 0x10000);
    assert_eq!(p.next_irq0_edge(at(200)), Some(at(200) + at(0x10000)));
}

#[test]
fn lobyte_hibyte_toggling() {
    let mut p = Pit::new();
    program(&mut p, 1, 0, 0x1234, 0);
    // Live reads alternate LSB / MSB.
    assert_eq!(read_word(&mut p, 1, 0), 0x1234);
    assert_eq!(p.read(CHANNEL1, at(0x34)), 0x00);
    assert_eq!(p.read(CHANNEL1, at(0x34)), 0x12);
    // LSB only and MSB only.
    p.write(CONTROL, 0x50, 0);
    p.write(CHANNEL1, 0x80, 0);
    assert_eq!(p.programming(1).0, 0x80);
    assert_eq!(p.read(CHANNEL1, at(1)), 0x7F);
    assert_eq!(p.read(CHANNEL1, at(1)), 0x7F);
    p.write(CONTROL, 0x60, 0);
    p.write(CHANNEL1, 0x02, 0);
    assert_eq!(p.programming(1).0, 0x200);
    assert_eq!(p.read(CHANNEL1, at(1)), 0x01);
    // A control word resets the byte pointers.
    p.write(CONTROL, 0x70, 0);
    p.write(CHANNEL1, 0xAA, 0);
    p.write(CONTROL, 0x70, 0);
    p.write(CHANNEL1, 0x10, 0);
    p.write(CHANNEL1, 0x00, 0);
    assert_eq!(p.programming(1).0, 0x10);
}

#[test]
fn counter_latch_freezes_the_value() {
    let mut p = Pit::new();
    program(&mut p, 0, 2, 1000, 0);
    p.write(CONTROL, 0x00, at(100));
    // A second latch before reading is ignored.
    p.write(CONTROL, 0x00, at(200));
    assert_eq!(p.read(CHANNEL0, at(500)), (900u16 & 0xFF) as u8);
    assert_eq!(p.read(CHANNEL0, at(600)), (900u16 >> 8) as u8);
    // The latch is gone: live reads again.
    assert_eq!(read_word(&mut p, 0, at(700)), 300);
}

#[test]
fn read_back_latches_status_and_count() {
    let mut p = Pit::new();
    program(&mut p, 2, 0, 500, 0);
    p.write(PORT61, PORT61_GATE2, 0);
    program(&mut p, 2, 0, 500, 0);
    // Read-back of channel 2: count and status.
    p.write(CONTROL, 0xC8, at(100));
    let status = p.read(CHANNEL2, at(900));
    assert_eq!(status, 0x30, "OUT low, mode 0, word access, binary");
    assert_eq!(read_word(&mut p, 2, at(900)), 400);
    // Status only, after terminal count.
    p.write(CONTROL, 0xE8, at(600));
    assert_eq!(p.read(CHANNEL2, at(600)), 0xB0);
    // Null count between a control word and its count.
    p.write(CONTROL, 0xB4, at(600));
    p.write(CONTROL, 0xE8, at(600));
    assert_eq!(p.read(CHANNEL2, at(600)) & 0x40, 0x40);
    // Read-back of several channels at once.
    program(&mut p, 0, 2, 50, 0);
    p.write(CONTROL, 0xDA, at(10)); // count of channels 0 and 2
    assert_eq!(read_word(&mut p, 0, at(30)), 40);
}

#[test]
fn latch_and_read_back_agree_with_count() {
    let mut p = Pit::new();
    program(&mut p, 0, 2, 0x1000, 777);
    for step in 0..2000u64 {
        let now = 777 + step * 3_333;
        let live = p.count(0, now) as u16;
        if step % 2 == 0 {
            p.write(CONTROL, 0x00, now);
        } else {
            p.write(CONTROL, 0xD2, now);
        }
        assert_eq!(read_word(&mut p, 0, now + 50_000), live);
    }
}

#[test]
fn bcd_counting() {
    let mut p = Pit::new();
    p.write(CONTROL, 0x31, 0);
    p.write(CHANNEL0, 0x00, 0);
    p.write(CHANNEL0, 0x10, 0); // BCD 1000
    assert_eq!(p.programming(0), (1000, 0, true));
    assert_eq!(read_word(&mut p, 0, at(1)), 0x0999);
    assert_eq!(p.next_irq0_edge(0), Some(at(1000)));
    assert_eq!(read_word(&mut p, 0, at(1001)), 0x9999);
    // Zero is 10000 in BCD.
    p.write(CONTROL, 0x35, 0);
    p.write(CHANNEL0, 0, 0);
    p.write(CHANNEL0, 0, 0);
    assert_eq!(p.next_irq0_edge(0), Some(at(10_000)));
}

#[test]
fn gate_controls_channel2() {
    let mut p = Pit::new();
    // Mode 0 with the gate low does not count.
    program(&mut p, 2, 0, 100, 0);
    assert_eq!(p.count(2, at(50)), 100);
    p.write(PORT61, PORT61_GATE2, at(50));
    assert_eq!(p.count(2, at(80)), 70);
    p.write(PORT61, 0, at(80));
    let held = p.count(2, at(80));
    assert_eq!(p.count(2, at(1000)), held);
    p.write(PORT61, PORT61_GATE2, at(1000));
    let end = at(1000) + at(u64::from(held));
    assert!(!p.out(2, end - 1));
    assert!(p.out(2, end));
    assert_ne!(p.read(PORT61, end) & PORT61_OUT2, 0);
    // Mode 2: gate low forces OUT high, a rising edge reloads.
    program(&mut p, 2, 2, 10, at(2000));
    assert!(!p.out(2, at(2009)));
    p.write(PORT61, 0, at(2009));
    assert!(p.out(2, at(2009)));
    p.write(PORT61, PORT61_GATE2, at(3000));
    assert_eq!(p.count(2, at(3000) + at(3)), 7);
    // Mode 1: the gate's rising edge triggers.
    program(&mut p, 2, 1, 10, at(4000));
    assert!(p.out(2, at(4000)));
    assert_eq!(p.count(2, at(4005)), 10);
    p.write(PORT61, 0, at(4005));
    p.write(PORT61, PORT61_GATE2, at(4006));
    assert!(!p.out(2, at(4006)));
    assert_eq!(p.count(2, at(4006) + at(4)), 6);
    // Retrigger restarts.
    let t = at(4006);
    p.write(PORT61, 0, t + at(4));
    assert_eq!(p.count(2, t + at(6)), 4, "gate low does not stop mode 1");
    let u = t + at(6);
    p.write(PORT61, PORT61_GATE2, u);
    assert_eq!(p.count(2, u + at(3)), 7);
    assert!(!p.out(2, u + at(9)));
    assert!(p.out(2, u + at(10)));
    // Mode 5: one-clock low pulse after the trigger.
    program(&mut p, 2, 5, 10, at(5000));
    p.write(PORT61, 0, at(5000));
    p.write(PORT61, PORT61_GATE2, at(5001));
    assert!(p.out(2, at(5001) + at(9)));
    assert!(!p.out(2, at(5001) + at(10)));
    assert!(p.out(2, at(5001) + at(11)));
}

#[test]
fn port61_bits() {
    let mut p = Pit::new();
    p.write(PORT61, 0xFF, 0);
    assert_eq!(p.read(PORT61, 0) & 0x0F, 0x0F);
    assert_eq!(p.read(PORT61, 0) & 0xC0, 0);
    let a = p.read(PORT61, 0) & PORT61_REFRESH;
    let b = p.read(PORT61, REFRESH_TOGGLE_NS) & PORT61_REFRESH;
    assert_ne!(a, b, "refresh toggles");
}

/// A guest: port accesses take 1 µs; the TSC runs at 2.5 GHz.
struct Guest {
    pit: Pit,
    now: u64,
}

impl Guest {
    fn inb(&mut self, port: u16) -> u8 {
        self.now += 1_000;
        self.pit.read(port, self.now)
    }

    fn outb(&mut self, value: u8, port: u16) {
        self.now += 1_000;
        self.pit.write(port, value, self.now);
    }

    fn get_cycles(&mut self) -> u64 {
        self.now += 20;
        self.now * 5 / 2
    }

    fn pit_verify_msb(&mut self, val: u8) -> bool {
        self.inb(0x42);
        self.inb(0x42) == val
    }

    fn pit_expect_msb(&mut self, val: u8) -> (bool, u64, u64) {
        let (mut tsc, mut prev_tsc) = (0, 0);
        let mut count = 0;
        while count < 50_000 {
            if !self.pit_verify_msb(val) {
                break;
            }
            prev_tsc = tsc;
            tsc = self.get_cycles();
            count += 1;
        }
        let delta = self.get_cycles() - prev_tsc;
        (count > 5, tsc, delta)
    }
}

/// Linux's `pit_calibrate_tsc(latch, ms, loopmin)`, in kHz.
fn pit_calibrate_tsc(g: &mut Guest, latch: u32, ms: u64, loopmin: u64) -> Option<u64> {
    let v = g.inb(0x61);
    g.outb((v & !0x02) | 0x01, 0x61);
    g.outb(0xB0, 0x43);
    g.outb(latch as u8, 0x42);
    g.outb((latch >> 8) as u8, 0x42);
    let t1 = g.get_cycles();
    let (mut tsc, mut t2) = (t1, t1);
    let (mut tscmin, mut tscmax, mut pitcnt) = (u64::MAX, 0, 0);
    while g.inb(0x61) & 0x20 == 0 {
        t2 = g.get_cycles();
        let delta = t2 - tsc;
        tsc = t2;
        tscmin = tscmin.min(delta);
        tscmax = tscmax.max(delta);
        pitcnt += 1;
    }
    if pitcnt < loopmin || tscmax > 10 * tscmin {
        return None;
    }
    Some((t2 - t1) / ms)
}

/// Linux's `quick_pit_calibrate`, in kHz.
fn quick_pit_calibrate(g: &mut Guest) -> Option<u64> {
    const MAX_QUICK_PIT_ITERATIONS: u64 = 50 * PIT_HZ / 1000 / 256;
    let v = g.inb(0x61);
    g.outb((v & !0x02) | 0x01, 0x61);
    g.outb(0xB0, 0x43);
    g.outb(0xFF, 0x42);
    g.outb(0xFF, 0x42);
    g.pit_verify_msb(0);
    let (ok, tsc, d1) = g.pit_expect_msb(0xFF);
    if !ok {
        return None;
    }
    for i in 1..=MAX_QUICK_PIT_ITERATIONS {
        let (ok, t, d2) = g.pit_expect_msb(0xFF - i as u8);
        if !ok {
            return None;
        }
        let delta = t - tsc;
        if d1 + d2 >= delta >> 11 {
            continue;
        }
        if !g.pit_verify_msb(0xFE - i as u8) {
            return None;
        }
        return Some(delta * PIT_HZ / (i * 256 * 1000));
    }
    None
}

#[test]
fn linux_pit_calibrate_tsc() {
    let mut g = Guest {
        pit: Pit::new(),
        now: 3_000_000_123,
    };
    // CAL_MS = 10, CAL_LATCH = PIT_TICK_RATE / (1000 / 10), CAL_PIT_LOOPS = 1000.
    let khz = pit_calibrate_tsc(&mut g, (PIT_HZ / 100) as u32, 10, 1000).expect("calibrates");
    assert!(khz.abs_diff(2_500_000) < 2_500, "{khz} kHz");
    // CAL2: 50 ms, 5000 loops.
    let khz = pit_calibrate_tsc(&mut g, (PIT_HZ / 20) as u32, 50, 5000).expect("calibrates");
    assert!(khz.abs_diff(2_500_000) < 500, "{khz} kHz");
}

#[test]
fn linux_quick_pit_calibrate() {
    let mut g = Guest {
        pit: Pit::new(),
        now: 77_777,
    };
    let khz = quick_pit_calibrate(&mut g).expect("calibrates");
    assert!(khz.abs_diff(2_500_000) < 2_500, "{khz} kHz");
}

// ------------------------------------------------------------ randomized

use crate::test_rng::Rng;

fn check_invariants(p: &Pit, now: u64) {
    for (i, c) in p.channels.iter().enumerate() {
        let m = c.modulus() as u32;
        assert!((1..=m).contains(&c.count));
        assert!(c.counter(now) < m);
        assert!(c.mode <= 5);
        assert!(c.start_ns.is_none_or(|s| s <= now));
        if i < 2 {
            assert!(c.gate);
        }
        let _ = p.count(i, now);
    }
    assert_eq!(p.channels[2].gate, p.port61 & 1 != 0);
    if let Some(e) = p.next_irq0_edge(now) {
        assert!(e > now);
        // OUT is high at the edge and was not high just before.
        assert!(p.out(0, e));
        assert!(!p.out(0, e - 1));
    }
}

#[test]
fn random_operations_keep_the_invariants() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut p = Pit::new();
    let mut now = 0u64;
    let mut edges = 0;
    for _ in 0..100_000 {
        now += rng.below(20_000);
        match rng.below(8) {
            0 => {
                let ch = rng.below(3) as u8;
                let v = ch << 6 | (rng.below(4) as u8) << 4 | (rng.next() as u8 & 0x0F);
                p.write(CONTROL, v, now);
            }
            1 => p.write(CONTROL, 0xC0 | (rng.next() as u8 & 0x3E), now),
            2 | 3 => {
                let port = CHANNEL0 + rng.below(3) as u16;
                // Mostly small counts so that edges happen.
                p.write(port, rng.below(64) as u8, now);
            }
            4 | 5 => {
                let port = [CHANNEL0, CHANNEL1, CHANNEL2, PORT61][rng.below(4) as usize];
                p.read(port, now);
            }
            6 => p.write(PORT61, rng.next() as u8, now),
            _ => {
                if let Some(e) = p.next_irq0_edge(now) {
                    edges += 1;
                    now = e;
                }
            }
        }
        check_invariants(&p, now);
    }
    assert!(edges > 1000, "only {edges} edges");
}
