//! Tests of the PVH start info writer and the domain layout.

use super::*;
use crate::elf::{ElfClass, MAX_SEGMENTS, Segment};
use crate::mem::SliceMemory;

/// `struct hvm_start_info` exactly as start_info.h declares it, to check our offsets against
/// the compiler's C layout.
#[repr(C)]
#[allow(dead_code)]
struct HvmStartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    nr_modules: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
    rsdp_paddr: u64,
    memmap_paddr: u64,
    memmap_entries: u32,
    reserved: u32,
}

/// `struct hvm_modlist_entry`.
#[repr(C)]
#[allow(dead_code)]
struct HvmModlistEntry {
    paddr: u64,
    size: u64,
    cmdline_paddr: u64,
    reserved: u64,
}

/// `struct hvm_memmap_table_entry`.
#[repr(C)]
#[allow(dead_code)]
struct HvmMemmapTableEntry {
    addr: u64,
    size: u64,
    kind: u32,
    reserved: u32,
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap())
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

/// The NUL-terminated string at `at`.
fn c_str(bytes: &[u8], at: u64) -> &str {
    let at = at as usize;
    let len = bytes[at..].iter().position(|&b| b == 0).unwrap();
    std::str::from_utf8(&bytes[at..at + len]).unwrap()
}

#[test]
fn layouts_match_the_c_header() {
    use core::mem::{offset_of, size_of};
    assert_eq!(size_of::<HvmStartInfo>() as u64, START_INFO_SIZE);
    assert_eq!(size_of::<HvmModlistEntry>() as u64, MODLIST_ENTRY_SIZE);
    assert_eq!(size_of::<HvmMemmapTableEntry>() as u64, MEMMAP_ENTRY_SIZE);
    // The offsets the header's diagram gives.
    assert_eq!(offset_of!(HvmStartInfo, magic), 0);
    assert_eq!(offset_of!(HvmStartInfo, version), 4);
    assert_eq!(offset_of!(HvmStartInfo, flags), 8);
    assert_eq!(offset_of!(HvmStartInfo, nr_modules), 12);
    assert_eq!(offset_of!(HvmStartInfo, modlist_paddr), 16);
    assert_eq!(offset_of!(HvmStartInfo, cmdline_paddr), 24);
    assert_eq!(offset_of!(HvmStartInfo, rsdp_paddr), 32);
    assert_eq!(offset_of!(HvmStartInfo, memmap_paddr), 40);
    assert_eq!(offset_of!(HvmStartInfo, memmap_entries), 48);
    assert_eq!(offset_of!(HvmStartInfo, reserved), 52);
    assert_eq!(offset_of!(HvmModlistEntry, cmdline_paddr), 16);
    assert_eq!(offset_of!(HvmMemmapTableEntry, kind), 16);

    // Our encoder puts each field where the C layout has it.
    let info = StartInfo {
        flags: 0x0102_0304,
        nr_modules: 0x1112_1314,
        modlist_paddr: 0x2122_2324_2526_2728,
        cmdline_paddr: 0x3132_3334_3536_3738,
        rsdp_paddr: 0x4142_4344_4546_4748,
        memmap_paddr: 0x5152_5354_5556_5758,
        memmap_entries: 0x6162_6364,
    };
    let bytes = info.to_bytes();
    assert_eq!(u32_at(&bytes, offset_of!(HvmStartInfo, magic)), 0x336e_c578);
    assert_eq!(u32_at(&bytes, offset_of!(HvmStartInfo, version)), 1);
    assert_eq!(u32_at(&bytes, offset_of!(HvmStartInfo, flags)), info.flags);
    assert_eq!(
        u32_at(&bytes, offset_of!(HvmStartInfo, nr_modules)),
        info.nr_modules
    );
    assert_eq!(
        u64_at(&bytes, offset_of!(HvmStartInfo, modlist_paddr)),
        info.modlist_paddr
    );
    assert_eq!(
        u64_at(&bytes, offset_of!(HvmStartInfo, cmdline_paddr)),
        info.cmdline_paddr
    );
    assert_eq!(
        u64_at(&bytes, offset_of!(HvmStartInfo, rsdp_paddr)),
        info.rsdp_paddr
    );
    assert_eq!(
        u64_at(&bytes, offset_of!(HvmStartInfo, memmap_paddr)),
        info.memmap_paddr
    );
    assert_eq!(
        u32_at(&bytes, offset_of!(HvmStartInfo, memmap_entries)),
        info.memmap_entries
    );
    assert_eq!(u32_at(&bytes, offset_of!(HvmStartInfo, reserved)), 0);
    // "xEn3" with the 0x80 bit of the E set, little-endian.
    assert_eq!(&bytes[..4], &[0x78, 0xc5, 0x6e, 0x33]);
    assert_eq!(StartInfo::from_bytes(&bytes), Some(info));

    let entry = ModlistEntry {
        paddr: 1,
        size: 2,
        cmdline_paddr: 3,
    };
    let bytes = entry.to_bytes();
    assert_eq!(
        [
            u64_at(&bytes, 0),
            u64_at(&bytes, 8),
            u64_at(&bytes, 16),
            u64_at(&bytes, 24)
        ],
        [1, 2, 3, 0]
    );
    let entry = MemmapEntry {
        addr: 0x10_0000,
        size: 0x20_0000,
        kind: MEMMAP_TYPE_ACPI,
    };
    let bytes = entry.to_bytes();
    assert_eq!(u64_at(&bytes, 0), 0x10_0000);
    assert_eq!(u64_at(&bytes, 8), 0x20_0000);
    assert_eq!(u32_at(&bytes, 16), 3);
    assert_eq!(u32_at(&bytes, 20), 0);
}

