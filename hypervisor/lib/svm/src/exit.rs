//! #VMEXIT codes (APM Vol. 2 appendix C "SVM Intercept Exit Codes") and the information that
//! comes with them in EXITINFO1/EXITINFO2 (§15.10.2 "IN and OUT Behavior", §15.25.6 "Nested
//! versus Guest Page Faults, Fault Ordering").

/// An exit code, as far as Basalt tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Read of CR`n` (0x00-0x0F).
    CrRead(u8),
    /// Write of CR`n` (0x10-0x1F).
    CrWrite(u8),
    /// Read of DR`n` (0x20-0x2F).
    DrRead(u8),
    /// Write of DR`n` (0x30-0x3F).
    DrWrite(u8),
    /// Exception `n` (0x40-0x5F).
    Exception(u8),
    /// A physical maskable interrupt (0x60).
    Intr,
    /// A physical NMI (0x61).
    Nmi,
    /// SMI (0x62).
    Smi,
    /// INIT (0x63).
    Init,
    /// A virtual interrupt can be taken (0x64).
    Vintr,
    /// RDTSC (0x6E).
    Rdtsc,
    /// CPUID (0x72).
    Cpuid,
    /// IRET (0x74): the guest's NMI handler is returning.
    Iret,
    /// `INT n` (0x75).
    Swint,
    /// INVD (0x76).
    Invd,
    /// PAUSE (0x77).
    Pause,
    /// HLT (0x78).
    Hlt,
    /// INVLPGA (0x7A).
    Invlpga,
    /// IN, OUT, INS, OUTS (0x7B).
    Ioio,
    /// RDMSR or WRMSR (0x7C; EXITINFO1 0 or 1).
    Msr,
    /// A task switch (0x7D).
    TaskSwitch,
    /// Shutdown: the guest triple-faulted (0x7F).
    Shutdown,
    /// VMRUN (0x80).
    Vmrun,
    /// VMMCALL (0x81).
    Vmmcall,
    /// VMLOAD (0x82).
    Vmload,
    /// VMSAVE (0x83).
    Vmsave,
    /// STGI (0x84).
    Stgi,
    /// CLGI (0x85).
    Clgi,
    /// SKINIT (0x86).
    Skinit,
    /// RDTSCP (0x87).
    Rdtscp,
    /// ICEBP (0x88).
    Icebp,
    /// WBINVD (0x89).
    Wbinvd,
    /// MONITOR (0x8A).
    Monitor,
    /// MWAIT (0x8B).
    Mwait,
    /// XSETBV (0x8D).
    Xsetbv,
    /// A nested page fault (0x400).
    Npf,
    /// VMRUN found the VMCB's state invalid (-1).
    Invalid,
    /// Any other code.
    Other(u64),
}

impl ExitCode {
    /// The exit code in the VMCB's EXITCODE field. Only the low 32 bits decide VMEXIT_INVALID:
    /// QEMU 7.2's TCG writes 0x0000_0000_FFFF_FFFF for it (measured).
    pub fn from_raw(raw: u64) -> Self {
        if raw as u32 == u32::MAX {
            return Self::Invalid;
        }
        let n = raw as u8;
        match raw {
            0x00..=0x0f => Self::CrRead(n),
            0x10..=0x1f => Self::CrWrite(n - 0x10),
            0x20..=0x2f => Self::DrRead(n - 0x20),
            0x30..=0x3f => Self::DrWrite(n - 0x30),
            0x40..=0x5f => Self::Exception(n - 0x40),
            0x60 => Self::Intr,
            0x61 => Self::Nmi,
            0x62 => Self::Smi,
            0x63 => Self::Init,
            0x64 => Self::Vintr,
            0x6e => Self::Rdtsc,
            0x72 => Self::Cpuid,
            0x74 => Self::Iret,
            0x75 => Self::Swint,
            0x76 => Self::Invd,
            0x77 => Self::Pause,
            0x78 => Self::Hlt,
            0x7a => Self::Invlpga,
            0x7b => Self::Ioio,
            0x7c => Self::Msr,
            0x7d => Self::TaskSwitch,
            0x7f => Self::Shutdown,
            0x80 => Self::Vmrun,
            0x81 => Self::Vmmcall,
            0x82 => Self::Vmload,
            0x83 => Self::Vmsave,
            0x84 => Self::Stgi,
            0x85 => Self::Clgi,
            0x86 => Self::Skinit,
            0x87 => Self::Rdtscp,
            0x88 => Self::Icebp,
            0x89 => Self::Wbinvd,
            0x8a => Self::Monitor,
            0x8b => Self::Mwait,
            0x8d => Self::Xsetbv,
            0x400 => Self::Npf,
            other => Self::Other(other),
        }
    }
}

