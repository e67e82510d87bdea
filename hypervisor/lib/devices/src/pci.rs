//! PCI configuration mechanism #1 (ports 0xCF8 and 0xCFC-0xCFF) with one
//! device: the host bridge at 00:00.0, an Intel 440FX (8086:1237, class
//! 06.00.00), as QEMU's `pc` machine has. Every other bus, device and
//! function reads all ones, as an empty slot does, so a guest's bus scan
//! finds exactly the bridge.
//!
//! The address port 0xCF8 is a 32-bit register (enable bit 31, bus 23:16,
//! device 15:11, function 10:8, register 7:2); byte and word accesses to it
//! do not touch it (they reach other ISA devices on a PC, e.g. 0xCF9 is the
//! reset control register, which is not this model's). The data window
//! 0xCFC-0xCFF reaches the addressed dword at byte offset `port - 0xCFC`.
//! Only the bridge's command register (and the status register's
//! write-1-to-clear bits, none of which are ever set) take writes.

/// The configuration address port.
pub const CONFIG_ADDRESS: u16 = 0xCF8;
/// The first configuration data port.
pub const CONFIG_DATA: u16 = 0xCFC;

/// The host bridge's vendor (Intel).
pub const BRIDGE_VENDOR: u16 = 0x8086;
/// The host bridge's device id (82441FX, the 440FX PMC).
pub const BRIDGE_DEVICE: u16 = 0x1237;
/// Class code: bridge (06), host bridge (00), programming interface 00.
pub const BRIDGE_CLASS: u32 = 0x06_00_00;

/// The configuration space of the host bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciHost {
    address: u32,
    bridge_command: u16,
}

impl Default for PciHost {
    fn default() -> Self {
        Self::new()
    }
}

impl PciHost {
    /// The state after reset: address 0, the bridge's memory and I/O
    /// decoding on (command 0x0006, as firmware leaves it).
    pub const fn new() -> Self {
        PciHost {
            address: 0,
            bridge_command: 0x0006,
        }
    }

    /// Whether `port` belongs to this model (0xCF8-0xCFB as a dword, 0xCFC-0xCFF).
    pub fn handles(port: u16, size: u8) -> bool {
        (port == CONFIG_ADDRESS && size == 4) || (CONFIG_DATA..=CONFIG_DATA + 3).contains(&port)
    }

    /// The configuration address register.
    pub fn address(&self) -> u32 {
        self.address
    }

    /// The dword at register `reg` (a multiple of 4) of the function the
    /// address register selects; all ones for an absent function or when
    /// the enable bit is clear.
    fn read_dword(&self, reg: u8) -> u32 {
        if !self.bridge_selected() {
            return u32::MAX;
        }
        match reg {
            0x00 => u32::from(BRIDGE_VENDOR) | (u32::from(BRIDGE_DEVICE) << 16),
            // Status: medium DEVSEL timing (bits 10:9 = 01).
            0x04 => u32::from(self.bridge_command) | (0x0200 << 16),
            // Revision 2, class code.
            0x08 => 0x02 | (BRIDGE_CLASS << 8),
            // Header type 0, single function; no latency timer or BIST.
            0x0C => 0,
            _ => 0,
        }
    }

    fn bridge_selected(&self) -> bool {
        self.address & 0x8000_0000 != 0 && self.address & 0x00FF_FF00 == 0
    }

    /// Reads `size` bytes (1, 2 or 4) at `port`.
    pub fn read(&self, port: u16, size: u8) -> u32 {
        if port == CONFIG_ADDRESS && size == 4 {
            return self.address;
        }
        let Some(offset) = port.checked_sub(CONFIG_DATA).filter(|o| *o < 4) else {
            return ones(size);
        };
        let reg = (self.address & 0xFC) as u8;
        let dword = self.read_dword(reg);
        (dword >> (8 * offset)) & ones(size)
    }

    /// Writes `size` bytes (1, 2 or 4) of `value` at `port`.
    pub fn write(&mut self, port: u16, size: u8, value: u32) {
        if port == CONFIG_ADDRESS && size == 4 {
            // Bits 1:0 are reserved and read as zero.
            self.address = value & !0x3;
            return;
        }
        let Some(offset) = port.checked_sub(CONFIG_DATA).filter(|o| *o < 4) else {
            return;
        };
        if !self.bridge_selected() || self.address & 0xFC != 0x04 {
            return;
        }
        // Only the command register (bytes 0-1 of dword 0x04) is writable,
        // and of it the I/O, memory and bus-master enables.
        let shifted = u64::from(value) << (8 * offset);
        let width_mask = (u64::from(ones(size))) << (8 * offset);
        let command_mask = 0x0007u64 & width_mask;
        let old = u64::from(self.bridge_command);
        self.bridge_command = ((old & !command_mask) | (shifted & command_mask)) as u16;
    }
}