#[test]
fn from_bytes_checks_magic_and_version() {
    let mut bytes = StartInfo {
        memmap_paddr: 9,
        memmap_entries: 2,
        ..StartInfo::default()
    }
    .to_bytes();
    bytes[0] ^= 1;
    assert_eq!(StartInfo::from_bytes(&bytes), None);
    bytes[0] ^= 1;
    bytes[4] = 0; // version 0: no memory map fields
    let info = StartInfo::from_bytes(&bytes).unwrap();
    assert_eq!((info.memmap_paddr, info.memmap_entries), (0, 0));
}

#[test]
fn writes_start_info_tables_and_strings() {
    let mut backing = vec![0xeeu8; 0x20_0000];
    let mut mem = SliceMemory::new(&mut backing);
    let modules = [
        BootModule {
            gpa: 0x11_0000,
            size: 0x1234,
            cmdline: "rootfstype=ramfs",
        },
        BootModule {
            gpa: 0x12_0000,
            size: 7,
            cmdline: "",
        },
    ];
    let mut memmap = [MemmapEntry::default(); 8];
    let n = guest_memmap(0x20_0000, &mut memmap);
    let at = 0x10_2000;
    let plan = write_start_info(
        &mut mem,
        at,
        "console=hvc0 quiet",
        &modules,
        &memmap[..n],
        0xe_0000,
    )
    .unwrap();

    assert_eq!(plan.start_info_gpa, at);
    assert_eq!(plan.modlist_gpa, at + 56);
    assert_eq!(plan.memmap_gpa, at + 56 + 2 * 32);
    assert_eq!(plan.cmdline_gpa, at + 56 + 2 * 32 + 3 * 24);
    assert_eq!(
        plan.end - at,
        start_info_size("console=hvc0 quiet", &modules, n)
    );

    let m = mem.bytes();
    let si = at as usize;
    assert_eq!(u32_at(m, si), XEN_HVM_START_MAGIC_VALUE); // +0 magic
    assert_eq!(u32_at(m, si + 4), 1); // +4 version
    assert_eq!(u32_at(m, si + 8), 0); // +8 flags
    assert_eq!(u32_at(m, si + 12), 2); // +12 nr_modules
    assert_eq!(u64_at(m, si + 16), plan.modlist_gpa); // +16 modlist_paddr
    assert_eq!(u64_at(m, si + 24), plan.cmdline_gpa); // +24 cmdline_paddr
    assert_eq!(u64_at(m, si + 32), 0xe_0000); // +32 rsdp_paddr
    assert_eq!(u64_at(m, si + 40), plan.memmap_gpa); // +40 memmap_paddr
    assert_eq!(u32_at(m, si + 48), 3); // +48 memmap_entries
    assert_eq!(u32_at(m, si + 52), 0); // +52 reserved

    assert_eq!(c_str(m, plan.cmdline_gpa), "console=hvc0 quiet");
    let ml = plan.modlist_gpa as usize;
    assert_eq!(u64_at(m, ml), 0x11_0000);
    assert_eq!(u64_at(m, ml + 8), 0x1234);
    assert_eq!(c_str(m, u64_at(m, ml + 16)), "rootfstype=ramfs");
    assert_eq!(u64_at(m, ml + 24), 0);
    assert_eq!(u64_at(m, ml + 32), 0x12_0000);
    assert_eq!(u64_at(m, ml + 40), 7);
    let empty = u64_at(m, ml + 48);
    assert_ne!(empty, 0);
    assert_eq!(c_str(m, empty), "");
    assert_eq!(empty + 1, plan.end);

    let mm = plan.memmap_gpa as usize;
    let entries: Vec<(u64, u64, u32, u32)> = (0..3)
        .map(|i| {
            let e = mm + i * 24;
            (
                u64_at(m, e),
                u64_at(m, e + 8),
                u32_at(m, e + 16),
                u32_at(m, e + 20),
            )
        })
        .collect();
    assert_eq!(
        entries,
        [
            (0, 0x9_f000, 1, 0),
            (0x9_f000, 0x6_1000, 2, 0),
            (0x10_0000, 0x10_0000, 1, 0),
        ]
    );
    // Nothing written outside [at, end).
    assert_eq!(m[si - 1], 0xee);
    assert_eq!(m[plan.end as usize], 0xee);
}

