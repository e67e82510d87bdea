//! Tests of the bzImage parser, boot_params, page tables and GDT.

use super::*;
use crate::mem::SliceMemory;
use core::mem::{offset_of, size_of};

/// `struct setup_header` as `arch/x86/include/uapi/asm/bootparam.h` declares it.
#[repr(C, packed)]
#[allow(dead_code)]
struct SetupHeader {
    setup_sects: u8,
    root_flags: u16,
    syssize: u32,
    ram_size: u16,
    vid_mode: u16,
    root_dev: u16,
    boot_flag: u16,
    jump: u16,
    header: u32,
    version: u16,
    realmode_swtch: u32,
    start_sys_seg: u16,
    kernel_version: u16,
    type_of_loader: u8,
    loadflags: u8,
    setup_move_size: u16,
    code32_start: u32,
    ramdisk_image: u32,
    ramdisk_size: u32,
    bootsect_kludge: u32,
    heap_end_ptr: u16,
    ext_loader_ver: u8,
    ext_loader_type: u8,
    cmd_line_ptr: u32,
    initrd_addr_max: u32,
    kernel_alignment: u32,
    relocatable_kernel: u8,
    min_alignment: u8,
    xloadflags: u16,
    cmdline_size: u32,
    hardware_subarch: u32,
    hardware_subarch_data: u64,
    payload_offset: u32,
    payload_length: u32,
    setup_data: u64,
    pref_address: u64,
    init_size: u32,
    handover_offset: u32,
    kernel_info_offset: u32,
}

/// `struct boot_params` (bootparam.h), with the sub-structures as byte arrays.
#[repr(C, packed)]
#[allow(dead_code)]
struct BootParams {
    screen_info: [u8; 0x40],
    apm_bios_info: [u8; 0x14],
    _pad2: [u8; 4],
    tboot_addr: u64,
    ist_info: [u8; 0x10],
    acpi_rsdp_addr: u64,
    _pad3: [u8; 8],
    hd0_info: [u8; 16],
    hd1_info: [u8; 16],
    sys_desc_table: [u8; 0x10],
    olpc_ofw_header: [u8; 0x10],
    ext_ramdisk_image: u32,
    ext_ramdisk_size: u32,
    ext_cmd_line_ptr: u32,
    _pad4: [u8; 112],
    cc_blob_address: u32,
    edid_info: [u8; 0x80],
    efi_info: [u8; 0x20],
    alt_mem_k: u32,
    scratch: u32,
    e820_entries: u8,
    eddbuf_entries: u8,
    edd_mbr_sig_buf_entries: u8,
    kbd_status: u8,
    secure_boot: u8,
    _pad5: [u8; 2],
    sentinel: u8,
    _pad6: [u8; 1],
    hdr: SetupHeader,
    _pad7: [u8; 0x290 - 0x1f1 - size_of::<SetupHeader>()],
    edd_mbr_sig_buffer: [u32; 16],
    e820_table: [[u8; 20]; 128],
    _pad8: [u8; 48],
    eddbuf: [[u8; 82]; 6],
    _pad9: [u8; 276],
}

