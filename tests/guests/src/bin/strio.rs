//! String port I/O (`INS`/`OUTS`, with and without `REP`) as a hostile guest
//! uses it, each result checked inside the guest against what the processor
//! does (SDM Vol. 2B, INS/OUTS/REP):
//!
//! - `rep outsb` to the console port 0xE9 prints a line, forwards and with
//!   `RFLAGS.DF = 1` backwards from the end of a reversed string; an `FS`
//!   override takes the bytes from `FS.base + RSI`;
//! - byte, word and dword round trips through ports whose device models keep
//!   what is written: the UART scratch register (COM1 + 7, 8 bits), ACPI PM1
//!   enable (0x602, 16 bits, the writable enable bits) and the PCI
//!   configuration address (0xCF8, 32 bits, bits 1:0 read 0);
//! - `REP` with `DF = 1`, with `RCX = 0` (nothing moves), with the `0x67`
//!   prefix in 64-bit mode (only `ECX`/`ESI`/`EDI` count, the updates clear
//!   bits 63:32, `ESI` wraps from 0 to 0xFFFFFFFF: a page the guest maps at
//!   linear 0xFFFFF000);
//! - faults: a `rep insb` that runs into a page the guest left unmapped
//!   (`#PF`, error code 2, CR2 the page, `RCX`/`RDI` as after the last byte
//!   written), an `insw` straddling into it (nothing written), `INS` into a
//!   read-only page with `CR0.WP` (`#PF` error 3; without `WP` it writes), a
//!   non-canonical `RDI` (`#GP(0)`);
//! - a `rep outsb` and a `rep insb` of `count=` (default 1,000,000) bytes with
//!   interrupts enabled and the PIT at 100 Hz: the registers and data come
//!   out right, and timer interrupts are taken while each runs (the
//!   hypervisor splits a long `REP` and injects interrupts in between, as
//!   hardware may); timed in TSC ticks (figure
//!   `strio_long_rep_ticks_per_byte`).
//!
//! - at the end, a `rep outsw` to ACPI PM1 control whose second word is
//!   S5 | `SLP_EN`: the domain must power off right after that element.
//!
//! With `device`, it only does a `rep insb` into the local APIC page, which
//! is not RAM: Basalt must stop the domain (and no other).
//!
//! Memory: the guest needs `memory=16M` (it uses 4-10 MiB for its buffers and
//! page tables).

#![no_std]
#![no_main]

use basalt_test_guests::cpu::{self, GP, PF, checked};
use basalt_test_guests::{Checks, arg, arg_u64, println};
use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

basalt_test_guests::entry!(main);

/// The region mapped with 4 KiB pages by [`PT_LOW`] (the rest of the guest's
/// address space keeps the runtime's 2 MiB identity pages).
const REGION: u64 = 0x40_0000;
/// Left unmapped in the region.
const HOLE: u64 = REGION + 0x1000;
/// Read only in the region.
const READ_ONLY: u64 = REGION + 0x2000;
/// Scratch buffers (identity-mapped, writable) in the region.
const BUF: u64 = REGION + 0x10_0000;
/// The page table for [`REGION`].
const PT_LOW: u64 = 0x70_0000;
/// The page table for linear 0xFFE00000-0xFFFFFFFF: only its last page is
/// mapped, to [`TOP_PAGE`].
const PT_TOP: u64 = 0x70_1000;
/// Guest-physical page mapped at linear 0xFFFFF000.
const TOP_PAGE: u64 = 0x70_2000;
/// The long REP's buffer.
const LONG: u64 = 0x80_0000;

const P: u64 = 1;
const RW: u64 = 2;

const DEBUG_CONSOLE: u16 = 0xe9;
const UART_SCRATCH: u16 = 0x3f8 + 7;
const PM1_ENABLE: u16 = 0x602;
const PCI_ADDRESS: u16 = 0xcf8;
const IA32_FS_BASE: u32 = 0xc000_0100;

/// The registers a string instruction leaves and whether it faulted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct After {
    fault: Option<u8>,
    rcx: u64,
    rsi: u64,
    rdi: u64,
}

