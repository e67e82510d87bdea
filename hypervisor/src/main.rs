//! Basalt: a Type-1 hypervisor for x86_64 (see docs/architecture.md).
//!
//! This binary is the thin ring-0 layer. The boot path is:
//! `entry.S` (Multiboot2 entry, long mode) → [`kmain`] → parse the boot
//! information and the command line (pure code in `basalt-boot`) → console
//! and log → boot summary.

#![no_std]
#![no_main]

extern crate alloc;

mod acpi;
mod arch;
mod common;
mod console;
mod fault;
mod fmtbuf;
mod hvm;
mod mm;
mod panic;
mod platform;
mod power;
mod stats;
mod time;
mod vcpu;
mod verdict;

use arch::x86_64::{self as x86, cpu};
use basalt_boot::cmdline::Options;
use basalt_boot::memmap::ByteSize;
use basalt_boot::multiboot2::{self, BootInfo};
pub use fmtbuf::StackString;
use log::{debug, info, warn};
use verdict::{Verdict, finish};

/// The version printed in the banner: crate version and `git describe`.
const VERSION: &str = env!("CARGO_PKG_VERSION");
const GIT_VERSION: &str = env!("BASALT_GIT_VERSION");

/// Rust entry point, called once by `entry.S` on the boot CPU with the
/// register values the loader left: `magic` (EAX) and `info_phys` (EBX).
#[unsafe(no_mangle)]
pub extern "C" fn kmain(magic: u32, info_phys: u32) -> ! {
    // Exceptions get reports from the first instruction on (boot GDT: the
    // code selector is already 0x08).
    x86::idt::load();
    console::init_early();
    let (tsc_hz, tsc_source) = time::init();

    let info = match read_boot_info(magic, info_phys) {
        Ok(info) => info,
        Err(reason) => {
            println!("Basalt: cannot boot: {reason}");
            finish(Verdict::Fail, "bad boot information")
        }
    };

    let options = Options::parse(info.cmdline.unwrap_or_default());
    let port_errors = console::configure(options.console, &options.com1, &options.com2);
    console::init_log(options.loglvl);
    if options.test_exit {
        verdict::enable_test_exit();
    }

    banner(&info, &options);
    for error in port_errors.iter().flatten() {
        warn!("console port not used: {error}");
    }
    report_options(&options);
    if options.hvm_fep {
        hvm::fep::enable();
    }
    debug!(
        "boot information at {info_phys:#x}: {} bytes, {} tags Basalt does not use",
        info.total_size, info.other_tags
    );
    if let Some((lower, upper)) = info.basic_meminfo {
        debug!("loader's basic memory info: {lower} KiB low, {upper} KiB from 1 MiB");
    }
    if let Some(sections) = info.elf_sections {
        let tables = basalt_boot::elf::find_symbol_tables(
            sections.headers,
            sections.num as usize,
            sections.entsize as usize,
        );
        debug!(
            "ELF sections: {} headers; symbol tables {:x?}",
            sections.num, tables
        );
    }
    if !options.rest.is_empty() {
        debug!("after `--` (for the control domain): \"{}\"", options.rest);
    }
    info!(
        "TSC: {}.{:03} MHz ({})",
        tsc_hz / 1_000_000,
        tsc_hz / 1_000 % 1_000,
        match tsc_source {
            time::TscSource::Cpuid15 => "CPUID leaf 0x15",
            time::TscSource::Cpuid16 => "CPUID leaf 0x16",
            time::TscSource::Pit => "calibrated against the PIT",
            time::TscSource::Assumed => "ASSUMED: neither CPUID nor the PIT gave it",
        }
    );
    match time::init_wall_clock() {
        Some(t) => info!(
            "wall clock: {:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC (the RTC; guests' RTCs start from it)",
            t.year, t.month, t.day, t.hour, t.minute, t.second
        ),
        None => {
            log::warn!("wall clock: the RTC could not be read; guests' RTCs start at 1970-01-01")
        }
    }
    summary(&info);

    let dom0 = common::domain::dom0_identity_bytes(&info, options.dom0_mem);
    let info_phys = match mm::init(&info, u64::from(info_phys), dom0) {
        Ok(at) => at as u32,
        Err(e) => {
            log::error!("memory: {e}");
            finish(Verdict::Fail, "memory manager");
        }
    };
    // The boot information is read again through the direct map (the boot
    // identity map is gone), where `mm::init` left it.
    let Ok(info) = read_boot_info(magic, info_phys) else {
        finish(
            Verdict::Fail,
            "boot information unreadable after the switch",
        );
    };
    let options = Options::parse(info.cmdline.unwrap_or_default());
    mm::log_summary();
    platform::start(&info, &options)
}