#[test]
fn offsets_match_bootparam_h() {
    assert_eq!(size_of::<BootParams>(), 4096);
    assert_eq!(HDR_OFFSET + size_of::<SetupHeader>(), HDR_END);
    let h = |o: usize| HDR_OFFSET + o;
    assert_eq!(
        offset_of!(BootParams, acpi_rsdp_addr),
        offset::ACPI_RSDP_ADDR
    );
    assert_eq!(
        offset_of!(BootParams, ext_ramdisk_image),
        offset::EXT_RAMDISK_IMAGE
    );
    assert_eq!(
        offset_of!(BootParams, ext_ramdisk_size),
        offset::EXT_RAMDISK_SIZE
    );
    assert_eq!(
        offset_of!(BootParams, ext_cmd_line_ptr),
        offset::EXT_CMD_LINE_PTR
    );
    assert_eq!(offset_of!(BootParams, e820_entries), offset::E820_ENTRIES);
    assert_eq!(offset_of!(BootParams, sentinel), offset::SENTINEL);
    assert_eq!(offset_of!(BootParams, hdr), HDR_OFFSET);
    assert_eq!(offset_of!(BootParams, e820_table), offset::E820_TABLE);
    assert_eq!(h(offset_of!(SetupHeader, setup_sects)), offset::SETUP_SECTS);
    assert_eq!(h(offset_of!(SetupHeader, vid_mode)), offset::VID_MODE);
    assert_eq!(h(offset_of!(SetupHeader, boot_flag)), offset::BOOT_FLAG);
    assert_eq!(h(offset_of!(SetupHeader, jump)), offset::JUMP);
    assert_eq!(h(offset_of!(SetupHeader, header)), offset::HEADER);
    assert_eq!(h(offset_of!(SetupHeader, version)), offset::VERSION);
    assert_eq!(
        h(offset_of!(SetupHeader, type_of_loader)),
        offset::TYPE_OF_LOADER
    );
    assert_eq!(h(offset_of!(SetupHeader, loadflags)), offset::LOADFLAGS);
    assert_eq!(
        h(offset_of!(SetupHeader, code32_start)),
        offset::CODE32_START
    );
    assert_eq!(
        h(offset_of!(SetupHeader, ramdisk_image)),
        offset::RAMDISK_IMAGE
    );
    assert_eq!(
        h(offset_of!(SetupHeader, ramdisk_size)),
        offset::RAMDISK_SIZE
    );
    assert_eq!(
        h(offset_of!(SetupHeader, heap_end_ptr)),
        offset::HEAP_END_PTR
    );
    assert_eq!(
        h(offset_of!(SetupHeader, cmd_line_ptr)),
        offset::CMD_LINE_PTR
    );
    assert_eq!(
        h(offset_of!(SetupHeader, initrd_addr_max)),
        offset::INITRD_ADDR_MAX
    );
    assert_eq!(
        h(offset_of!(SetupHeader, kernel_alignment)),
        offset::KERNEL_ALIGNMENT
    );
    assert_eq!(
        h(offset_of!(SetupHeader, relocatable_kernel)),
        offset::RELOCATABLE_KERNEL
    );
    assert_eq!(h(offset_of!(SetupHeader, xloadflags)), offset::XLOADFLAGS);
    assert_eq!(
        h(offset_of!(SetupHeader, cmdline_size)),
        offset::CMDLINE_SIZE
    );
    assert_eq!(
        h(offset_of!(SetupHeader, hardware_subarch)),
        offset::HARDWARE_SUBARCH
    );
    assert_eq!(
        h(offset_of!(SetupHeader, payload_offset)),
        offset::PAYLOAD_OFFSET
    );
    assert_eq!(
        h(offset_of!(SetupHeader, payload_length)),
        offset::PAYLOAD_LENGTH
    );
    assert_eq!(
        h(offset_of!(SetupHeader, pref_address)),
        offset::PREF_ADDRESS
    );
    assert_eq!(h(offset_of!(SetupHeader, init_size)), offset::INIT_SIZE);
}

fn set(image: &mut [u8], at: usize, bytes: &[u8]) {
    image[at..at + bytes.len()].copy_from_slice(bytes);
}

/// A fake bzImage like a Linux 6.x x86_64 one: protocol 2.15, 27 setup sectors, relocatable,
/// 2 MiB aligned, pref_address 16 MiB, and `kernel` bytes of protected-mode code.
fn fake_bzimage(kernel: usize) -> Vec<u8> {
    let setup_sects = 27usize;
    let mut img = vec![0u8; (setup_sects + 1) * 512 + kernel];
    set(&mut img, offset::SETUP_SECTS, &[setup_sects as u8]);
    set(&mut img, offset::BOOT_FLAG, &BOOT_FLAG.to_le_bytes());
    // jump: `eb 6a` (to 0x26c: the header ends at 0x202 + 0x6a).
    set(&mut img, offset::JUMP, &[0xeb, 0x6a]);
    set(&mut img, offset::HEADER, b"HdrS");
    set(&mut img, offset::VERSION, &0x020fu16.to_le_bytes());
    set(&mut img, offset::LOADFLAGS, &[LOADED_HIGH]);
    set(&mut img, offset::CODE32_START, &0x10_0000u32.to_le_bytes());
    set(
        &mut img,
        offset::INITRD_ADDR_MAX,
        &0x7fff_ffffu32.to_le_bytes(),
    );
    set(
        &mut img,
        offset::KERNEL_ALIGNMENT,
        &0x20_0000u32.to_le_bytes(),
    );
    set(&mut img, offset::RELOCATABLE_KERNEL, &[1]);
    set(&mut img, offset::XLOADFLAGS, &0x7fu16.to_le_bytes());
    set(&mut img, offset::CMDLINE_SIZE, &2047u32.to_le_bytes());
    set(&mut img, offset::PAYLOAD_OFFSET, &0x3b4u32.to_le_bytes());
    set(&mut img, offset::PAYLOAD_LENGTH, &0x1234u32.to_le_bytes());
    set(&mut img, offset::PREF_ADDRESS, &0x100_0000u64.to_le_bytes());
    set(&mut img, offset::INIT_SIZE, &0x200_0000u32.to_le_bytes());
    // A byte after the header (0x26c) that must not be copied.
    img[HDR_END] = 0xcc;
    img[(setup_sects + 1) * 512] = 0x90;
    img
}