/// Runs one string I/O instruction given as `.byte` text of `$len` bytes,
/// with DX = `$port`, the given RCX/RSI/RDI and DF = `$df`; a fault
/// (`#PF`, `#GP`) is recorded and the instruction skipped.
macro_rules! string_io {
    ($bytes:literal, $len:literal, $df:expr, $port:expr, $rcx:expr, $rsi:expr, $rdi:expr) => {{
        let (mut rcx, mut rsi, mut rdi): (u64, u64, u64) = ($rcx, $rsi, $rdi);
        let df: u64 = u64::from($df);
        let port: u16 = $port;
        let f = || {
            // SAFETY: the instruction reads or writes only the buffers the
            // test set up (or faults, which `checked` recovers); DF is
            // cleared again right after it.
            unsafe {
                asm!(
                    "test {df}, {df}",
                    "jz 2f",
                    "std",
                    "2:",
                    concat!(".byte ", $bytes),
                    "cld",
                    df = in(reg) df,
                    in("dx") port,
                    inout("rcx") rcx,
                    inout("rsi") rsi,
                    inout("rdi") rdi,
                    options(nostack),
                )
            }
        };
        // SAFETY: the only instruction of `f` that may fault is the string
        // instruction of `$len` bytes; resuming after it runs `cld`.
        let fault = unsafe { checked($len, f) }.err();
        After {
            fault,
            rcx,
            rsi,
            rdi,
        }
    }};
}

/// A `REP` string instruction given as `.byte` text, run with interrupts
/// enabled (`sti; nop` first, so the STI shadow ends before it; `cli` after):
/// timer interrupts that arrive while it runs are taken in the middle of it
/// when the hypervisor splits it, as hardware may.
macro_rules! string_io_interruptible {
    ($bytes:literal, $port:expr, $rcx:expr, $rsi:expr, $rdi:expr) => {{
        let (mut rcx, mut rsi, mut rdi): (u64, u64, u64) = ($rcx, $rsi, $rdi);
        let port: u16 = $port;
        // SAFETY: the instruction reads or writes only the buffer the test
        // set up; the interrupt handler is installed and returns with IRET.
        unsafe {
            asm!(
                "sti",
                "nop",
                concat!(".byte ", $bytes),
                "cli",
                in("dx") port,
                inout("rcx") rcx,
                inout("rsi") rsi,
                inout("rdi") rdi,
            )
        };
        After {
            fault: None,
            rcx,
            rsi,
            rdi,
        }
    }};
}

/// PIT interrupts taken (IRQ 0 at vector 0x20).
static TICKS: AtomicU64 = AtomicU64::new(0);

fn on_interrupt(vector: u8) {
    if vector == 0x20 {
        TICKS.fetch_add(1, Ordering::Relaxed);
    }
    cpu::outb(0x20, 0x20);
}

/// PIT channel 0 at 100 Hz into IRQ 0, the only line the PICs let through
/// (a faster tick would leave the guest little else to do under Bochs at
/// 4 million instructions a second).
fn start_timer() {
    cpu::set_interrupt_handler(on_interrupt);
    cpu::init_pic_pair(0xfe, 0xff);
    let divisor: u16 = 11932;
    cpu::outb(0x43, 0x34);
    cpu::outb(0x40, divisor as u8);
    cpu::outb(0x40, (divisor >> 8) as u8);
}

fn peek(addr: u64) -> u8 {
    // SAFETY: every address the test reads is identity-mapped guest RAM.
    unsafe { core::ptr::read_volatile(addr as *const u8) }
}

fn poke(addr: u64, value: u8) {
    // SAFETY: every address the test writes is identity-mapped guest RAM
    // that nothing else uses.
    unsafe { core::ptr::write_volatile(addr as *mut u8, value) }
}

fn poke_bytes(addr: u64, bytes: &[u8]) {
    for (i, b) in bytes.iter().enumerate() {
        poke(addr + i as u64, *b);
    }
}

fn set_entry(table: u64, index: u64, value: u64) {
    // SAFETY: `table` is a page table of the guest's (identity-mapped RAM).
    unsafe { core::ptr::write_volatile((table + 8 * index) as *mut u64, value) }
}

fn entry(table: u64, index: u64) -> u64 {
    // SAFETY: as in `set_entry`.
    unsafe { core::ptr::read_volatile((table + 8 * index) as *const u64) }
}