#[test]
fn empty_lists_are_absent() {
    let mut backing = vec![0u8; 0x1000];
    let mut mem = SliceMemory::new(&mut backing);
    let plan = write_start_info(&mut mem, 0x101, "", &[], &[], 0).unwrap();
    // Rounded up to 8.
    assert_eq!(plan.start_info_gpa, 0x108);
    assert_eq!((plan.modlist_gpa, plan.memmap_gpa), (0, 0));
    assert_eq!(plan.cmdline_gpa, 0x108 + 56);
    assert_eq!(plan.end, 0x108 + 57);
    let info = StartInfo::from_bytes(mem.bytes()[0x108..0x108 + 56].try_into().unwrap()).unwrap();
    assert_eq!(
        info,
        StartInfo {
            cmdline_paddr: 0x108 + 56,
            ..StartInfo::default()
        }
    );
    assert_eq!(mem.bytes()[0x108 + 56], 0);
}

#[test]
fn start_info_that_does_not_fit_writes_nothing() {
    let mut backing = vec![0x55u8; 0xa0];
    let mut mem = SliceMemory::new(&mut backing);
    let err = write_start_info(&mut mem, 0x80, "a long command line here", &[], &[], 0);
    assert!(matches!(
        err,
        Err(MemoryError::OutOfRange { gpa: 0x80, .. })
    ));
    assert!(mem.bytes().iter().all(|&b| b == 0x55));
    assert!(write_start_info(&mut mem, u64::MAX - 3, "", &[], &[], 0).is_err());
    assert!(write_start_info(&mut mem, u64::MAX - 100, "", &[], &[], 0).is_err());
}