#[test]
fn parses_a_bzimage() {
    let img = fake_bzimage(4096);
    let k = parse_bzimage(&img).unwrap();
    assert_eq!(k.setup_sects, 27);
    assert_eq!(k.version, 0x020f);
    assert_eq!(k.kernel_offset, 28 * 512);
    assert_eq!(k.kernel_size, 4096);
    assert_eq!(k.header_len, HDR_END - HDR_OFFSET);
    assert_eq!(k.header(), &img[HDR_OFFSET..HDR_END]);
    assert_eq!(k.kernel_alignment, 0x20_0000);
    assert!(k.relocatable);
    assert_eq!(
        k.xloadflags & XLF_CAN_BE_LOADED_ABOVE_4G,
        XLF_CAN_BE_LOADED_ABOVE_4G
    );
    assert_eq!(k.cmdline_size, 2047);
    assert_eq!(k.payload_offset, 0x3b4);
    assert_eq!(k.payload_length, 0x1234);
    assert_eq!(k.pref_address, 0x100_0000);
    assert_eq!(k.init_size, 0x200_0000);
    assert_eq!(k.protected_mode(&img)[0], 0x90);
    assert_eq!(k.protected_mode(&img).len(), 4096);
    assert_eq!(k.load_address(64 << 20), Ok(0x100_0000));
    assert_eq!(BzImage::entry_64(0x100_0000), 0x100_0200);
}

#[test]
fn setup_sects_zero_means_four_and_short_headers() {
    let mut img = fake_bzimage(8192);
    img[offset::SETUP_SECTS] = 0;
    // An older header (2.12) ends at 0x268 (jump 0x66).
    img[offset::JUMP + 1] = 0x66;
    img[offset::VERSION] = 0x0c;
    let k = parse_bzimage(&img).unwrap();
    assert_eq!(k.setup_sects, 4);
    assert_eq!(k.kernel_offset, 5 * 512);
    assert_eq!(k.header_len, 0x268 - HDR_OFFSET);
    assert_eq!(k.header().len(), 0x268 - HDR_OFFSET);
}

#[test]
fn refuses_what_it_cannot_boot() {
    assert_eq!(parse_bzimage(&[]), Err(LinuxError::NotBzImage));
    assert_eq!(parse_bzimage(&[0; 0x300]), Err(LinuxError::NotBzImage));
    let good = fake_bzimage(4096);

    let mut img = good.clone();
    img[offset::HEADER] = b'X';
    assert_eq!(parse_bzimage(&img), Err(LinuxError::NotBzImage));
    let mut img = good.clone();
    img[offset::BOOT_FLAG] = 0;
    assert_eq!(parse_bzimage(&img), Err(LinuxError::NotBzImage));

    let mut img = good.clone();
    set(&mut img, offset::VERSION, &0x020bu16.to_le_bytes());
    let e = parse_bzimage(&img).unwrap_err();
    assert_eq!(e, LinuxError::ProtocolTooOld { version: 0x020b });
    assert!(e.to_string().contains("2.11"), "{e}");
    assert!(e.to_string().contains("2.12 or later"));

    let mut img = good.clone();
    set(&mut img, offset::XLOADFLAGS, &0x2u16.to_le_bytes());
    let e = parse_bzimage(&img).unwrap_err();
    assert_eq!(e, LinuxError::No64BitEntry);
    assert!(e.to_string().contains("CONFIG_X86_64"));

    let mut img = good.clone();
    img[offset::LOADFLAGS] = 0;
    assert_eq!(parse_bzimage(&img), Err(LinuxError::NotLoadedHigh));

    let img = &good[..28 * 512];
    assert_eq!(
        parse_bzimage(img),
        Err(LinuxError::Truncated {
            kernel_offset: 28 * 512,
            file_size: 28 * 512
        })
    );
    assert!(LinuxError::NotBzImage.to_string().contains("bzImage"));
}