/// Maps [`REGION`] with 4 KiB pages (identity, writable) but [`HOLE`]
/// (absent) and [`READ_ONLY`], and linear 0xFFFFF000 to [`TOP_PAGE`];
/// reloads CR3.
fn build_page_tables() {
    const ADDR: u64 = 0x000f_ffff_ffff_f000;
    let cr3 = cpu::read_cr3() & ADDR;
    let pdpt = entry(cr3, 0) & ADDR;
    let pd_low = entry(pdpt, 0) & ADDR;
    let pd_top = entry(pdpt, 3) & ADDR;
    for i in 0..512 {
        let page = REGION + (i << 12);
        let value = match page {
            HOLE => 0,
            READ_ONLY => page | P,
            _ => page | P | RW,
        };
        set_entry(PT_LOW, i, value);
        set_entry(PT_TOP, i, 0);
    }
    set_entry(PT_TOP, 511, TOP_PAGE | P | RW);
    set_entry(pd_low, REGION >> 21, PT_LOW | P | RW);
    set_entry(pd_top, 511, PT_TOP | P | RW);
    // SAFETY: the same CR3: flushes the translations just replaced.
    unsafe { asm!("mov cr3, {}", in(reg) cpu::read_cr3(), options(nostack)) };
}

/// The console, forwards, backwards and through FS.
fn console(checks: &mut Checks) {
    let text = b"strio: rep outsb says hello\n";
    poke_bytes(BUF, text);
    let a = string_io!(
        "0xf3, 0x6e",
        2,
        false,
        DEBUG_CONSOLE,
        text.len() as u64,
        BUF,
        0
    );
    checks.check(
        a == After {
            fault: None,
            rcx: 0,
            rsi: BUF + text.len() as u64,
            rdi: 0,
        },
        format_args!("rep outsb to 0xe9: RCX 0, RSI past the text ({a:x?})"),
    );
    let text = b"strio: backwards with DF=1\n";
    for (i, b) in text.iter().enumerate() {
        poke(BUF + (text.len() - 1 - i) as u64, *b);
    }
    let last = BUF + text.len() as u64 - 1;
    let a = string_io!(
        "0xf3, 0x6e",
        2,
        true,
        DEBUG_CONSOLE,
        text.len() as u64,
        last,
        0
    );
    checks.check(
        a.fault.is_none() && a.rcx == 0 && a.rsi == BUF - 1,
        format_args!("std; rep outsb: RSI steps down to one before the buffer ({a:x?})"),
    );
    // FS override: FS.base + RSI.
    let text = b"strio: read through FS\n";
    poke_bytes(BUF + 0x300, text);
    // SAFETY: FS is not used by the runtime.
    let set = unsafe { cpu::wrmsr_checked(IA32_FS_BASE, BUF + 0x200) };
    let a = string_io!(
        "0x64, 0xf3, 0x6e",
        3,
        false,
        DEBUG_CONSOLE,
        text.len() as u64,
        0x100,
        0
    );
    checks.check(
        set.is_ok() && a.fault.is_none() && a.rcx == 0 && a.rsi == 0x100 + text.len() as u64,
        format_args!("fs rep outsb reads FS.base + RSI ({a:x?})"),
    );
    // SAFETY: as above.
    let _ = unsafe { cpu::wrmsr_checked(IA32_FS_BASE, 0) };
    // RCX = 0: nothing is printed (the scenario forbids the text).
    poke_bytes(BUF, b"strio: SHOULD-NOT-PRINT\n");
    let a = string_io!("0xf3, 0x6e", 2, false, DEBUG_CONSOLE, 0, BUF, 0);
    checks.check(
        a == After {
            fault: None,
            rcx: 0,
            rsi: BUF,
            rdi: 0,
        },
        format_args!("rep outsb with RCX 0 moves nothing ({a:x?})"),
    );
}