#[test]
fn memmaps() {
    let mut out = [MemmapEntry::default(); 8];
    let n = guest_memmap(64 << 20, &mut out);
    assert_eq!(
        &out[..n],
        &[
            MemmapEntry {
                addr: 0,
                size: 0x9_f000,
                kind: MEMMAP_TYPE_RAM
            },
            MemmapEntry {
                addr: 0x9_f000,
                size: 0x6_1000,
                kind: MEMMAP_TYPE_RESERVED
            },
            MemmapEntry {
                addr: 0x10_0000,
                size: (64 << 20) - 0x10_0000,
                kind: MEMMAP_TYPE_RAM
            },
        ]
    );
    assert_eq!(guest_memmap(ONE_MIB, &mut out), 2);
    assert_eq!(out[1].addr + out[1].size, ONE_MIB);
    assert_eq!(guest_memmap(0x5_0000, &mut out), 2);
    assert_eq!(out[0].size, 0x5_0000);
    assert_eq!(guest_memmap(0, &mut out), 1);
    assert_eq!(out[0].kind, MEMMAP_TYPE_RESERVED);
    assert_eq!(guest_memmap(u64::MAX, &mut out), 3);
    assert_eq!(out[2].size, u64::MAX - ONE_MIB);
}

fn image(lowest: u64, highest: u64) -> GuestImage {
    let mut segments = [Segment::default(); MAX_SEGMENTS];
    segments[0] = Segment {
        paddr: lowest,
        offset: 0x1000,
        filesz: highest - lowest,
        memsz: highest - lowest,
        flags: 5,
    };
    GuestImage {
        entry: lowest as u32,
        segments,
        segment_count: 1,
        class: ElfClass::Elf64,
        lowest,
        highest,
    }
}

#[test]
fn layout_after_the_image() {
    let kernel = image(0x100_0000, 0x123_4567);
    let layout = plan_layout(&kernel, 64 << 20, &[0x1_0000, 5, 0], 300).unwrap();
    assert_eq!(layout.start_info, 0x123_5000);
    assert_eq!(layout.start_info_end, 0x123_5000 + 300);
    assert_eq!(
        layout.initrds(),
        &[
            Region {
                gpa: 0x123_6000,
                size: 0x1_0000
            },
            Region {
                gpa: 0x124_6000,
                size: 5
            },
            Region {
                gpa: 0x124_7000,
                size: 0
            },
        ]
    );
    assert_eq!(layout.end, 0x124_7000);
    // No initrds.
    let layout = plan_layout(&kernel, 64 << 20, &[], 56).unwrap();
    assert_eq!(layout.initrds(), &[]);
    assert_eq!(layout.end, 0x123_5000 + 56);
    // Already aligned image end.
    let layout = plan_layout(&image(0x10_0000, 0x20_0000), 64 << 20, &[], 56).unwrap();
    assert_eq!(layout.start_info, 0x20_0000);
}

#[test]
fn layout_exact_fit_and_too_small() {
    let kernel = image(0x10_0000, 0x10_0800);
    let fits = plan_layout(&kernel, 0x10_3000, &[0x1000], 0x1000).unwrap();
    assert_eq!(fits.end, 0x10_3000);
    let err = plan_layout(&kernel, 0x10_2fff, &[0x1000], 0x1000).unwrap_err();
    assert_eq!(
        err,
        LayoutError::DoesNotFit {
            image_end: 0x10_0800,
            info_size: 0x1000,
            initrd_total: 0x1000,
            needed: 0x10_3000,
            memory: 0x10_2fff,
        }
    );
    let text = err.to_string();
    assert!(text.contains("memory=2M"), "{text}");
    assert!(text.contains("4096 bytes of initrds"), "{text}");
    // A large initrd.
    let err = plan_layout(&kernel, 64 << 20, &[100 << 20], 0x100).unwrap_err();
    assert!(err.to_string().contains("memory=102M"), "{err}");
    // Sizes that overflow.
    let err = plan_layout(&kernel, u64::MAX, &[u64::MAX], 0x100).unwrap_err();
    assert!(matches!(
        err,
        LayoutError::DoesNotFit {
            needed: u64::MAX,
            ..
        }
    ));
    let err = plan_layout(&kernel, u64::MAX, &[], u64::MAX).unwrap_err();
    assert!(matches!(
        err,
        LayoutError::DoesNotFit {
            needed: u64::MAX,
            ..
        }
    ));
}