#[test]
fn load_address_checks() {
    let mut k = parse_bzimage(&fake_bzimage(4096)).unwrap();
    let e = k.load_address(32 << 20).unwrap_err();
    assert_eq!(
        e,
        LinuxError::DoesNotFit {
            needed: 48 << 20,
            memory: 32 << 20
        }
    );
    assert!(e.to_string().contains("memory=48M"));
    assert_eq!(k.load_address(48 << 20), Ok(16 << 20));
    k.pref_address = 0x100_1000;
    assert!(matches!(
        k.load_address(1 << 30),
        Err(LinuxError::BadLoadAddress { .. })
    ));
    k.relocatable = false;
    assert_eq!(k.load_address(1 << 30), Ok(0x100_1000));
    k.pref_address = 0x8_0000;
    assert!(matches!(
        k.load_address(1 << 30),
        Err(LinuxError::BadLoadAddress { .. })
    ));
}

const MEM: usize = 64 << 20;

#[test]
fn boot_params_fields() {
    let img = fake_bzimage(4096);
    let k = parse_bzimage(&img).unwrap();
    let e820 = [
        MemmapEntry {
            addr: 0,
            size: 0x9f000,
            kind: 1,
        },
        MemmapEntry {
            addr: 0x9f000,
            size: 0x61000,
            kind: 2,
        },
        MemmapEntry {
            addr: 0x10_0000,
            size: (MEM as u64) - 0x10_0000,
            kind: 1,
        },
    ];
    let info = BootInfo {
        cmdline_gpa: 0x2_0000,
        cmdline: "console=ttyS0 panic=-1",
        initrd_gpa: 0x1_2345_6000,
        initrd_size: 0x1_0000_1000,
        e820: &e820,
        acpi_rsdp: 0xe_0000,
    };
    let mut backing = vec![0u8; MEM];
    let mut mem = SliceMemory::new(&mut backing);
    load_kernel(&mut mem, &img, &k, 0x100_0000).unwrap();
    write_boot_params(&mut mem, 0x7000, &k, &info).unwrap();
    let m = mem.bytes();
    assert_eq!(m[0x100_0000], 0x90);
    assert_eq!(&m[0x2_0000..0x2_0017], b"console=ttyS0 panic=-1\0");
    let bp = &m[0x7000..0x8000];
    // The header is the image's, but for the loader's fields.
    assert_eq!(bp[offset::SETUP_SECTS], 27);
    assert_eq!(&bp[offset::HEADER..offset::HEADER + 4], b"HdrS");
    assert_eq!(get_u16(bp, offset::BOOT_FLAG), 0xaa55);
    assert_eq!(get_u64(bp, offset::PREF_ADDRESS), 0x100_0000);
    assert_eq!(bp[HDR_END], 0, "nothing past the header copied");
    assert_eq!(bp[offset::TYPE_OF_LOADER], 0xff);
    assert_eq!(bp[offset::LOADFLAGS], LOADED_HIGH | CAN_USE_HEAP);
    assert_eq!(get_u16(bp, offset::HEAP_END_PTR), 0xfe00 - 0x200);
    assert_eq!(get_u32(bp, offset::CMD_LINE_PTR), 0x2_0000);
    assert_eq!(get_u32(bp, offset::EXT_CMD_LINE_PTR), 0);
    assert_eq!(get_u32(bp, offset::RAMDISK_IMAGE), 0x2345_6000);
    assert_eq!(get_u32(bp, offset::EXT_RAMDISK_IMAGE), 1);
    assert_eq!(get_u32(bp, offset::RAMDISK_SIZE), 0x1000);
    assert_eq!(get_u32(bp, offset::EXT_RAMDISK_SIZE), 1);
    assert_eq!(get_u32(bp, offset::HARDWARE_SUBARCH), 0);
    assert_eq!(get_u64(bp, offset::ACPI_RSDP_ADDR), 0xe_0000);
    assert_eq!(bp[offset::SENTINEL], 0);
    assert_eq!(bp[offset::E820_ENTRIES], 3);
    for (i, e) in e820.iter().enumerate() {
        let at = offset::E820_TABLE + 20 * i;
        assert_eq!(get_u64(bp, at), e.addr);
        assert_eq!(get_u64(bp, at + 8), e.size);
        assert_eq!(get_u32(bp, at + 16), e.kind);
    }
    assert_eq!(get_u64(bp, offset::E820_TABLE + 60), 0);
}

