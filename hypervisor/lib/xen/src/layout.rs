//! Offsets of the structures a guest shares with the hypervisor (Xen `public/xen.h`,
//! `public/vcpu.h`, `public/arch-x86/xen.h`; x86-64 layout, `xen_ulong_t` = 64 bits).

/// `struct vcpu_info`: 64 bytes.
pub mod vcpu_info {
    /// Size of one `vcpu_info`.
    pub const SIZE: u64 = 64;
    /// `uint8_t evtchn_upcall_pending`.
    pub const UPCALL_PENDING: u64 = 0;
    /// `xen_ulong_t evtchn_pending_sel`.
    pub const PENDING_SEL: u64 = 8;
    /// `struct vcpu_time_info time`.
    pub const TIME: u64 = 32;
}

/// `struct vcpu_time_info`: 32 bytes (the pvclock).
pub mod time_info {
    /// Size of a `vcpu_time_info`.
    pub const SIZE: usize = 32;
    /// `uint32_t version`: odd while an update is in progress.
    pub const VERSION: usize = 0;
    /// `uint64_t tsc_timestamp`.
    pub const TSC_TIMESTAMP: usize = 8;
    /// `uint64_t system_time` (ns).
    pub const SYSTEM_TIME: usize = 16;
    /// `uint32_t tsc_to_system_mul`.
    pub const MUL: usize = 24;
    /// `int8_t tsc_shift`.
    pub const SHIFT: usize = 28;
    /// `uint8_t flags`.
    pub const FLAGS: usize = 29;
    /// `XEN_PVCLOCK_TSC_STABLE_BIT`: the TSC is synchronised across vCPUs.
    pub const TSC_STABLE: u8 = 1;
}

/// `struct shared_info`.
pub mod shared_info {
    /// `vcpu_info[XEN_LEGACY_MAX_VCPUS]`: the first 32 vCPUs' default `vcpu_info`.
    pub const VCPU_INFO: u64 = 0;
    /// `XEN_LEGACY_MAX_VCPUS`.
    pub const LEGACY_VCPUS: u32 = 32;
    /// `xen_ulong_t evtchn_pending[64]`.
    pub const EVTCHN_PENDING: u64 = 2048;
    /// `xen_ulong_t evtchn_mask[64]`.
    pub const EVTCHN_MASK: u64 = 2560;
    /// `uint32_t wc_version`.
    pub const WC_VERSION: u64 = 3072;
}

/// `struct vcpu_runstate_info`: 48 bytes.
pub mod runstate {
    /// Size.
    pub const SIZE: usize = 48;
    /// `RUNSTATE_running`.
    pub const RUNNING: u32 = 0;
    /// `RUNSTATE_runnable`.
    pub const RUNNABLE: u32 = 1;
    /// `RUNSTATE_blocked`.
    pub const BLOCKED: u32 = 2;
    /// `RUNSTATE_offline`.
    pub const OFFLINE: u32 = 3;
}

/// One vCPU's run-state accounting, as written into its `vcpu_runstate_info`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Runstate {
    /// The current state (`RUNSTATE_*`).
    pub state: u32,
    /// System time (ns) when it entered that state.
    pub entry: u64,
    /// Time spent in each state, ns.
    pub time: [u64; 4],
}

impl Runstate {
    /// Moves to `state` at system time `now`, charging the time since the last change to the
    /// state being left (a clock that went backwards charges nothing).
    pub fn switch(&mut self, state: u32, now: u64) {
        let spent = now.saturating_sub(self.entry);
        if let Some(t) = self.time.get_mut(self.state as usize) {
            *t = t.saturating_add(spent);
        }
        self.state = state;
        self.entry = now.max(self.entry);
    }

    /// The 48-byte `vcpu_runstate_info`.
    pub fn to_bytes(&self) -> [u8; runstate::SIZE] {
        let mut out = [0u8; runstate::SIZE];
        out[0..4].copy_from_slice(&self.state.to_le_bytes());
        out[8..16].copy_from_slice(&self.entry.to_le_bytes());
        for (i, t) in self.time.iter().enumerate() {
            out[16 + 8 * i..24 + 8 * i].copy_from_slice(&t.to_le_bytes());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runstate_accounting() {
        let mut r = Runstate {
            state: runstate::OFFLINE,
            entry: 0,
            time: [0; 4],
        };
        r.switch(runstate::RUNNING, 100);
        r.switch(runstate::BLOCKED, 250);
        r.switch(runstate::RUNNING, 200); // clock went back: nothing charged
        assert_eq!(r.time, [150, 0, 0, 100]);
        r.switch(runstate::RUNNABLE, 300);
        assert_eq!(r.time, [200, 0, 0, 100]);
        let b = r.to_bytes();
        assert_eq!(
            u32::from_le_bytes(b[0..4].try_into().unwrap()),
            runstate::RUNNABLE
        );
        assert_eq!(u64::from_le_bytes(b[8..16].try_into().unwrap()), 300);
        assert_eq!(u64::from_le_bytes(b[16..24].try_into().unwrap()), 200);
        assert_eq!(u64::from_le_bytes(b[40..48].try_into().unwrap()), 100);
    }
}