/// Checks the loader magic and parses the boot information.
pub fn read_boot_info(magic: u32, info_phys: u32) -> Result<BootInfo<'static>, BootError> {
    match magic {
        multiboot2::BOOTLOADER_MAGIC => {}
        multiboot2::MULTIBOOT1_BOOTLOADER_MAGIC => return Err(BootError::Multiboot1),
        other => return Err(BootError::NoMagic(other)),
    }
    let phys = u64::from(info_phys);
    let null = || BootError::Info(multiboot2::Error::Null);
    // The loader put the boot information at `info_phys`, below 4 GiB;
    // nothing writes it after boot (the frame allocator reserves it).
    let header: &[u8; 8] = mm::phys_slice(phys, 8)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(null)?;
    let total = multiboot2::total_size(header).map_err(BootError::Info)?;
    let bytes = mm::phys_slice(phys, total as usize).ok_or_else(null)?;
    multiboot2::parse(bytes).map_err(BootError::Info)
}

/// Why Basalt cannot use what the loader passed.
#[derive(Debug)]
pub enum BootError {
    /// A Multiboot (version 1) loader started Basalt.
    Multiboot1,
    /// Not started by a Multiboot loader at all.
    NoMagic(u32),
    /// The boot information is unusable.
    Info(multiboot2::Error),
}

impl core::fmt::Display for BootError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Multiboot1 => write!(
                f,
                "started by a Multiboot version 1 loader (EAX=0x2badb002), but Basalt needs \
                 Multiboot2: load it with GRUB 2's `multiboot2` command (not `multiboot`, \
                 not QEMU's -kernel); see README.md"
            ),
            Self::NoMagic(magic) => write!(
                f,
                "not started by a Multiboot2 loader (EAX=0x{magic:08x}, expected 0x36d76289): \
                 load it with GRUB 2's `multiboot2` command; see README.md"
            ),
            Self::Info(e) => write!(f, "{e}"),
        }
    }
}

fn banner(info: &BootInfo<'_>, options: &Options<'_>) {
    println!();
    println!(" ____                  _ _   ");
    println!("| __ )  __ _ ___  __ _| | |_ ");
    println!("|  _ \\ / _` / __|/ _` | | __|");
    println!("| |_) | (_| \\__ \\ (_| | | |_ ");
    println!("|____/ \\__,_|___/\\__,_|_|\\__|");
    println!();
    info!("Basalt hypervisor {VERSION} ({GIT_VERSION}) for x86_64");
    info!(
        "loaded by {}",
        info.loader_name.unwrap_or("an unnamed Multiboot2 loader")
    );
    info!("command line: \"{}\"", info.cmdline.unwrap_or_default());
    info!(
        "log level {}; console on{}{}{}",
        options.loglvl.name(),
        if options.console.com1 { " com1" } else { "" },
        if options.console.com2 { " com2" } else { "" },
        if options.console.com1 || options.console.com2 {
            ""
        } else {
            " nothing"
        },
    );
    let mut vendor = [0; 12];
    let mut brand = [0; 48];
    info!(
        "CPU: {} {} (APIC id {})",
        cpu::vendor(&mut vendor),
        cpu::brand(&mut brand).unwrap_or("(no brand string)"),
        cpu::apic_id()
    );
}

fn report_options(options: &Options<'static>) {
    if !options.unknown.is_empty() {
        // One line naming them all; a `--more` count if the list overflowed.
        let mut names = heapless_join::<256>(options.unknown.iter().copied());
        if options.unknown.dropped() > 0 {
            names.push_fmt(format_args!(" and {} more", options.unknown.dropped()));
        }
        warn!("unknown command-line options ignored: {}", names.as_str());
    }
    for invalid in options.invalid.iter() {
        warn!("command-line option {invalid}; using the default");
    }
}