#[test]
fn boot_params_errors() {
    let img = fake_bzimage(4096);
    let mut k = parse_bzimage(&img).unwrap();
    let long = "x".repeat(2048);
    let info = BootInfo {
        cmdline_gpa: 0x2_0000,
        cmdline: &long,
        ..BootInfo::default()
    };
    let e = boot_params(&k, &info).unwrap_err();
    assert_eq!(
        e,
        LinuxError::CmdlineTooLong {
            len: 2048,
            max: 2047
        }
    );
    assert!(e.to_string().contains("shorten"));
    assert!(
        boot_params(
            &k,
            &BootInfo {
                cmdline: &long[..2047],
                ..info
            }
        )
        .is_ok()
    );

    let e820 = [MemmapEntry::default(); 129];
    assert_eq!(
        boot_params(
            &k,
            &BootInfo {
                e820: &e820,
                ..BootInfo::default()
            }
        ),
        Err(LinuxError::TooManyE820Entries { count: 129 })
    );
    assert!(
        boot_params(
            &k,
            &BootInfo {
                e820: &e820[..128],
                ..BootInfo::default()
            }
        )
        .is_ok()
    );

    // Without XLF_CAN_BE_LOADED_ABOVE_4G, initrd_addr_max counts.
    k.xloadflags = XLF_KERNEL_64;
    let initrd = |gpa, size| BootInfo {
        initrd_gpa: gpa,
        initrd_size: size,
        ..BootInfo::default()
    };
    assert!(boot_params(&k, &initrd(0x7fff_f000, 0x1000)).is_ok());
    let e = boot_params(&k, &initrd(0x7fff_f000, 0x1001)).unwrap_err();
    assert_eq!(
        e,
        LinuxError::InitrdTooHigh {
            end: 0x8000_0001,
            max: 0x7fff_ffff
        }
    );
    assert!(e.to_string().contains("place it lower"));

    let mut backing = vec![0u8; 0x10000];
    let mut mem = SliceMemory::new(&mut backing);
    let e = write_boot_params(&mut mem, 0xffff_f001, &k, &BootInfo::default()).unwrap_err();
    assert_eq!(
        e,
        LinuxError::Above4G {
            what: "boot_params",
            end: 0x1_0000_0001
        }
    );
    assert!(matches!(
        write_boot_params(&mut mem, 0xf001, &k, &BootInfo::default()),
        Err(LinuxError::Memory(_))
    ));
    assert!(matches!(
        write_boot_params(
            &mut mem,
            0x1000,
            &k,
            &BootInfo {
                cmdline_gpa: 0xffff,
                cmdline: "a",
                ..BootInfo::default()
            }
        ),
        Err(LinuxError::Memory(_))
    ));
    assert!(
        mem.bytes().iter().all(|b| *b == 0),
        "nothing written on error"
    );
}

/// Walks the tables in `m` from `cr3` like the MMU: the physical address of `va`, if mapped
/// read/write.
fn translate(m: &[u8], cr3: u64, va: u64) -> Option<u64> {
    let entry = |table: u64, index: u64| get_u64(m, (table + 8 * index) as usize);
    let pml4e = entry(cr3, (va >> 39) & 511);
    if pml4e & 3 != 3 {
        return None;
    }
    let pdpte = entry(pml4e & 0x000f_ffff_ffff_f000, (va >> 30) & 511);
    if pdpte & 3 != 3 || pdpte & 0x80 != 0 {
        return None;
    }
    let pde = entry(pdpte & 0x000f_ffff_ffff_f000, (va >> 21) & 511);
    if pde & 0x83 != 0x83 {
        return None;
    }
    Some((pde & 0x000f_ffff_ffe0_0000) | (va & 0x1f_ffff))
}

#[test]
fn identity_page_tables_map_4g() {
    let mut backing = vec![0u8; 1 << 20];
    let mut mem = SliceMemory::new(&mut backing);
    let at = 0x9000;
    let cr3 = write_identity_page_tables(&mut mem, at, 4 << 30).unwrap();
    assert_eq!(cr3, at);
    assert_eq!(identity_page_tables_size(4 << 30), 6 * 4096);
    let m = mem.bytes();
    for va in [
        0,
        0x7000,
        0x100_0200,
        0x3fff_ffff,
        0x4000_0000,
        0xfee0_0000,
        0xffff_ffff,
    ] {
        assert_eq!(translate(m, cr3, va), Some(va), "0x{va:x}");
    }
    assert_eq!(translate(m, cr3, 1 << 32), None);
    assert_eq!(translate(m, cr3, 1 << 39), None);
    // Nothing past the tables was touched.
    assert!(m[(at + 6 * 4096) as usize..].iter().all(|b| *b == 0));
}

#[test]
fn identity_page_tables_partial_and_errors() {
    let mut backing = vec![0u8; 1 << 20];
    let mut mem = SliceMemory::new(&mut backing);
    let cr3 = write_identity_page_tables(&mut mem, 0x1000, 64 << 20).unwrap();
    assert_eq!(
        translate(mem.bytes(), cr3, (64 << 20) - 1),
        Some((64 << 20) - 1)
    );
    // Rounded up to 1 GiB.
    assert_eq!(
        translate(mem.bytes(), cr3, (1 << 30) - 1),
        Some((1 << 30) - 1)
    );
    assert_eq!(translate(mem.bytes(), cr3, 1 << 30), None);
    assert!(write_identity_page_tables(&mut mem, 0x1001, 1 << 30).is_err());
    assert!(write_identity_page_tables(&mut mem, 0xff000, 1 << 30).is_err());
    assert!(write_identity_page_tables(&mut mem, 0x1000, IDENTITY_MAP_LIMIT + 1).is_err());
}

