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
