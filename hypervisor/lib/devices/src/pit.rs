//! The PC's 8254 programmable interval timer as a pure state machine with an
//! explicit clock.
//!
//! Three counters at ports 0x40-0x42 and the control word at 0x43, clocked
//! at [`PIT_HZ`] (1.193182 MHz); port 0x61 (the "NMI status and control"
//! port of the PC) holds the gate of channel 2 (bit 0), the speaker enable
//! (bit 1) and shows channel 2's OUT (bit 5). Every access takes `now_ns`,
//! a monotonic time in nanoseconds from the caller; nothing here reads a
//! clock and nothing ticks: a counter's value and its OUT pin are computed
//! from the time its count was loaded (the counter has counted
//! `floor(elapsed_ns * PIT_HZ / 1e9)` clocks).
//!
//! Channel 0's OUT is IRQ 0: [`Pit::next_irq0_edge`] says when it next
//! rises, so the caller can arm a timer and pulse IRQ 0 then. Channel 1
//! (DRAM refresh on old PCs) is modelled like the others and drives
//! nothing. Channels 0 and 1 have their gates tied high.
//!
//! Modelled: the control word (channel, access mode LSB / MSB / LSB then
//! MSB, modes 0-5, BCD), the counter latch command, the read-back command
//! (count and status latches, OUT and null-count in the status byte),
//! reading live counts byte by byte, the gate (counting paused in modes 0
//! and 4 and in modes 2 and 3 — where OUT is also forced high — while low;
//! a rising edge reloads in modes 1, 2, 3 and 5), and port 0x61's refresh
//! toggle (bit 4, every 15.085 µs).
//!
//! Simplifications:
//!
//! * the count starts at the moment it is written, not one clock later;
//! * a new count written in modes 2 and 3 takes effect at once instead of
//!   at the end of the current period;
//! * writing the first byte of a two-byte count does not stop a mode 0
//!   count;
//! * mode 3 with an odd count reads like QEMU's model (`N - (2d mod N)`),
//!   its OUT is high for `(N + 1) / 2` clocks and low for `(N - 1) / 2`;
//! * a count of 1 in modes 2 and 3 (illegal on the 8254) leaves OUT high
//!   and raises no edge;
//! * the speaker is silent.

/// The input clock of every channel, in Hz.
pub const PIT_HZ: u64 = 1_193_182;

/// Port of channel 0's counter (IRQ 0).
pub const CHANNEL0: u16 = 0x40;
/// Port of channel 2's counter (speaker, calibration).
pub const CHANNEL2: u16 = 0x42;
/// Port of the control word.
pub const CONTROL: u16 = 0x43;
/// The PC's port 0x61: gate 2 (bit 0), speaker (bit 1), OUT 2 (bit 5).
pub const PORT61: u16 = 0x61;

/// Port 0x61: gate of channel 2.
pub const PORT61_GATE2: u8 = 0x01;
/// Port 0x61: refresh request toggle (read only).
pub const PORT61_REFRESH: u8 = 0x10;
/// Port 0x61: channel 2's OUT (read only).
pub const PORT61_OUT2: u8 = 0x20;

/// Half a period of port 0x61's refresh toggle, in ns.
pub const REFRESH_TOGGLE_NS: u64 = 15_085;

const NS_PER_S: u128 = 1_000_000_000;

/// Clocks counted in `ns` nanoseconds.
fn ns_to_ticks(ns: u64) -> u64 {
    (u128::from(ns) * u128::from(PIT_HZ) / NS_PER_S) as u64
}

/// The least number of nanoseconds in which `ticks` clocks are counted.
fn ticks_to_ns(ticks: u64) -> u64 {
    (u128::from(ticks) * NS_PER_S).div_ceil(u128::from(PIT_HZ)) as u64
}

fn to_bcd(v: u32) -> u16 {
    let v = v % 10_000;
    ((v % 10) | ((v / 10 % 10) << 4) | ((v / 100 % 10) << 8) | ((v / 1000) << 12)) as u16
}