#[test]
fn gdt_and_entry_state() {
    let mut backing = vec![0u8; 0x1000];
    let mut mem = SliceMemory::new(&mut backing);
    let gdt = write_boot_gdt(&mut mem, 0x500).unwrap();
    assert_eq!(gdt, (0x500, 31));
    let m = mem.bytes();
    let cs = get_u64(m, 0x500 + usize::from(BOOT_CS));
    let ds = get_u64(m, 0x500 + usize::from(BOOT_DS));
    // Code: present, DPL 0, code, L=1, D=0.
    assert_eq!((cs >> 47) & 1, 1);
    assert_eq!((cs >> 43) & 1, 1);
    assert_eq!((cs >> 53) & 1, 1);
    assert_eq!((cs >> 54) & 1, 0);
    // Data: present, writable, not code.
    assert_eq!((ds >> 47) & 1, 1);
    assert_eq!((ds >> 43) & 1, 0);
    assert_eq!((ds >> 41) & 1, 1);
    let s = entry_state(0x100_0000, 0x7000, 0x9000, gdt);
    assert_eq!(s.rip, 0x100_0200);
    assert_eq!(s.rsi, 0x7000);
    assert_eq!(s.cr0, 0x8000_0031);
    // No CD, NW (caches on), TS, EM, WP.
    assert_eq!(s.cr0 & 0x6001_000c, 0);
    assert_eq!(s.cr4 & 0x20, 0x20);
    assert_eq!(s.efer & 0x500, 0x500);
    assert_eq!(s.rflags & 0x200, 0);
    assert_eq!((s.cs, s.ds), (0x10, 0x18));
}

#[test]
fn detects_bzimages() {
    let img = fake_bzimage(4096);
    assert!(is_bzimage(&img));
    // Detection only looks at the magic: an unbootable bzImage is still one (and then refused
    // by parse_bzimage with its reason).
    let mut old = img.clone();
    set(&mut old, offset::VERSION, &0x0200u16.to_le_bytes());
    assert!(is_bzimage(&old));
    assert!(matches!(
        parse_bzimage(&old),
        Err(LinuxError::ProtocolTooOld { .. })
    ));
    assert!(!is_bzimage(&img[..offset::HEADER + 3]));
    let mut no_flag = img.clone();
    no_flag[offset::BOOT_FLAG] = 0;
    assert!(!is_bzimage(&no_flag));
    let mut elf = vec![0u8; 0x1000];
    elf[..4].copy_from_slice(b"\x7fELF");
    assert!(!is_bzimage(&elf));
    assert!(!is_bzimage(&[]));
}

#[test]
fn initrds_concatenate_with_4_byte_padding() {
    assert_eq!(concatenated_initrd_size([]), 0);
    assert_eq!(concatenated_initrd_size([0]), 0);
    assert_eq!(concatenated_initrd_size([1001]), 1001);
    // 1001 padded to 1004, then 10: the last piece is not padded.
    assert_eq!(concatenated_initrd_size([1001, 10]), 1014);
    assert_eq!(concatenated_initrd_size([4, 8, 3]), 15);
    assert_eq!(concatenated_initrd_size([u64::MAX, 1]), u64::MAX);
}

#[test]
fn layout_of_a_default_kernel() {
    // init_size 32 MiB from 16 MiB: the kernel needs up to 48 MiB.
    let k = parse_bzimage(&fake_bzimage(4096)).unwrap();
    let l = plan_layout(&k, 256 << 20, 40, 0x1e_d828).unwrap();
    assert_eq!(l.load_address, 16 << 20);
    assert_eq!(l.kernel_end, 48 << 20);
    assert_eq!(l.boot_params, 0x7000);
    assert_eq!(l.cmdline, 0x2_0000);
    assert_eq!(l.page_tables, 0x1000);
    assert_eq!(l.gdt, 0x8000);
    assert_eq!(l.map_up_to, 256 << 20);
    // As high as memory allows, page-aligned.
    assert_eq!(l.initrd_size, 0x1e_d828);
    assert_eq!(l.initrd_gpa, ((256 << 20) - 0x1e_d828) & !0xfff);
    assert!(l.initrd_gpa + l.initrd_size <= 256 << 20);
    // The low structures do not overlap each other, and stay below the legacy hole and the
    // kernel: page tables for 4 GiB end where boot_params starts.
    assert_eq!(
        l.page_tables + identity_page_tables_size(IDENTITY_MAP_SIZE),
        l.boot_params
    );
    assert!(l.boot_params + BOOT_PARAMS_SIZE <= l.gdt);
    assert!(l.gdt + BOOT_GDT_SIZE <= l.cmdline);
    assert!(l.cmdline + u64::from(k.cmdline_size) < LOW_RAM_END);
    // No initrd: nothing placed; memory above 4 GiB: only 4 GiB mapped.
    let l = plan_layout(&k, 8 << 30, 0, 0).unwrap();
    assert_eq!((l.initrd_gpa, l.initrd_size), (0, 0));
    assert_eq!(l.map_up_to, 4 << 30);
}