/// EXITINFO1 of an IOIO intercept (§15.10.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoioInfo {
    /// The port.
    pub port: u16,
    /// IN/INS (else OUT/OUTS).
    pub is_in: bool,
    /// INS/OUTS.
    pub string: bool,
    /// With a REP prefix.
    pub rep: bool,
    /// Operand size in bytes (1, 2 or 4).
    pub size: u8,
    /// Address size in bits (16, 32 or 64), for INS/OUTS; 0 when the processor left bits 9:7
    /// clear (QEMU 7.2 TCG does for every I/O exit, measured: `out 0xe9, al` in real mode
    /// gives EXITINFO1 0xE90010), so an INS/OUTS emulator must then take the address size from
    /// the instruction and CS.
    pub address_bits: u8,
    /// The effective segment for OUTS (0 ES, 1 CS, 2 SS, 3 DS, 4 FS, 5 GS), as the SDM numbers
    /// them.
    pub segment: u8,
}

impl IoioInfo {
    /// Decodes EXITINFO1; `None` when no size bit or several size or address-size bits are set
    /// (reserved combinations). The
    /// next RIP is in EXITINFO2 on every CPU, with or without NRIPS.
    pub fn decode(info: u64) -> Option<Self> {
        let size = match (info >> 4) & 7 {
            1 => 1,
            2 => 2,
            4 => 4,
            _ => return None,
        };
        let address_bits = match (info >> 7) & 7 {
            1 => 16,
            2 => 32,
            4 => 64,
            0 => 0,
            _ => return None,
        };
        Some(Self {
            port: (info >> 16) as u16,
            is_in: info & 1 != 0,
            string: info & (1 << 2) != 0,
            rep: info & (1 << 3) != 0,
            size,
            address_bits,
            segment: ((info >> 10) & 7) as u8,
        })
    }
}

/// EXITINFO1 of a nested page fault (§15.25.6): a page-fault error code plus where the fault
/// happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NpfInfo {
    /// The nested entry was present (a protection fault).
    pub present: bool,
    /// A write.
    pub write: bool,
    /// An instruction fetch.
    pub fetch: bool,
    /// A reserved bit was set in a nested entry (a Basalt bug: the tables are its own).
    pub reserved: bool,
    /// The fault is on the final guest-physical address of the access.
    pub final_gpa: bool,
    /// The fault is on a guest page-table access during the guest's own walk.
    pub in_walk: bool,
}

impl NpfInfo {
    /// Decodes EXITINFO1 (EXITINFO2 holds the guest-physical address).
    pub fn decode(info: u64) -> Self {
        Self {
            present: info & 1 != 0,
            write: info & 2 != 0,
            reserved: info & 8 != 0,
            fetch: info & 0x10 != 0,
            final_gpa: info & (1 << 32) != 0,
            in_walk: info & (1 << 33) != 0,
        }
    }
}

/// How many exit counters [`counter`] spreads the exit codes over.
pub const COUNTERS: usize = 80;

/// The counter of exit code `raw` for statistics: the intercepts 60h-8Dh, #NPF and the 32
/// exception intercepts each get their own; CR/DR accesses and anything else share the last.
pub fn counter(raw: u64) -> usize {
    match raw {
        0x60..=0x8d => (raw - 0x60) as usize,
        0x400 => 46,
        0x40..=0x5f => 47 + (raw - 0x40) as usize,
        _ => COUNTERS - 1,
    }
}