#[test]
fn layout_skips_the_legacy_hole() {
    // An image ending just below the reserved range: the info moves to 1 MiB.
    let kernel = image(0x1_0000, 0x9_e800);
    let layout = plan_layout(&kernel, 2 << 20, &[0x100], 0x1000).unwrap();
    assert_eq!(layout.start_info, ONE_MIB);
    assert_eq!(layout.initrds()[0].gpa, ONE_MIB + 0x1000);
    // Room below the hole is used.
    let low = image(0x1_0000, 0x2_0000);
    let layout = plan_layout(&low, 2 << 20, &[0x7_0000, 0x1000], 0x100).unwrap();
    assert_eq!(layout.start_info, 0x2_0000);
    assert_eq!(layout.initrds()[0].gpa, 0x2_1000);
    assert_eq!(layout.initrds()[1].gpa, 0x9_1000);
    // One that would cross into the hole starts at 1 MiB.
    let layout = plan_layout(&low, 2 << 20, &[0x7_0000, 0x1_0000], 0x100).unwrap();
    assert_eq!(layout.initrds()[1].gpa, ONE_MIB);
    // So does one that would start inside it.
    let layout = plan_layout(&image(0x1_0000, 0xa_0000), 2 << 20, &[], 0).unwrap();
    assert_eq!(layout.start_info, ONE_MIB);
}

#[test]
fn layout_limits() {
    let kernel = image(0x10_0000, 0x20_0000);
    let err = plan_layout(&kernel, 1 << 30, &[1; MAX_INITRDS + 1], 0x100).unwrap_err();
    assert_eq!(err, LayoutError::TooManyInitrds { count: 17 });
    assert!(err.to_string().contains("at most 16"));
    assert!(plan_layout(&kernel, 1 << 30, &[1; MAX_INITRDS], 0x100).is_ok());

    let high = image(0xffff_f000, 0x1_0000_0000);
    let err = plan_layout(&high, 8 << 30, &[], 0x100).unwrap_err();
    assert_eq!(err, LayoutError::StartInfoAbove4G { end: 0x1_0000_0100 });
    assert!(err.to_string().contains("4 GiB"));
    let below = image(0xfff0_0000, 0xffff_f000);
    assert!(plan_layout(&below, 8 << 30, &[], 0x1000).is_ok());
}

#[test]
fn full_domain_build() {
    // What the hypervisor does: plan, copy the initrd, write the start info.
    let memory = 4u64 << 20;
    let kernel = image(0x10_0000, 0x13_0123);
    let initrd = b"initrd bytes";
    let mut described = [BootModule {
        gpa: 0,
        size: initrd.len() as u64,
        cmdline: "x=1",
    }];
    let mut memmap = [MemmapEntry::default(); 8];
    let n = guest_memmap(memory, &mut memmap);
    let info_size = start_info_size("console=hvc0", &described, n);
    let layout = plan_layout(&kernel, memory, &[initrd.len() as u64], info_size).unwrap();
    described[0].gpa = layout.initrds()[0].gpa;

    let mut backing = vec![0u8; memory as usize];
    let mut mem = SliceMemory::new(&mut backing);
    mem.write(described[0].gpa, initrd).unwrap();
    let plan = write_start_info(
        &mut mem,
        layout.start_info,
        "console=hvc0",
        &described,
        &memmap[..n],
        0,
    )
    .unwrap();
    assert_eq!(plan.start_info_gpa, layout.start_info);
    assert_eq!(plan.end, layout.start_info_end);
    assert!(plan.end <= described[0].gpa);
    let m = mem.bytes();
    assert_eq!(&m[described[0].gpa as usize..][..initrd.len()], initrd);
    assert_eq!(u64_at(m, plan.modlist_gpa as usize), described[0].gpa);
}