/// All ones in `size` (1, 2 or 4) bytes.
pub(crate) fn ones(size: u8) -> u32 {
    match size {
        1 => 0xFF,
        2 => 0xFFFF,
        _ => u32::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(bus: u32, dev: u32, func: u32, reg: u32) -> u32 {
        0x8000_0000 | (bus << 16) | (dev << 11) | (func << 8) | reg
    }

    #[test]
    fn linux_type1_check() {
        // pci_check_type1(): byte write to 0xCFB, then the dword address
        // register must keep 0x80000000.
        let mut p = PciHost::new();
        assert!(
            !PciHost::handles(0xCFB, 1),
            "0xCFB bytes are not the address register"
        );
        p.write(0xCFB, 1, 0x01);
        assert_eq!(p.address(), 0);
        p.write(CONFIG_ADDRESS, 4, 0x8000_0000);
        assert_eq!(p.read(CONFIG_ADDRESS, 4), 0x8000_0000);
    }

    #[test]
    fn the_bridge_is_the_only_device() {
        let mut p = PciHost::new();
        let mut found = Vec::new();
        for bus in 0..2 {
            for dev in 0..32 {
                for func in 0..8 {
                    p.write(CONFIG_ADDRESS, 4, config(bus, dev, func, 0));
                    let id = p.read(CONFIG_DATA, 4);
                    if id != u32::MAX {
                        found.push((bus, dev, func, id));
                    }
                }
            }
        }
        assert_eq!(found, vec![(0, 0, 0, 0x1237_8086)]);
        p.write(CONFIG_ADDRESS, 4, config(0, 0, 0, 0x08));
        assert_eq!(p.read(CONFIG_DATA, 4) >> 8, BRIDGE_CLASS);
        p.write(CONFIG_ADDRESS, 4, config(0, 0, 0, 0x0C));
        assert_eq!(p.read(CONFIG_DATA + 2, 1), 0, "header type 0, one function");
    }

    #[test]
    fn narrow_reads_pick_their_bytes() {
        let mut p = PciHost::new();
        p.write(CONFIG_ADDRESS, 4, config(0, 0, 0, 0));
        assert_eq!(p.read(CONFIG_DATA, 2), 0x8086);
        assert_eq!(p.read(CONFIG_DATA + 2, 2), 0x1237);
        assert_eq!(p.read(CONFIG_DATA + 1, 1), 0x80);
        assert_eq!(p.read(CONFIG_DATA + 3, 1), 0x12);
    }

    #[test]
    fn disabled_or_absent_reads_ones_and_ignores_writes() {
        let mut p = PciHost::new();
        p.write(CONFIG_ADDRESS, 4, 0x0000_0000);
        assert_eq!(p.read(CONFIG_DATA, 4), u32::MAX);
        p.write(CONFIG_ADDRESS, 4, config(0, 3, 0, 4));
        p.write(CONFIG_DATA, 2, 0);
        assert_eq!(p.read(CONFIG_DATA, 2), 0xFFFF);
        p.write(CONFIG_ADDRESS, 4, config(0, 0, 0, 4));
        assert_eq!(
            p.read(CONFIG_DATA, 2),
            0x0006,
            "the bridge's command is untouched"
        );
    }

    #[test]
    fn only_the_command_enables_are_writable() {
        let mut p = PciHost::new();
        p.write(CONFIG_ADDRESS, 4, config(0, 0, 0, 4));
        p.write(CONFIG_DATA, 2, 0xFFFF);
        assert_eq!(p.read(CONFIG_DATA, 2), 0x0007);
        p.write(CONFIG_DATA, 1, 0x00);
        assert_eq!(p.read(CONFIG_DATA, 2), 0x0000);
        p.write(CONFIG_ADDRESS, 4, config(0, 0, 0, 0));
        p.write(CONFIG_DATA, 4, 0);
        assert_eq!(p.read(CONFIG_DATA, 4), 0x1237_8086, "the id is read-only");
        p.write(CONFIG_ADDRESS, 4, 0x8000_0003);
        assert_eq!(
            p.read(CONFIG_ADDRESS, 4),
            0x8000_0000,
            "bits 1:0 read as zero"
        );
    }

    #[test]
    fn random_accesses_keep_the_id_and_never_panic() {
        let mut rng = crate::test_rng::Rng(0x1234_5678_9abc_def1);
        let mut p = PciHost::new();
        for _ in 0..50_000 {
            let port = 0xCF8 + rng.below(8) as u16;
            let size = [1u8, 2, 4][rng.below(3) as usize];
            if rng.below(2) == 0 {
                p.write(port, size, rng.next() as u32);
            } else {
                let v = p.read(port, size);
                assert!(v <= ones(size));
            }
            assert_eq!(p.address() & 3, 0);
            assert_eq!(p.bridge_command & !7, 0);
        }
        p.write(CONFIG_ADDRESS, 4, config(0, 0, 0, 0));
        assert_eq!(p.read(CONFIG_DATA, 4), 0x1237_8086);
    }
}
