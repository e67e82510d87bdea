//! VPIDs for vCPUs (docs/vmx.md, "VPIDs"): one from `basalt_vmx::vpid`'s
//! pool per vCPU, given back when the vCPU is dropped, and flushed on each
//! CPU before that CPU first enters a guest with a recycled one.

use super::instr;
use crate::arch::x86_64::percpu::MAX_CPUS;
use basalt_vmx::vpid::{VpidError, VpidPool};
use spin::Mutex;

static POOL: Mutex<VpidPool> = Mutex::new(VpidPool::new());

const MASK_WORDS: usize = MAX_CPUS.div_ceil(64);

/// A vCPU's VPID while the vCPU lives.
#[derive(Debug)]
pub struct VpidTag {
    value: u16,
    /// CPUs that must flush the VPID before entering a guest with it (all,
    /// for a recycled VPID; none for one never handed out before).
    flush_on: [u64; MASK_WORDS],
}

impl VpidTag {
    /// Takes a free VPID; refuses when all 65535 are in use.
    pub fn alloc() -> Result<VpidTag, VpidError> {
        let v = POOL.lock().alloc()?;
        let fill = if v.recycled { u64::MAX } else { 0 };
        Ok(VpidTag {
            value: v.value,
            flush_on: [fill; MASK_WORDS],
        })
    }

    /// The value for the VMCS.
    pub fn value(&self) -> u16 {
        self.value
    }

    /// Called on CPU `cpu` before its first VM entry with this VPID: a
    /// recycled VPID is flushed there once (INVVPID single-context, or
    /// all-context where the CPU lacks the single-context type).
    pub fn before_use(&mut self, cpu: usize, single_context: bool) {
        let (word, bit) = (cpu / 64, 1u64 << (cpu % 64));
        let Some(w) = self.flush_on.get_mut(word) else {
            return;
        };
        if *w & bit != 0 {
            let _ = instr::invvpid(self.value, single_context);
            *w &= !bit;
        }
    }
}

impl VpidTag {
    /// Flushes this VPID's translations on this CPU now: the vCPU arrives
    /// from another CPU (entries this CPU kept from its last visit missed
    /// the guest's INVLPGs elsewhere) or starts again from a new state.
    pub fn flush(&self, single_context: bool) {
        let _ = instr::invvpid(self.value, single_context);
    }
}

impl Drop for VpidTag {
    fn drop(&mut self) {
        POOL.lock().free(self.value);
    }
}

/// VPIDs in use now.
pub fn in_use() -> u32 {
    POOL.lock().in_use()
}
