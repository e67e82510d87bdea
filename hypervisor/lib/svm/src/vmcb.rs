//! The virtual machine control block (APM Vol. 2 §15.5 and appendix B "Layout of VMCB"): a
//! 4 KiB page, the control area at 000h and the state-save area at 400h. Every field Basalt
//! uses is named here with its offset and width; [`Vmcb`] reads and writes them in a page the
//! caller owns.

/// A VMCB field: byte offset and width in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// Byte offset in the VMCB.
    pub offset: u16,
    /// Width in bytes (1, 2, 4 or 8).
    pub width: u8,
}

const fn f(offset: u16, width: u8) -> Field {
    Field { offset, width }
}

/// The control area (appendix B, table B-1).
pub mod control {
    use super::{Field, f};
    /// Intercepts of CR reads (bits 15:0) and writes (31:16).
    pub const CR_INTERCEPTS: Field = f(0x000, 4);
    /// Intercepted exception vectors.
    pub const EXCEPTION_INTERCEPTS: Field = f(0x008, 4);
    /// Instruction intercepts, first word ([`crate::vmcb::Intercept1`]).
    pub const INTERCEPT1: Field = f(0x00c, 4);
    /// Instruction intercepts, second word ([`crate::vmcb::Intercept2`]).
    pub const INTERCEPT2: Field = f(0x010, 4);
    /// Physical address of the I/O permission map.
    pub const IOPM_BASE: Field = f(0x040, 8);
    /// Physical address of the MSR permission map.
    pub const MSRPM_BASE: Field = f(0x048, 8);
    /// Added to the TSC the guest reads.
    pub const TSC_OFFSET: Field = f(0x050, 8);
    /// The guest's ASID.
    pub const ASID: Field = f(0x058, 4);
    /// TLB_CONTROL ([`crate::vmcb::TLB_FLUSH_ALL`] ...).
    pub const TLB_CONTROL: Field = f(0x05c, 1);
    /// V_TPR (3:0), V_IRQ (8), V_INTR_PRIO (19:16), V_IGN_TPR (20), V_INTR_MASKING (24).
    pub const VINTR: Field = f(0x060, 4);
    /// The virtual interrupt's vector.
    pub const VINTR_VECTOR: Field = f(0x064, 1);
    /// Interrupt shadow (bit 0) and the guest's interrupt mask (bit 1).
    pub const INTERRUPT_SHADOW: Field = f(0x068, 8);
    /// The exit code.
    pub const EXITCODE: Field = f(0x070, 8);
    /// Exit information 1.
    pub const EXITINFO1: Field = f(0x078, 8);
    /// Exit information 2.
    pub const EXITINFO2: Field = f(0x080, 8);
    /// The event whose delivery the exit interrupted.
    pub const EXITINTINFO: Field = f(0x088, 8);
    /// Nested paging enable (bit 0).
    pub const NP_ENABLE: Field = f(0x090, 8);
    /// The event to inject at VMRUN.
    pub const EVENTINJ: Field = f(0x0a8, 8);
    /// The nested page table's root (N_CR3).
    pub const N_CR3: Field = f(0x0b0, 8);
    /// VMCB clean bits.
    pub const CLEAN_BITS: Field = f(0x0c0, 4);
    /// The next sequential instruction pointer (with NRIPS).
    pub const NEXT_RIP: Field = f(0x0c8, 8);
}

/// The state-save area (appendix B, table B-2), from 400h.
pub mod save {
    use super::{Field, f};
    /// ES segment (selector, attributes, limit, base: 16 bytes).
    pub const ES: u16 = 0x400;
    /// CS segment.
    pub const CS: u16 = 0x410;
    /// SS segment.
    pub const SS: u16 = 0x420;
    /// DS segment.
    pub const DS: u16 = 0x430;
    /// FS segment.
    pub const FS: u16 = 0x440;
    /// GS segment.
    pub const GS: u16 = 0x450;
    /// GDTR (limit and base).
    pub const GDTR: u16 = 0x460;
    /// LDTR segment.
    pub const LDTR: u16 = 0x470;
    /// IDTR (limit and base).
    pub const IDTR: u16 = 0x480;
    /// TR segment.
    pub const TR: u16 = 0x490;
    /// Current privilege level.
    pub const CPL: Field = f(0x4cb, 1);
    /// EFER (SVME must be set).
    pub const EFER: Field = f(0x4d0, 8);
    /// CR4.
    pub const CR4: Field = f(0x548, 8);
    /// CR3.
    pub const CR3: Field = f(0x550, 8);
    /// CR0.
    pub const CR0: Field = f(0x558, 8);
    /// DR7.
    pub const DR7: Field = f(0x560, 8);
    /// DR6.
    pub const DR6: Field = f(0x568, 8);
    /// RFLAGS.
    pub const RFLAGS: Field = f(0x570, 8);
    /// RIP.
    pub const RIP: Field = f(0x578, 8);
    /// RSP.
    pub const RSP: Field = f(0x5d8, 8);
    /// RAX.
    pub const RAX: Field = f(0x5f8, 8);
    /// STAR.
    pub const STAR: Field = f(0x600, 8);
    /// LSTAR.
    pub const LSTAR: Field = f(0x608, 8);
    /// CSTAR.
    pub const CSTAR: Field = f(0x610, 8);
    /// SFMASK.
    pub const SFMASK: Field = f(0x618, 8);
    /// KernelGsBase.
    pub const KERNEL_GS_BASE: Field = f(0x620, 8);
    /// SYSENTER_CS.
    pub const SYSENTER_CS: Field = f(0x628, 8);
    /// SYSENTER_ESP.
    pub const SYSENTER_ESP: Field = f(0x630, 8);
    /// SYSENTER_EIP.
    pub const SYSENTER_EIP: Field = f(0x638, 8);
    /// CR2.
    pub const CR2: Field = f(0x640, 8);
    /// The guest's PAT (with nested paging).
    pub const G_PAT: Field = f(0x668, 8);
}