/// One element out and back in, for each size.
fn round_trips(checks: &mut Checks) {
    let src = BUF + 0x400;
    let dst = BUF + 0x500;
    for value in [0xa5u8, 0x5a, 0x00, 0xff] {
        poke(src, value);
        poke(dst, !value);
        let o = string_io!("0x6e", 1, false, UART_SCRATCH, 77, src, 0);
        let i = string_io!("0x6c", 1, false, UART_SCRATCH, 77, 0, dst);
        checks.check(
            peek(dst) == value
                && o.fault.is_none()
                && i.fault.is_none()
                && (o.rcx, o.rsi, i.rcx, i.rdi) == (77, src + 1, 77, dst + 1),
            format_args!("outsb/insb through the UART scratch register keeps {value:#04x}"),
        );
    }
    // PM1 enable keeps its enable bits (GBL_EN, PWRBTN_EN, SLPBTN_EN,
    // RTC_EN, PCIEXP_WAKE_DIS here; not TMR_EN, which could raise an SCI).
    for value in [0x0720u16, 0x4100] {
        poke_bytes(src, &value.to_le_bytes());
        poke_bytes(dst, &[0xee; 4]);
        let o = string_io!("0x66, 0x6f", 2, false, PM1_ENABLE, 0, src, 0);
        let i = string_io!("0x66, 0x6d", 2, false, PM1_ENABLE, 0, 0, dst);
        let got = u16::from_le_bytes([peek(dst), peek(dst + 1)]);
        checks.check(
            got == value && peek(dst + 2) == 0xee && o.rsi == src + 2 && i.rdi == dst + 2,
            format_args!("outsw/insw through PM1 enable keeps {value:#06x} (read {got:#06x})"),
        );
    }
    cpu::outw(PM1_ENABLE, 0);
    for value in [0x8000_1234u32, 0x0bad_cafc] {
        poke_bytes(src, &value.to_le_bytes());
        poke_bytes(dst, &[0xee; 8]);
        let o = string_io!("0x6f", 1, false, PCI_ADDRESS, 0, src, 0);
        let i = string_io!("0x6d", 1, false, PCI_ADDRESS, 0, 0, dst);
        let got = u32::from_le_bytes([peek(dst), peek(dst + 1), peek(dst + 2), peek(dst + 3)]);
        checks.check(
            got == value && peek(dst + 4) == 0xee && o.rsi == src + 4 && i.rdi == dst + 4,
            format_args!("outsd/insd through the PCI address port keeps {value:#010x}"),
        );
    }
    cpu::outl(PCI_ADDRESS, 0);
    // REP with DF = 1, words: four words out (the last is the lowest), then
    // four in, downwards; the bytes around stay.
    poke_bytes(src, &[0x20, 0x01, 0x00, 0x04, 0x00, 0x02, 0x21, 0x07]);
    let o = string_io!("0x66, 0xf3, 0x6f", 3, true, PM1_ENABLE, 4, src + 6, 0);
    poke_bytes(dst, &[0xee; 12]);
    let i = string_io!("0x66, 0xf3, 0x6d", 3, true, PM1_ENABLE, 4, 0, dst + 8);
    let ok_bytes = (0..12).all(|k| {
        let want = match k {
            0 | 1 | 10 | 11 => 0xee,
            k if k % 2 == 0 => 0x20,
            _ => 0x01,
        };
        peek(dst + k) == want
    });
    checks.check(
        ok_bytes && (o.rcx, o.rsi, i.rcx, i.rdi) == (0, src - 2, 0, dst),
        format_args!(
            "std; rep outsw/insw: 4 words each way, RSI/RDI step down by 2 ({o:x?} {i:x?})"
        ),
    );
    cpu::outw(PM1_ENABLE, 0);
}

/// The 0x67 prefix in 64-bit mode.
fn address_size(checks: &mut Checks) {
    poke(TOP_PAGE + 0xfff, 0x6b);
    // addr32 std; rep outsb from ESI = 1: linear 1, 0, then 0xFFFFFFFF
    // (the top page): the scratch register keeps that last byte. The upper
    // halves of RCX and RSI are ignored, then cleared.
    let a = string_io!(
        "0x67, 0xf3, 0x6e",
        3,
        true,
        UART_SCRATCH,
        0x7_0000_0003,
        0xabcd_0000_0000_0001,
        0
    );
    let got = cpu::inb(UART_SCRATCH);
    checks.check(
        a == After {
            fault: None,
            rcx: 0,
            rsi: 0xffff_fffe,
            rdi: 0,
        } && got == 0x6b,
        format_args!("addr32 rep outsb wraps ESI 0 -> 0xffffffff and clears RSI[63:32] ({a:x?}, last byte {got:#04x})"),
    );
    cpu::outb(UART_SCRATCH, 0x3c);
    poke_bytes(BUF + 0x600, &[0; 6]);
    let a = string_io!(
        "0x67, 0xf3, 0x6c",
        3,
        false,
        UART_SCRATCH,
        0xffff_0000_0000_0004,
        0,
        0x1234_5678_0000_0000 | (BUF + 0x601)
    );
    let bytes = [0, 1, 2, 3, 4, 5].map(|k| peek(BUF + 0x600 + k));
    checks.check(
        a.fault.is_none()
            && a.rcx == 0
            && a.rdi == BUF + 0x605
            && bytes == [0, 0x3c, 0x3c, 0x3c, 0x3c, 0],
        format_args!("addr32 rep insb uses EDI and ECX only ({a:x?}, {bytes:x?})"),
    );
}