fn from_bcd(v: u16) -> u32 {
    let v = u32::from(v);
    (v & 0xF) + (v >> 4 & 0xF) * 10 + (v >> 8 & 0xF) * 100 + (v >> 12 & 0xF) * 1000
}

/// How the counter is read and written (control word bits 4-5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Least significant byte only.
    Lsb = 1,
    /// Most significant byte only.
    Msb = 2,
    /// LSB, then MSB.
    Word = 3,
}

/// One counter.
#[derive(Debug, Clone)]
struct Channel {
    access: Access,
    /// Mode 0-5 (6 and 7 are stored as 2 and 3).
    mode: u8,
    bcd: bool,
    /// The count register: 1..=0x10000 (binary) or 1..=10000 (BCD).
    count: u32,
    /// A count has been written since the control word.
    loaded: bool,
    /// Null count: a count was written and not yet loaded (status bit 6).
    /// The load is immediate here, so it is set only between a control
    /// word and the first count.
    null_count: bool,
    /// Modes 1 and 5: a gate edge has started the count.
    triggered: bool,
    /// Time counted before `start_ns` (pauses accumulate here), in ns;
    /// kept in ns rather than clocks so that pauses lose no fraction.
    base_ns: u64,
    /// When the current run of counting started, if counting.
    start_ns: Option<u64>,
    gate: bool,
    /// The next read of a word access returns the MSB.
    read_msb: bool,
    /// The next write of a word access is the MSB; this is the LSB.
    write_lsb: Option<u8>,
    /// Latched count, and whether its MSB is next (word access).
    latched: Option<(u16, bool)>,
    /// Latched status byte.
    status: Option<u8>,
}

impl Channel {
    fn new(gate: bool) -> Self {
        Channel {
            access: Access::Word,
            mode: 0,
            bcd: false,
            count: 0x10000,
            loaded: false,
            null_count: false,
            triggered: false,
            base_ns: 0,
            start_ns: None,
            gate,
            read_msb: false,
            write_lsb: None,
            latched: None,
            status: None,
        }
    }

    fn modulus(&self) -> u64 {
        if self.bcd { 10_000 } else { 0x10000 }
    }

    /// Clocks counted since the count was loaded (or triggered).
    fn ticks(&self, now_ns: u64) -> u64 {
        ns_to_ticks(self.counted_ns(now_ns))
    }

    /// Time counted since the count was loaded (or triggered).
    fn counted_ns(&self, now_ns: u64) -> u64 {
        self.base_ns + self.start_ns.map_or(0, |s| now_ns.saturating_sub(s))
    }

    /// Whether the gate lets this mode count.
    fn gate_counts(&self) -> bool {
        match self.mode {
            0 | 2 | 3 | 4 => self.gate,
            _ => self.triggered,
        }
    }

    fn restart(&mut self, now_ns: u64) {
        self.base_ns = 0;
        self.start_ns = self.gate_counts().then_some(now_ns);
    }

    fn control(&mut self, access: Access, mode: u8, bcd: bool) {
        let count = self.count.min(if bcd { 10_000 } else { 0x10000 });
        *self = Channel {
            access,
            mode: if mode > 5 { mode - 4 } else { mode },
            bcd,
            count,
            null_count: true,
            ..Channel::new(self.gate)
        };
    }

    fn load(&mut self, raw: u16, now_ns: u64) {
        let v = if self.bcd {
            from_bcd(raw)
        } else {
            u32::from(raw)
        };
        self.count = if v == 0 { self.modulus() as u32 } else { v };
        self.loaded = true;
        self.null_count = false;
        self.triggered = false;
        self.restart(now_ns);
    }

    fn set_gate(&mut self, gate: bool, now_ns: u64) {
        if gate == self.gate {
            return;
        }
        // Fold the current run into base_ns.
        self.base_ns = self.counted_ns(now_ns);
        self.start_ns = None;
        self.gate = gate;
        if !self.loaded {
            return;
        }
        match self.mode {
            0 | 4 => {
                if gate {
                    self.start_ns = Some(now_ns);
                }
            }
            1 | 5 => {
                if gate {
                    self.triggered = true;
                    self.base_ns = 0;
                }
                if self.triggered {
                    self.start_ns = Some(self.start_ns.unwrap_or(now_ns));
                }
            }
            _ => {
                if gate {
                    self.restart(now_ns);
                }
            }
        }
    }