#[test]
fn layout_keeps_the_initrd_below_initrd_addr_max() {
    let mut k = parse_bzimage(&fake_bzimage(4096)).unwrap();
    k.initrd_addr_max = 0x37ff_ffff;
    let l = plan_layout(&k, 4 << 30, 0, 0x10_0000).unwrap();
    assert_eq!(l.initrd_gpa, 0x3800_0000 - 0x10_0000);
    assert_eq!(l.initrd_gpa + l.initrd_size - 1, 0x37ff_ffff);
    // Even a kernel that could take it above 4 GiB gets it below initrd_addr_max.
    k.initrd_addr_max = 0x7fff_ffff;
    let l = plan_layout(&k, 16 << 30, 0, 4096).unwrap();
    assert_eq!(l.initrd_gpa, 0x8000_0000 - 4096);
}

#[test]
fn layout_errors() {
    let mut k = parse_bzimage(&fake_bzimage(4096)).unwrap();
    // The kernel alone does not fit.
    let e = plan_layout(&k, 32 << 20, 0, 0).unwrap_err();
    assert!(matches!(e, LinuxError::DoesNotFit { .. }), "{e}");
    // The kernel fits, the initrd does not: more memory helps, and the message says how much.
    let e = plan_layout(&k, 50 << 20, 0, 4 << 20).unwrap_err();
    assert_eq!(
        e,
        LinuxError::InitrdDoesNotFit {
            size: 4 << 20,
            kernel_end: 48 << 20,
            limit: 50 << 20,
            by_memory: true,
        }
    );
    let text = e.to_string();
    assert!(text.contains("set memory=53M or more"), "{text}");
    assert!(!text.contains('\n'));
    let mut backing = vec![0u8; 53 << 20];
    let mem = SliceMemory::new(&mut backing);
    assert!(plan_layout(&k, mem.size(), 0, 4 << 20).is_ok());
    // initrd_addr_max is the limit: only a smaller initrd helps.
    k.initrd_addr_max = (50 << 20) - 1;
    let e = plan_layout(&k, 1 << 30, 0, 4 << 20).unwrap_err();
    assert!(
        matches!(
            e,
            LinuxError::InitrdDoesNotFit {
                by_memory: false,
                ..
            }
        ),
        "{e}"
    );
    let text = e.to_string();
    assert!(text.contains("initrd_addr_max 0x31fffff"), "{text}");
    assert!(text.contains("smaller initrd"), "{text}");
    // An initrd larger than memory.
    assert!(matches!(
        plan_layout(&k, 64 << 20, 0, 1 << 40),
        Err(LinuxError::InitrdDoesNotFit { .. })
    ));
    // The command line: the kernel's cmdline_size, and the room below the legacy hole.
    assert!(plan_layout(&k, 64 << 20, 2047, 0).is_ok());
    assert_eq!(
        plan_layout(&k, 64 << 20, 2048, 0),
        Err(LinuxError::CmdlineTooLong {
            len: 2048,
            max: 2047
        })
    );
    k.cmdline_size = u32::MAX;
    let room = LOW_RAM_END - CMDLINE_GPA - 1;
    assert!(plan_layout(&k, 64 << 20, room, 0).is_ok());
    assert!(matches!(
        plan_layout(&k, 64 << 20, room + 1, 0),
        Err(LinuxError::CmdlineTooLong { .. })
    ));
}

