use super::*;
use basalt_guest::SliceMemory;
use basalt_guest::linux::offset;

/// A bzImage header as Linux 6.x's: protocol 2.15, relocatable, 2 MiB
/// aligned, pref_address 16 MiB, init_size 32 MiB, `kernel` bytes of code.
fn bzimage(kernel: usize) -> Vec<u8> {
    let mut img = vec![0u8; 28 * 512 + kernel];
    let mut set = |at: usize, b: &[u8]| img[at..at + b.len()].copy_from_slice(b);
    set(offset::SETUP_SECTS, &[27]);
    set(offset::BOOT_FLAG, &0xaa55u16.to_le_bytes());
    set(offset::JUMP, &[0xeb, 0x6a]);
    set(offset::HEADER, b"HdrS");
    set(offset::VERSION, &0x020fu16.to_le_bytes());
    set(offset::LOADFLAGS, &[1]);
    set(offset::INITRD_ADDR_MAX, &0x7fff_ffffu32.to_le_bytes());
    set(offset::KERNEL_ALIGNMENT, &0x20_0000u32.to_le_bytes());
    set(offset::RELOCATABLE_KERNEL, &[1]);
    set(offset::XLOADFLAGS, &0x7fu16.to_le_bytes());
    set(offset::CMDLINE_SIZE, &2047u32.to_le_bytes());
    set(offset::PREF_ADDRESS, &0x100_0000u64.to_le_bytes());
    set(offset::INIT_SIZE, &0x200_0000u32.to_le_bytes());
    img[28 * 512] = 0x90;
    img
}

fn u32_at(m: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(m[at..at + 4].try_into().unwrap())
}

#[test]
fn lays_out_kernel_boot_params_acpi_and_initrd() {
    let img = bzimage(4096);
    let initrd = b"07070100-cpio".repeat(100);
    let memory = 64 << 20;
    let p = plan(&img, memory, "console=ttyS0", initrd.len() as u64).unwrap();
    let mut ram = vec![0u8; memory as usize];
    let mut mem = SliceMemory::new(&mut ram);
    let entry = load(&mut mem, &p, &img, "console=ttyS0", 2, &initrd).unwrap();
    assert_eq!(entry.rip, 0x100_0200);
    assert_eq!(entry.rsi, linux::BOOT_PARAMS_GPA);
    let bp = linux::BOOT_PARAMS_GPA as usize;
    // The initrd at the top of memory, page-aligned, named in boot_params.
    let gpa = p.layout.initrd_gpa as usize;
    assert_eq!(gpa % 4096, 0);
    assert!(gpa + initrd.len() <= memory as usize && gpa + initrd.len() + 4096 > memory as usize);
    assert_eq!(&ram[gpa..gpa + initrd.len()], &initrd[..]);
    assert_eq!(u32_at(&ram, bp + offset::RAMDISK_IMAGE) as usize, gpa);
    assert_eq!(
        u32_at(&ram, bp + offset::RAMDISK_SIZE) as usize,
        initrd.len()
    );
    // The command line, the kernel, the e820 map and the ACPI RSDP.
    let cmdline = u32_at(&ram, bp + offset::CMD_LINE_PTR) as usize;
    assert_eq!(&ram[cmdline..cmdline + 14], b"console=ttyS0\0");
    assert_eq!(ram[0x100_0000], 0x90);
    assert_eq!(ram[bp + offset::E820_ENTRIES] as usize, e820(memory).len());
    let rsdp = acpi::GUEST_TABLES_GPA as usize;
    assert_eq!(&ram[rsdp..rsdp + 8], b"RSD PTR ");
    assert_eq!(u32_at(&ram, bp + offset::ACPI_RSDP_ADDR) as usize, rsdp);
}

#[test]
fn refuses_before_anything_is_created() {
    let img = bzimage(4096);
    // 32 MiB of init_size from 16 MiB leaves nothing in 48 MiB for 1 MiB.
    let e = plan(&img, 48 << 20, "", 1 << 20).unwrap_err();
    assert!(
        matches!(
            e,
            LinuxError::InitrdDoesNotFit {
                by_memory: true,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("set memory="), "{e}");
    assert_eq!(
        plan(b"\x7fELF", 48 << 20, "", 0),
        Err(LinuxError::NotBzImage)
    );
    assert!(plan(&img, 48 << 20, &"x".repeat(4096), 0).is_err());
    assert!(plan(&img, 64 << 20, "", 1 << 20).is_ok());
}