/// TLB_CONTROL: flush nothing.
pub const TLB_NO_FLUSH: u8 = 0;
/// TLB_CONTROL: flush every ASID's entries.
pub const TLB_FLUSH_ALL: u8 = 1;
/// TLB_CONTROL: flush this guest's ASID (flush-by-ASID).
pub const TLB_FLUSH_ASID: u8 = 3;

bitflags::bitflags! {
    /// Instruction intercepts at 00Ch (table B-1).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct Intercept1: u32 {
        /// Physical maskable interrupts.
        const INTR = 1 << 0;
        /// Physical NMIs.
        const NMI = 1 << 1;
        /// SMIs.
        const SMI = 1 << 2;
        /// INIT.
        const INIT = 1 << 3;
        /// A virtual interrupt became deliverable.
        const VINTR = 1 << 4;
        /// CR0 writes that change bits other than TS and MP.
        const CR0_SEL_WRITE = 1 << 5;
        /// RDTSC.
        const RDTSC = 1 << 14;
        /// RDPMC.
        const RDPMC = 1 << 15;
        /// CPUID.
        const CPUID = 1 << 18;
        /// RSM.
        const RSM = 1 << 19;
        /// IRET.
        const IRET = 1 << 20;
        /// INTn.
        const INTN = 1 << 21;
        /// INVD.
        const INVD = 1 << 22;
        /// PAUSE.
        const PAUSE = 1 << 23;
        /// HLT.
        const HLT = 1 << 24;
        /// INVLPG.
        const INVLPG = 1 << 25;
        /// INVLPGA.
        const INVLPGA = 1 << 26;
        /// IN/OUT through the I/O permission map.
        const IOIO_PROT = 1 << 27;
        /// RDMSR/WRMSR through the MSR permission map.
        const MSR_PROT = 1 << 28;
        /// Task switches.
        const TASK_SWITCH = 1 << 29;
        /// FERR_FREEZE.
        const FERR_FREEZE = 1 << 30;
        /// Shutdown (triple fault).
        const SHUTDOWN = 1 << 31;
    }
}

bitflags::bitflags! {
    /// Instruction intercepts at 010h (table B-1). VMRUN must always be intercepted.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
    pub struct Intercept2: u32 {
        /// VMRUN.
        const VMRUN = 1 << 0;
        /// VMMCALL.
        const VMMCALL = 1 << 1;
        /// VMLOAD.
        const VMLOAD = 1 << 2;
        /// VMSAVE.
        const VMSAVE = 1 << 3;
        /// STGI.
        const STGI = 1 << 4;
        /// CLGI.
        const CLGI = 1 << 5;
        /// SKINIT.
        const SKINIT = 1 << 6;
        /// RDTSCP.
        const RDTSCP = 1 << 7;
        /// ICEBP.
        const ICEBP = 1 << 8;
        /// WBINVD and WBNOINVD.
        const WBINVD = 1 << 9;
        /// MONITOR and MONITORX.
        const MONITOR = 1 << 10;
        /// MWAIT and MWAITX.
        const MWAIT = 1 << 11;
        /// MWAIT when armed.
        const MWAIT_CONDITIONAL = 1 << 12;
        /// XSETBV.
        const XSETBV = 1 << 13;
        /// RDPRU.
        const RDPRU = 1 << 14;
    }
}

/// A segment in the state-save area (§15.5.1: selector, attributes, limit, base).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Segment {
    /// Selector.
    pub selector: u16,
    /// Descriptor bits 40-47 in 7:0 and 52-55 in 11:8.
    pub attrib: u16,
    /// Limit, in bytes (expanded by G).
    pub limit: u32,
    /// Base.
    pub base: u64,
}

