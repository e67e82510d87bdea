//! Per-CPU GDT and TSS (Intel SDM Vol. 3A §3.4.5, §8.7).

use x86_64::VirtAddr;
use x86_64::instructions::segmentation::{CS, DS, ES, SS, Segment};
use x86_64::structures::gdt::{Descriptor, GlobalDescriptorTable};
use x86_64::structures::tss::TaskStateSegment;

/// Kernel code selector (GDT entry 1), fixed so the IDT can name it.
pub const KERNEL_CS: u16 = 0x08;
/// Kernel data selector (GDT entry 2).
pub const KERNEL_DS: u16 = 0x10;
/// TSS selector (GDT entries 3-4).
pub const TSS_SELECTOR: u16 = 0x18;

/// This CPU's GDT and TSS addresses (for the VMCS host state).
pub fn current_bases() -> (u64, u64) {
    match super::percpu::current() {
        Some(c) => c.table_bases(),
        None => (0, 0),
    }
}

/// A CPU's descriptor tables.
#[derive(Debug)]
pub struct CpuTables {
    gdt: GlobalDescriptorTable,
    tss: TaskStateSegment,
}

impl CpuTables {
    /// Tables whose TSS has the given interrupt stack tops (IST1..IST3).
    pub fn new(ist_tops: [u64; 3]) -> Self {
        let mut tss = TaskStateSegment::new();
        let mut table = tss.interrupt_stack_table;
        for (slot, top) in table.iter_mut().zip(ist_tops) {
            *slot = VirtAddr::new(top);
        }
        tss.interrupt_stack_table = table;
        Self {
            gdt: GlobalDescriptorTable::new(),
            tss,
        }
    }

    /// The GDT's and TSS's addresses.
    pub fn bases(&self) -> (u64, u64) {
        (&raw const self.gdt as u64, &raw const self.tss as u64)
    }

    /// Builds the GDT (null, code, data, TSS) and loads GDT, segments and TSS
    /// on this CPU.
    pub fn load(&'static mut self) {
        let tss: &'static TaskStateSegment = &self.tss;
        let code = self.gdt.append(Descriptor::kernel_code_segment());
        let data = self.gdt.append(Descriptor::kernel_data_segment());
        let tss_sel = self.gdt.append(Descriptor::tss_segment(tss));
        debug_assert_eq!(code.0, KERNEL_CS);
        let gdt: &'static GlobalDescriptorTable = &self.gdt;
        gdt.load();
        // SAFETY (each block below): the selectors come from the GDT just
        // loaded: a 64-bit code segment, a flat data segment and an available
        // TSS that lives forever.
        // SAFETY: see above (code segment).
        unsafe { CS::set_reg(code) };
        // SAFETY: see above (data segment).
        unsafe { DS::set_reg(data) };
        // SAFETY: see above (data segment).
        unsafe { ES::set_reg(data) };
        // SAFETY: see above (data segment).
        unsafe { SS::set_reg(data) };
        // SAFETY: see above (TSS).
        unsafe { x86_64::instructions::tables::load_tss(tss_sel) };
    }
}