fn summary(info: &BootInfo<'_>) {
    let map = &info.memory_map;
    if let Some(table) = info.efi_system_table {
        efi_summary(table);
    }
    info!(
        "physical memory map ({} regions, from the {} memory map):",
        map.regions().len(),
        if info.efi_memory_map { "EFI" } else { "e820" }
    );
    for r in map.regions() {
        info!(
            "  [{:#018x}-{:#018x}) {:<10} {}",
            r.start,
            r.end,
            r.kind.name(),
            ByteSize(r.len())
        );
    }
    if map.ignored_entries + map.clamped_entries + map.dropped_regions() > 0 {
        warn!(
            "memory map: {} entries ignored (empty or too many), {} cut at 2^64, {} regions dropped",
            map.ignored_entries,
            map.clamped_entries,
            map.dropped_regions()
        );
    }
    info!(
        "usable RAM: {} ({} bytes) in {} ranges, highest usable address {:#x}",
        ByteSize(map.usable_bytes()),
        map.usable_bytes(),
        map.usable().count(),
        map.usable_end()
    );
    let (start, end) = x86::image_phys_range();
    info!(
        "hypervisor image: [{start:#x}-{end:#x}) {}",
        ByteSize(end - start)
    );
    if info.modules.is_empty() {
        info!("boot modules: none");
    }
    for (i, m) in info.modules.iter().enumerate() {
        info!(
            "boot module {i}: [{:#x}-{:#x}) {} \"{}\"",
            m.start,
            m.end,
            ByteSize(m.len()),
            m.cmdline
        );
    }
    if info.modules.dropped() > 0 {
        warn!(
            "{} more boot modules ignored (at most {})",
            info.modules.dropped(),
            multiboot2::MAX_MODULES
        );
    }
    match info.rsdp() {
        Some(r) => info!(
            "ACPI: RSDP revision {} from {}, OEM \"{}\", RSDT {:#x}{}{}",
            r.revision,
            if Some(r) == info.rsdp_v2 {
                "Multiboot2 tag 15"
            } else {
                "Multiboot2 tag 14"
            },
            r.oem(),
            r.rsdt_address,
            r.xsdt_address.map(|_| ", XSDT ").unwrap_or_default(),
            HexOpt(r.xsdt_address),
        ),
        None if info.on_efi() => {
            warn!("ACPI: the loader passed no RSDP (on UEFI the BIOS areas are not searched)")
        }
        None => info!("ACPI: the loader passed no RSDP (the BIOS areas are searched later)"),
    }
    if let Some(r) = info.rsdp().filter(|r| !r.valid) {
        warn!(
            "ACPI: the RSDP's signature or checksum is wrong (revision {})",
            r.revision
        );
    }
    if info.efi_boot_services_active {
        warn!("the loader left UEFI boot services running; Basalt does not use them");
    }
}

/// Names the UEFI firmware from its system table (read, never called).
fn efi_summary(table: u64) {
    use basalt_boot::efi;
    let Some(st) = mm::phys_slice(table, efi::LEN).and_then(efi::SystemTable::parse) else {
        warn!("UEFI: no EFI system table signature at {table:#x} (the loader's tag is wrong)");
        return;
    };
    let mut buf = [0; efi::VENDOR_CHARS];
    let vendor = mm::phys_slice(st.vendor, 2 * efi::VENDOR_CHARS).map(|b| efi::vendor(b, &mut buf));
    info!(
        "UEFI {}.{:02} firmware \"{}\" revision {:#x}; EFI system table at {table:#x}; boot \
         services ended by the loader, not used",
        st.revision >> 16,
        st.revision & 0xffff,
        vendor.unwrap_or("?"),
        st.firmware_revision
    );
}

/// Prints an optional address in hex, or nothing.
struct HexOpt(Option<u64>);

impl core::fmt::Display for HexOpt {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self.0 {
            Some(v) => write!(f, "{v:#x}"),
            None => Ok(()),
        }
    }
}

fn heapless_join<const N: usize>(items: impl Iterator<Item = &'static str>) -> StackString<N> {
    let mut out = StackString::new();
    for (i, item) in items.enumerate() {
        out.push_fmt(format_args!("{}{item}", if i > 0 { " " } else { "" }));
    }
    out
}