/// Faults in the middle of a REP and on a single element.
fn faults(checks: &mut Checks) {
    cpu::outb(UART_SCRATCH, 0x77);
    poke_bytes(HOLE - 8, &[0; 8]);
    let a = string_io!("0xf3, 0x6c", 2, false, UART_SCRATCH, 10, 0, HOLE - 3);
    let cr2 = cpu::read_cr2();
    let code = cpu::last_fault_error_code();
    let bytes = [8, 7, 6, 5, 4, 3, 2, 1].map(|k| peek(HOLE - k));
    checks.check(
        a == After {
            fault: Some(PF),
            rcx: 7,
            rsi: 0,
            rdi: HOLE,
        } && cr2 == HOLE
            && code == 2
            && bytes == [0, 0, 0, 0, 0, 0x77, 0x77, 0x77],
        format_args!("rep insb into an unmapped page: #PF code {code:#x} CR2 {cr2:#x}, RCX 7, RDI at the hole ({a:x?})"),
    );
    poke(HOLE - 1, 0);
    let a = string_io!("0x66, 0xf3, 0x6d", 3, false, UART_SCRATCH, 2, 0, HOLE - 1);
    let cr2 = cpu::read_cr2();
    checks.check(
        a.fault == Some(PF)
            && (a.rcx, a.rdi) == (2, HOLE - 1)
            && cr2 == HOLE
            && peek(HOLE - 1) == 0,
        format_args!(
            "rep insw straddling into the hole faults before writing ({a:x?}, CR2 {cr2:#x})"
        ),
    );
    let a = string_io!("0xf3, 0x6e", 2, false, 0x80, 100, HOLE + 0xfff, 0);
    let (cr2, code) = (cpu::read_cr2(), cpu::last_fault_error_code());
    checks.check(
        a.fault == Some(PF)
            && (a.rcx, a.rsi) == (100, HOLE + 0xfff)
            && cr2 == HOLE + 0xfff
            && code == 0,
        format_args!("rep outsb from the hole: #PF code {code:#x} CR2 {cr2:#x} ({a:x?})"),
    );
    // INS into a read-only page: with CR0.WP a #PF (present, write), without
    // it the supervisor write goes through.
    const CR0_WP: u64 = 1 << 16;
    let cr0 = cpu::read_cr0();
    // SAFETY: only CR0.WP changes; the guest's own pages are writable.
    let _ = unsafe { cpu::write_cr0_checked(cr0 | CR0_WP) };
    poke(BUF, 0);
    let a = string_io!("0x6c", 1, false, UART_SCRATCH, 0, 0, READ_ONLY + 5);
    let (cr2, code) = (cpu::read_cr2(), cpu::last_fault_error_code());
    checks.check(
        a.fault == Some(PF) && a.rdi == READ_ONLY + 5 && cr2 == READ_ONLY + 5 && code == 3,
        format_args!("insb into a read-only page with CR0.WP: #PF code {code:#x} CR2 {cr2:#x}"),
    );
    // SAFETY: as above.
    let _ = unsafe { cpu::write_cr0_checked(cr0 & !CR0_WP) };
    let a = string_io!("0x6c", 1, false, UART_SCRATCH, 0, 0, READ_ONLY + 5);
    checks.check(
        a.fault.is_none() && a.rdi == READ_ONLY + 6 && peek(READ_ONLY + 5) == 0x77,
        format_args!("insb into a read-only page without CR0.WP writes ({a:x?})"),
    );
    // SAFETY: restores the CR0 read above.
    let _ = unsafe { cpu::write_cr0_checked(cr0) };
    let a = string_io!("0x6c", 1, false, UART_SCRATCH, 0, 0, 0x8000_0000_0000);
    let code = cpu::last_fault_error_code();
    checks.check(
        a.fault == Some(GP) && code == 0 && a.rdi == 0x8000_0000_0000,
        format_args!("insb at a non-canonical RDI: #GP({code})"),
    );
}