    /// The counting element, in the binary value the counter holds.
    fn counter(&self, now_ns: u64) -> u32 {
        let m = self.modulus();
        let n = u64::from(self.count);
        let d = self.ticks(now_ns);
        let v = match self.mode {
            1 | 5 if !self.triggered => n,
            0 | 1 | 4 | 5 => (n + m - d % m) % m,
            2 => n - d % n,
            _ => n - (2 * d) % n,
        };
        (v % m) as u32
    }

    /// The count as the guest reads it (BCD-encoded in BCD mode).
    fn read_value(&self, now_ns: u64) -> u16 {
        let v = self.counter(now_ns);
        if self.bcd { to_bcd(v) } else { v as u16 }
    }

    /// The OUT pin.
    fn out(&self, now_ns: u64) -> bool {
        if !self.loaded {
            return self.mode != 0;
        }
        let n = u64::from(self.count);
        let d = self.ticks(now_ns);
        match self.mode {
            0 => d >= n,
            1 => !self.triggered || d >= n,
            2 => !self.gate || n < 2 || d % n != n - 1,
            3 => !self.gate || d % n < n.div_ceil(2),
            4 => d != n,
            _ => !self.triggered || d != n,
        }
    }

    fn status_byte(&self, now_ns: u64) -> u8 {
        u8::from(self.out(now_ns)) << 7
            | u8::from(self.null_count) << 6
            | (self.access as u8) << 4
            | self.mode << 1
            | u8::from(self.bcd)
    }

    fn latch(&mut self, now_ns: u64) {
        if self.latched.is_none() {
            self.latched = Some((self.read_value(now_ns), false));
        }
    }

    fn read(&mut self, now_ns: u64) -> u8 {
        if let Some(s) = self.status.take() {
            return s;
        }
        if let Some((v, msb_next)) = self.latched {
            return match self.access {
                Access::Lsb => {
                    self.latched = None;
                    v as u8
                }
                Access::Msb => {
                    self.latched = None;
                    (v >> 8) as u8
                }
                Access::Word if !msb_next => {
                    self.latched = Some((v, true));
                    v as u8
                }
                Access::Word => {
                    self.latched = None;
                    (v >> 8) as u8
                }
            };
        }
        let v = self.read_value(now_ns);
        match self.access {
            Access::Lsb => v as u8,
            Access::Msb => (v >> 8) as u8,
            Access::Word => {
                self.read_msb = !self.read_msb;
                if self.read_msb {
                    v as u8
                } else {
                    (v >> 8) as u8
                }
            }
        }
    }

    fn write(&mut self, value: u8, now_ns: u64) {
        match self.access {
            Access::Lsb => self.load(u16::from(value), now_ns),
            Access::Msb => self.load(u16::from(value) << 8, now_ns),
            Access::Word => match self.write_lsb.take() {
                None => self.write_lsb = Some(value),
                Some(lsb) => self.load(u16::from(lsb) | u16::from(value) << 8, now_ns),
            },
        }
    }

    /// The first time after `now_ns` at which OUT rises, if it ever will
    /// without further programming.
    fn next_rising_edge(&self, now_ns: u64) -> Option<u64> {
        let start = self.start_ns?;
        let n = u64::from(self.count);
        let d = self.ticks(now_ns);
        let target = match self.mode {
            0 if d < n => n,
            2 | 3 if n >= 2 => (d / n + 1) * n,
            4 | 5 if d <= n => n + 1,
            _ => return None,
        };
        Some(start + ticks_to_ns(target) - self.base_ns)
    }
}

/// The 8254 and port 0x61.
#[derive(Debug, Clone)]
pub struct Pit {
    channels: [Channel; 3],
    /// Port 0x61 bits 0-3 as written.
    port61: u8,
}

impl Default for Pit {
    fn default() -> Self {
        Self::new()
    }
}

