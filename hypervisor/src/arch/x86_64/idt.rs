//! The interrupt descriptor table (Intel SDM Vol. 3A §6.14.1) and the
//! Rust side of the trap stubs in `trap.S`.

use super::gdt::KERNEL_CS;
use spin::Once;
use x86_64::VirtAddr;
use x86_64::structures::DescriptorTablePointer;

core::arch::global_asm!(include_str!("trap.S"), options(att_syntax));

unsafe extern "C" {
    /// 256 stubs of 16 bytes each (trap.S).
    static trap_stubs: u8;
}

/// Vectors with a fixed meaning in Basalt (docs/smp.md).
pub mod vector {
    /// Non-maskable interrupt: also how a faulting CPU stops the others.
    pub const NMI: u8 = 2;
    /// Double fault.
    pub const DOUBLE_FAULT: u8 = 8;
    /// Page fault.
    pub const PAGE_FAULT: u8 = 14;
    /// Machine check.
    pub const MACHINE_CHECK: u8 = 18;
    /// Console UART receive interrupt (COM1/COM2's ISA IRQ through the I/O
    /// APIC, to the boot CPU): 0x20 + IRQ 4, in the lowest priority class.
    pub const CONSOLE_RX: u8 = 0x24;
    /// Host GSIs 0-23 passed through to the control domain: 0x30 + GSI,
    /// to the boot CPU (`crate::hvm::pirq`).
    pub const PIRQ_FIRST: u8 = basalt_platform::pirq::VECTOR_BASE;
    /// The last of them (GSI 23).
    pub const PIRQ_LAST: u8 = basalt_platform::pirq::VECTOR_LAST;
    /// MSIs and MSI-X entries of the control domain's devices: 0x50 + MSI
    /// slot, 0x70 + MSI-X entry, to the boot CPU (`crate::hvm::pirq`,
    /// `basalt_devices::pci_pass`).
    pub const MSI_FIRST: u8 = basalt_devices::pci_pass::MSI_VECTOR_BASE;
    /// The last of them.
    pub const MSI_LAST: u8 = MSI_FIRST + basalt_devices::pci_pass::MESSAGES as u8 - 1;
    /// Local APIC timer.
    pub const TIMER: u8 = 0xef;
    /// Wake-up IPI: "look at your run queue".
    pub const WAKE: u8 = 0xf0;
    /// Local APIC error.
    pub const APIC_ERROR: u8 = 0xfe;
    /// Local APIC spurious interrupt.
    pub const SPURIOUS: u8 = 0xff;
}

/// Interrupt-stack-table slots (1-based in the gate; 0 = no IST).
pub mod ist {
    /// Double fault: must work when the current stack is gone.
    pub const DOUBLE_FAULT: u8 = 1;
    /// NMI: may arrive anywhere, including on a nearly full stack.
    pub const NMI: u8 = 2;
    /// Machine check.
    pub const MACHINE_CHECK: u8 = 3;
}

/// The registers a trap stub saved, in stack order (trap.S).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
#[allow(missing_docs)]
pub struct TrapFrame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rbp: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rbx: u64,
    pub rax: u64,
    /// Vector number (pushed by the stub).
    pub vector: u64,
    /// Error code (pushed by the CPU, or 0 by the stub).
    pub error_code: u64,
    /// The interrupted context, pushed by the CPU.
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Gate {
    offset_low: u16,
    selector: u16,
    ist: u8,
    type_attr: u8,
    offset_mid: u16,
    offset_high: u32,
    reserved: u32,
}

impl Gate {
    const MISSING: Self = Self {
        offset_low: 0,
        selector: 0,
        ist: 0,
        type_attr: 0,
        offset_mid: 0,
        offset_high: 0,
        reserved: 0,
    };

    /// A present 64-bit interrupt gate (type 0xE, DPL 0): interrupts stay
    /// off in every handler.
    fn interrupt(handler: u64, ist: u8) -> Self {
        Self {
            offset_low: handler as u16,
            selector: KERNEL_CS,
            ist,
            type_attr: 0x8e,
            offset_mid: (handler >> 16) as u16,
            offset_high: (handler >> 32) as u32,
            reserved: 0,
        }
    }
}

#[repr(C, align(16))]
struct Idt([Gate; 256]);

static IDT: Once<Idt> = Once::new();

fn build() -> Idt {
    let base = &raw const trap_stubs as u64;
    let mut idt = Idt([Gate::MISSING; 256]);
    for (v, gate) in idt.0.iter_mut().enumerate() {
        let ist = match v as u8 {
            vector::DOUBLE_FAULT => ist::DOUBLE_FAULT,
            vector::NMI => ist::NMI,
            vector::MACHINE_CHECK => ist::MACHINE_CHECK,
            _ => 0,
        };
        *gate = Gate::interrupt(base + v as u64 * 16, ist);
    }
    idt
}

/// Builds the IDT (once) and loads it on this CPU.
pub fn load() {
    let idt: &'static Idt = IDT.call_once(build);
    let pointer = DescriptorTablePointer {
        limit: (core::mem::size_of::<Idt>() - 1) as u16,
        base: VirtAddr::new(idt as *const Idt as u64),
    };
    // SAFETY: the IDT is static, fully built above, and every gate points at
    // a stub in trap.S with the kernel code selector.
    unsafe { x86_64::instructions::tables::lidt(&pointer) };
}

/// The IDT's address (for the VMCS host state).
pub fn base() -> u64 {
    IDT.get().map_or(0, |idt| idt as *const Idt as u64)
}

/// The name of an exception vector (SDM Vol. 3A Table 6-1).
pub fn exception_name(vector: u64) -> &'static str {
    const NAMES: [&str; 32] = [
        "divide error (#DE)",
        "debug (#DB)",
        "non-maskable interrupt (NMI)",
        "breakpoint (#BP)",
        "overflow (#OF)",
        "BOUND range exceeded (#BR)",
        "invalid opcode (#UD)",
        "device not available (#NM)",
        "double fault (#DF)",
        "coprocessor segment overrun",
        "invalid TSS (#TS)",
        "segment not present (#NP)",
        "stack-segment fault (#SS)",
        "general protection (#GP)",
        "page fault (#PF)",
        "reserved (15)",
        "x87 floating-point error (#MF)",
        "alignment check (#AC)",
        "machine check (#MC)",
        "SIMD floating-point (#XM)",
        "virtualization exception (#VE)",
        "control protection (#CP)",
        "reserved (22)",
        "reserved (23)",
        "reserved (24)",
        "reserved (25)",
        "reserved (26)",
        "reserved (27)",
        "hypervisor injection (#HV)",
        "VMM communication (#VC)",
        "security exception (#SX)",
        "reserved (31)",
    ];
    NAMES.get(vector as usize).copied().unwrap_or("interrupt")
}
