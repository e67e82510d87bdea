//! A guest's general registers as both VM-entry paths keep them while the
//! guest runs (`vmx/entry.S`, `svm/entry.S`): RAX, RBX, RCX, RDX, RSI, RDI,
//! RBP, R8-R15, 8 bytes each, in this order. RSP and RIP live in the VMCS or
//! the VMCB (and on SVM RAX too, so its slot is unused there).

/// A guest's general registers; the layout is fixed by the entry paths.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
#[allow(missing_docs)]
pub struct GuestRegs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
}

impl GuestRegs {
    /// Register `n` in the SDM's numbering (0 = RAX … 15 = R15) for every
    /// register kept here; RSP (4), which each vendor keeps in its control
    /// structure, reads as 0.
    #[inline(always)]
    pub fn get_common(&self, n: u8) -> u64 {
        match n {
            0 => self.rax,
            1 => self.rcx,
            2 => self.rdx,
            3 => self.rbx,
            4 => 0,
            5 => self.rbp,
            6 => self.rsi,
            7 => self.rdi,
            8 => self.r8,
            9 => self.r9,
            10 => self.r10,
            11 => self.r11,
            12 => self.r12,
            13 => self.r13,
            14 => self.r14,
            _ => self.r15,
        }
    }

    /// Sets register `n` (see [`Self::get_common`]; RSP is ignored here).
    #[inline(always)]
    pub fn set_common(&mut self, n: u8, value: u64) {
        match n {
            0 => self.rax = value,
            1 => self.rcx = value,
            2 => self.rdx = value,
            3 => self.rbx = value,
            4 => {}
            5 => self.rbp = value,
            6 => self.rsi = value,
            7 => self.rdi = value,
            8 => self.r8 = value,
            9 => self.r9 = value,
            10 => self.r10 = value,
            11 => self.r11 = value,
            12 => self.r12 = value,
            13 => self.r13 = value,
            14 => self.r14 = value,
            _ => self.r15 = value,
        }
    }
}