/// A long `rep outsb` and `rep insb`, with the PIT interrupting at 100 Hz:
/// a `REP` done in one piece would take at most one or two interrupts (after
/// it), one split by the hypervisor takes them as they come.
fn long_rep(checks: &mut Checks, count: u64) {
    start_timer();
    for k in 0..count {
        poke(LONG + k, (k % 251) as u8);
    }
    poke(LONG + count, 0x99);
    println!("strio: long rep outsb of {count} bytes begins");
    let ticks0 = TICKS.load(Ordering::Relaxed);
    let t0 = cpu::rdtsc();
    let o = string_io_interruptible!("0xf3, 0x6e", UART_SCRATCH, count, LONG, 0);
    let t1 = cpu::rdtsc();
    let ticks_out = TICKS.load(Ordering::Relaxed) - ticks0;
    let last = cpu::inb(UART_SCRATCH);
    println!("strio: long rep outsb done");
    checks.check(
        o == After {
            fault: None,
            rcx: 0,
            rsi: LONG + count,
            rdi: 0,
        } && last == ((count - 1) % 251) as u8,
        format_args!("rep outsb of {count} bytes: RCX 0, RSI at the end, last byte {last:#04x}"),
    );
    cpu::outb(UART_SCRATCH, 0xc3);
    println!("strio: long rep insb of {count} bytes begins");
    let ticks0 = TICKS.load(Ordering::Relaxed);
    let t2 = cpu::rdtsc();
    let i = string_io_interruptible!("0xf3, 0x6c", UART_SCRATCH, count, 0, LONG);
    let t3 = cpu::rdtsc();
    let ticks_in = TICKS.load(Ordering::Relaxed) - ticks0;
    // Mask the timer again.
    cpu::outb(0x21, 0xff);
    println!("strio: long rep insb done");
    let mut wrong = 0u64;
    for k in 0..count {
        if peek(LONG + k) != 0xc3 {
            wrong += 1;
        }
    }
    checks.check(
        i == After {
            fault: None,
            rcx: 0,
            rsi: 0,
            rdi: LONG + count,
        } && wrong == 0
            && peek(LONG + count) == 0x99,
        format_args!("rep insb of {count} bytes: RCX 0, RDI at the end, {wrong} bytes wrong, the byte after kept"),
    );
    checks.check(
        ticks_out >= 10 && ticks_in >= 10,
        format_args!(
            "timer interrupts were taken during the long REPs: {ticks_out} during rep outsb, \
             {ticks_in} during rep insb"
        ),
    );
    let per_byte = (t1 - t0 + t3 - t2) / (2 * count.max(1));
    println!("strio: long REP {} + {} TSC ticks", t1 - t0, t3 - t2);
    println!("BASALT-FIGURE: strio_long_rep_ticks_per_byte={per_byte}");
}

/// `rep outsw` to PM1 control: a harmless word, then `SLP_TYP` = S5 with
/// `SLP_EN` (soft off), then a word that must never be written (`SLP_TYP` 7
/// with `SLP_EN`: Basalt would log an unsupported sleep state). Returns only
/// if the domain did not power off after the second element.
fn power_off_by_outs() {
    const PM1_CONTROL: u16 = 0x604;
    let words: [u16; 3] = [0x0000, (5 << 10) | (1 << 13), 0xffff];
    for (i, w) in words.iter().enumerate() {
        poke_bytes(BUF + 0x700 + 2 * i as u64, &w.to_le_bytes());
    }
    println!("strio: powering off with rep outsw to PM1 control");
    let _ = string_io!("0x66, 0xf3, 0x6f", 3, false, PM1_CONTROL, 3, BUF + 0x700, 0);
}

fn main(cmdline: &str) -> u32 {
    build_page_tables();
    if arg(cmdline, "device").is_some() {
        // A hostile INS into the local APIC page (guest-physical 0xFEE00000,
        // identity-mapped): not RAM, so Basalt must stop this domain, and
        // only this one.
        println!("strio: rep insb into the local APIC page");
        let _ = string_io!("0xf3, 0x6c", 2, false, UART_SCRATCH, 16, 0, 0xfee0_0000);
        return basalt_test_guests::fail!("rep insb into the APIC page came back");
    }
    let mut checks = Checks::new();
    console(&mut checks);
    round_trips(&mut checks);
    address_size(&mut checks);
    faults(&mut checks);
    long_rep(
        &mut checks,
        arg_u64(cmdline, "count", 1_000_000).clamp(1, 0x10_0000),
    );
    let code = checks.finish();
    if code != 0 {
        return code;
    }
    // The exit code is set first: the power-off ends the domain at once.
    basalt_test_guests::hypercall::set_exit_code(0);
    power_off_by_outs();
    basalt_test_guests::fail!("rep outsw of S5 | SLP_EN to PM1 control did not power off")
}