/// A VMCB page, read and written through named fields.
#[derive(Debug)]
pub struct Vmcb<'a>(&'a mut [u8; 4096]);

impl<'a> Vmcb<'a> {
    /// Wraps the page.
    pub fn new(page: &'a mut [u8; 4096]) -> Self {
        Self(page)
    }

    /// Reads a field (zero-extended).
    pub fn read(&self, field: Field) -> u64 {
        let at = usize::from(field.offset);
        let mut bytes = [0u8; 8];
        let width = usize::from(field.width.min(8));
        bytes[..width].copy_from_slice(&self.0[at..at + width]);
        u64::from_le_bytes(bytes)
    }

    /// Writes a field (the value truncated to its width).
    pub fn write(&mut self, field: Field, value: u64) {
        let at = usize::from(field.offset);
        let width = usize::from(field.width.min(8));
        self.0[at..at + width].copy_from_slice(&value.to_le_bytes()[..width]);
    }

    /// Reads the segment at `offset` ([`save::CS`] ...).
    pub fn segment(&self, offset: u16) -> Segment {
        Segment {
            selector: self.read(f(offset, 2)) as u16,
            attrib: self.read(f(offset + 2, 2)) as u16,
            limit: self.read(f(offset + 4, 4)) as u32,
            base: self.read(f(offset + 8, 8)),
        }
    }

    /// Writes the segment at `offset`.
    pub fn set_segment(&mut self, offset: u16, s: Segment) {
        self.write(f(offset, 2), u64::from(s.selector));
        self.write(f(offset + 2, 2), u64::from(s.attrib));
        self.write(f(offset + 4, 4), u64::from(s.limit));
        self.write(f(offset + 8, 8), s.base);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_land_at_their_offsets() {
        let mut page = [0u8; 4096];
        let mut v = Vmcb::new(&mut page);
        v.write(control::EXITCODE, 0x7b);
        v.write(save::RIP, 0x1122_3344_5566_7788);
        v.write(control::TLB_CONTROL, 0x1ff);
        v.set_segment(
            save::CS,
            Segment {
                selector: 0x10,
                attrib: 0xa9b,
                limit: 0xffff_ffff,
                base: 0x1000,
            },
        );
        assert_eq!(v.read(control::EXITCODE), 0x7b);
        assert_eq!(v.read(control::TLB_CONTROL), 0xff, "truncated to one byte");
        assert_eq!(v.segment(save::CS).attrib, 0xa9b);
        assert_eq!(page[0x70], 0x7b);
        assert_eq!(page[0x578], 0x88);
        assert_eq!(page[0x57f], 0x11);
        assert_eq!(page[0x5c], 0xff);
        assert_eq!(page[0x5d], 0);
        assert_eq!(&page[0x410..0x412], &[0x10, 0]);
        assert_eq!(&page[0x412..0x414], &[0x9b, 0x0a]);
        assert_eq!(&page[0x418..0x420], &[0, 0x10, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn no_two_fields_overlap() {
        use control::*;
        use save::*;
        let mut fields = vec![
            CR_INTERCEPTS,
            EXCEPTION_INTERCEPTS,
            INTERCEPT1,
            INTERCEPT2,
            IOPM_BASE,
            MSRPM_BASE,
            TSC_OFFSET,
            ASID,
            TLB_CONTROL,
            VINTR,
            VINTR_VECTOR,
            INTERRUPT_SHADOW,
            EXITCODE,
            EXITINFO1,
            EXITINFO2,
            EXITINTINFO,
            NP_ENABLE,
            EVENTINJ,
            N_CR3,
            CLEAN_BITS,
            NEXT_RIP,
            CPL,
            EFER,
            CR4,
            CR3,
            CR0,
            DR7,
            DR6,
            RFLAGS,
            RIP,
            RSP,
            RAX,
            STAR,
            LSTAR,
            CSTAR,
            SFMASK,
            KERNEL_GS_BASE,
            SYSENTER_CS,
            SYSENTER_ESP,
            SYSENTER_EIP,
            CR2,
            G_PAT,
        ];
        for seg in [ES, CS, SS, DS, FS, GS, GDTR, LDTR, IDTR, TR] {
            fields.push(Field {
                offset: seg,
                width: 16,
            });
        }
        fields.sort_by_key(|f| f.offset);
        for pair in fields.windows(2) {
            assert!(
                pair[0].offset + u16::from(pair[0].width) <= pair[1].offset,
                "{:?} overlaps {:?}",
                pair[0],
                pair[1]
            );
        }
        assert!(
            fields
                .last()
                .is_some_and(|f| f.offset + u16::from(f.width) <= 4096)
        );
    }
}