impl Pit {
    /// A PIT as after power-on: every channel in mode 0, LSB-then-MSB, no
    /// count loaded; gate 2 low.
    pub fn new() -> Self {
        Pit {
            channels: [Channel::new(true), Channel::new(true), Channel::new(false)],
            port61: 0,
        }
    }

    /// Whether `port` belongs to this model.
    pub fn handles(port: u16) -> bool {
        matches!(port, CHANNEL0..=CONTROL | PORT61)
    }

    /// A guest read of `port` at `now_ns`. The control port reads 0xFF
    /// (the 8254 has no read path there); unknown ports read 0xFF.
    pub fn read(&mut self, port: u16, now_ns: u64) -> u8 {
        match port {
            CHANNEL0..=CHANNEL2 => self.channels[usize::from(port - CHANNEL0)].read(now_ns),
            PORT61 => {
                let refresh = (now_ns / REFRESH_TOGGLE_NS) & 1 != 0;
                self.port61
                    | if refresh { PORT61_REFRESH } else { 0 }
                    | if self.out(2, now_ns) { PORT61_OUT2 } else { 0 }
            }
            _ => 0xFF,
        }
    }

    /// A guest write of `value` to `port` at `now_ns`.
    pub fn write(&mut self, port: u16, value: u8, now_ns: u64) {
        match port {
            CHANNEL0..=CHANNEL2 => {
                self.channels[usize::from(port - CHANNEL0)].write(value, now_ns);
            }
            CONTROL => self.control(value, now_ns),
            PORT61 => {
                self.port61 = value & 0x0F;
                self.channels[2].set_gate(value & PORT61_GATE2 != 0, now_ns);
            }
            _ => {}
        }
    }

    fn control(&mut self, value: u8, now_ns: u64) {
        let sc = usize::from(value >> 6);
        if sc == 3 {
            // Read-back: bit 5 clear latches counts, bit 4 clear statuses.
            for (i, c) in self.channels.iter_mut().enumerate() {
                if value & (2 << i) == 0 {
                    continue;
                }
                if value & 0x20 == 0 {
                    c.latch(now_ns);
                }
                if value & 0x10 == 0 && c.status.is_none() {
                    c.status = Some(c.status_byte(now_ns));
                }
            }
            return;
        }
        let c = &mut self.channels[sc];
        let access = match (value >> 4) & 3 {
            0 => return c.latch(now_ns),
            1 => Access::Lsb,
            2 => Access::Msb,
            _ => Access::Word,
        };
        c.control(access, (value >> 1) & 7, value & 1 != 0);
    }

    /// The OUT pin of `channel` (0..=2) at `now_ns`; channel 0's is IRQ 0.
    pub fn out(&self, channel: usize, now_ns: u64) -> bool {
        self.channels[channel].out(now_ns)
    }

    /// The value of `channel`'s counting element at `now_ns`, in binary
    /// (0 stands for 0x10000, or 10000 in BCD mode).
    pub fn count(&self, channel: usize, now_ns: u64) -> u32 {
        self.channels[channel].counter(now_ns)
    }

    /// `channel`'s count register (its initial count; 0x10000 for 0),
    /// mode and BCD flag.
    #[cfg(test)]
    pub fn programming(&self, channel: usize) -> (u32, u8, bool) {
        let c = &self.channels[channel];
        (c.count, c.mode, c.bcd)
    }

    /// The first time strictly after `now_ns` at which channel 0's OUT,
    /// that is IRQ 0, rises: periodically in modes 2 and 3, once at the
    /// terminal count in mode 0 (and one clock after it in mode 4).
    /// `None` when no edge will come without new programming. Edges the
    /// caller slept through are not reported: they coalesce into the
    /// returned one. At the returned time the caller should pulse IRQ 0
    /// (low, then high) since a mode 2 low phase lasts only one clock.
    pub fn next_irq0_edge(&self, now_ns: u64) -> Option<u64> {
        self.channels[0].next_rising_edge(now_ns)
    }
}

#[cfg(test)]
mod tests;