#[test]
fn load_writes_everything() {
    let img = fake_bzimage(8192);
    let k = parse_bzimage(&img).unwrap();
    let mut backing = vec![0u8; MEM];
    let mut mem = SliceMemory::new(&mut backing);
    let l = plan_layout(&k, MEM as u64, 13, 0x1234).unwrap();
    let mut e820 = [MemmapEntry::default(); 8];
    let n = crate::start_info::guest_memmap(MEM as u64, &mut e820);
    let s = load(
        &mut mem,
        &img,
        &k,
        &l,
        "console=ttyS0",
        &e820[..n],
        0xe_0000,
    )
    .unwrap();
    let m = mem.bytes();
    // The protected-mode kernel at 16 MiB.
    assert_eq!(&m[0x100_0000..0x100_2000], k.protected_mode(&img));
    // boot_params: command line, initrd, e820 (RAM, reserved hole, RAM), RSDP.
    let bp = &m[0x7000..0x8000];
    assert_eq!(&bp[offset::HEADER..offset::HEADER + 4], b"HdrS");
    assert_eq!(get_u32(bp, offset::CMD_LINE_PTR), 0x2_0000);
    assert_eq!(&m[0x2_0000..0x2_000e], b"console=ttyS0\0");
    assert_eq!(u64::from(get_u32(bp, offset::RAMDISK_IMAGE)), l.initrd_gpa);
    assert_eq!(get_u32(bp, offset::RAMDISK_SIZE), 0x1234);
    assert_eq!(bp[offset::E820_ENTRIES], 3);
    let e820_at = |i: usize, field: usize| get_u64(bp, offset::E820_TABLE + 20 * i + field);
    assert_eq!((e820_at(0, 0), e820_at(0, 8)), (0, 0x9_f000));
    assert_eq!((e820_at(1, 0), e820_at(1, 8)), (0x9_f000, 0x6_1000));
    assert_eq!(get_u32(bp, offset::E820_TABLE + 20 + 16), 2);
    assert_eq!(e820_at(2, 0), 0x10_0000);
    assert_eq!(get_u64(bp, offset::ACPI_RSDP_ADDR), 0xe_0000);
    // The page tables map the kernel, boot_params, command line and initrd 1:1.
    for va in [
        0x7000,
        0x2_0000,
        0x100_0200,
        l.kernel_end - 1,
        l.initrd_gpa,
        l.initrd_gpa + l.initrd_size - 1,
    ] {
        assert_eq!(translate(m, s.cr3, va), Some(va), "{va:#x}");
    }
    assert_eq!(get_u64(m, 0x8000 + 0x10), BOOT_GDT[2]);
    assert_eq!(s, entry_state(0x100_0000, 0x7000, 0x1000, (0x8000, 31)));
    assert_eq!(s.rip, 0x100_0200);
    assert_eq!(s.rsi, 0x7000);
}

#[test]
fn load_writes_nothing_when_refused() {
    let img = fake_bzimage(4096);
    let k = parse_bzimage(&img).unwrap();
    let mut backing = vec![0u8; MEM];
    let mut mem = SliceMemory::new(&mut backing);
    let l = plan_layout(&k, MEM as u64, 0, 0).unwrap();
    let e820 = [MemmapEntry::default(); E820_MAX + 1];
    let e = load(&mut mem, &img, &k, &l, "", &e820, 0).unwrap_err();
    assert_eq!(e, LinuxError::TooManyE820Entries { count: 129 });
    assert!(mem.bytes().iter().all(|&b| b == 0));
}

/// Parses a real kernel when the machine has one (`/boot/vmlinuz*`, or `$BASALT_BZIMAGE`).
#[test]
#[ignore = "needs a real bzImage: /boot/vmlinuz* or BASALT_BZIMAGE=path; run with --ignored"]
fn real_bzimage() {
    let path = std::env::var("BASALT_BZIMAGE").ok().or_else(|| {
        let mut found: Vec<_> = std::fs::read_dir("/boot")
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("vmlinuz"))
            })
            .collect();
        found.sort();
        found.pop().map(|p| p.display().to_string())
    });
    let path = path.expect("no /boot/vmlinuz* and no BASALT_BZIMAGE: nothing to test");
    let img = std::fs::read(&path).unwrap();
    let k = parse_bzimage(&img).unwrap_or_else(|e| panic!("{path}: {e}"));
    println!("{path}: {k:x?}");
    assert!(k.version >= MIN_PROTOCOL);
    assert!(k.init_size > 0);
    assert!(k.payload_length > 0);
    let load = k.load_address(1 << 30).unwrap();
    let bp = boot_params(&k, &BootInfo::default()).unwrap();
    assert_eq!(&bp[offset::HEADER..offset::HEADER + 4], b"HdrS");
    assert_eq!(bp[offset::TYPE_OF_LOADER], LOADER_TYPE_UNDEFINED);
    assert!(load >= ONE_MIB);
}