/// The name of counter `index` ([`counter`]).
pub fn counter_name(index: usize) -> &'static str {
    const NAMES: [&str; 46] = [
        "INTR",
        "NMI",
        "SMI",
        "INIT",
        "VINTR",
        "CR0_SEL_WRITE",
        "IDTR_READ",
        "GDTR_READ",
        "LDTR_READ",
        "TR_READ",
        "IDTR_WRITE",
        "GDTR_WRITE",
        "LDTR_WRITE",
        "TR_WRITE",
        "RDTSC",
        "RDPMC",
        "PUSHF",
        "POPF",
        "CPUID",
        "RSM",
        "IRET",
        "SWINT",
        "INVD",
        "PAUSE",
        "HLT",
        "INVLPG",
        "INVLPGA",
        "IOIO",
        "MSR",
        "TASK_SWITCH",
        "FERR_FREEZE",
        "SHUTDOWN",
        "VMRUN",
        "VMMCALL",
        "VMLOAD",
        "VMSAVE",
        "STGI",
        "CLGI",
        "SKINIT",
        "RDTSCP",
        "ICEBP",
        "WBINVD",
        "MONITOR",
        "MWAIT",
        "MWAIT_CONDITIONAL",
        "XSETBV",
    ];
    const EXCEPTIONS: [&str; 32] = [
        "#DE", "#DB", "NMI(exc)", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "exc9", "#TS", "#NP",
        "#SS", "#GP", "#PF", "exc15", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "exc22", "exc23",
        "exc24", "exc25", "exc26", "exc27", "#HV", "#VC", "#SX", "exc31",
    ];
    match index {
        0..=45 => NAMES[index],
        46 => "NPF",
        47..=78 => EXCEPTIONS[index - 47],
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters() {
        assert_eq!(counter_name(counter(0x72)), "CPUID");
        assert_eq!(counter_name(counter(0x7b)), "IOIO");
        assert_eq!(counter_name(counter(0x81)), "VMMCALL");
        assert_eq!(counter_name(counter(0x8d)), "XSETBV");
        assert_eq!(counter_name(counter(0x400)), "NPF");
        assert_eq!(counter_name(counter(0x46)), "#UD");
        assert_eq!(counter_name(counter(0x14)), "other");
        assert!((0..0x1000).all(|raw| counter(raw) < COUNTERS));
    }

    #[test]
    fn codes() {
        assert_eq!(ExitCode::from_raw(0x72), ExitCode::Cpuid);
        assert_eq!(ExitCode::from_raw(0x13), ExitCode::CrWrite(3));
        assert_eq!(ExitCode::from_raw(0x18), ExitCode::CrWrite(8));
        assert_eq!(ExitCode::from_raw(0x4e), ExitCode::Exception(14));
        assert_eq!(ExitCode::from_raw(0x81), ExitCode::Vmmcall);
        assert_eq!(ExitCode::from_raw(0x400), ExitCode::Npf);
        assert_eq!(ExitCode::from_raw(u64::MAX), ExitCode::Invalid);
        assert_eq!(
            ExitCode::from_raw(0xffff_ffff),
            ExitCode::Invalid,
            "QEMU 7.2 TCG"
        );
        assert_eq!(ExitCode::from_raw(0x8e), ExitCode::Other(0x8e));
        for raw in 0..0x500u64 {
            let _ = ExitCode::from_raw(raw);
        }
    }

    #[test]
    fn ioio() {
        // `in al, 0x71`: IN, 8-bit, 16-bit addressing (real mode), port 0x71.
        let i = IoioInfo::decode(0x0071_0000 | 1 | (1 << 4) | (1 << 7)).unwrap();
        assert_eq!(
            (i.port, i.is_in, i.string, i.rep, i.size, i.address_bits),
            (0x71, true, false, false, 1, 16)
        );
        // `rep outsw` with a GS override, 64-bit addressing, port 0x1f0.
        let raw = 0x01f0_0000 | (1 << 2) | (1 << 3) | (2 << 4) | (4 << 7) | (5 << 10);
        let o = IoioInfo::decode(raw).unwrap();
        assert_eq!(
            (
                o.port,
                o.is_in,
                o.string,
                o.rep,
                o.size,
                o.address_bits,
                o.segment
            ),
            (0x1f0, false, true, true, 2, 64, 5)
        );
        assert_eq!(IoioInfo::decode(1 << 7), None, "no size");
        assert_eq!(IoioInfo::decode(3 << 4), None, "two sizes");
        assert_eq!(
            IoioInfo::decode((1 << 4) | (3 << 7)),
            None,
            "two address sizes"
        );
        // QEMU 7.2 TCG, `out 0xe9, al` in real mode (measured): no address-size bit.
        let q = IoioInfo::decode(0x00e9_0010).unwrap();
        assert_eq!(
            (q.port, q.is_in, q.string, q.size, q.address_bits),
            (0xe9, false, false, 1, 0)
        );
    }

    #[test]
    fn npf() {
        // Measured under QEMU TCG: a real-mode read of a hole, and a stack write.
        let r = NpfInfo::decode(0x1_0000_0004);
        assert!(r.final_gpa && !r.write && !r.present && !r.fetch && !r.in_walk);
        let w = NpfInfo::decode(0x1_0000_0006);
        assert!(w.final_gpa && w.write);
        let walk = NpfInfo::decode(0x2_0000_0001);
        assert!(walk.in_walk && walk.present && !walk.final_gpa);
    }
}
