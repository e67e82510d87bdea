use super::*;
use basalt_guest::SliceMemory;
use basalt_guest::start_info::{START_INFO_SIZE, StartInfo};

/// An ELF64 executable with one PT_LOAD of `code` at `paddr` (`memsz`
/// bytes) and a PT_NOTE with the PVH entry.
fn elf(paddr: u64, code: &[u8], memsz: u64, entry: Option<u32>) -> Vec<u8> {
    let mut f = vec![0u8; 64 + 2 * 56];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = 2;
    f[5] = 1;
    f[6] = 1;
    f[16..18].copy_from_slice(&2u16.to_le_bytes());
    f[18..20].copy_from_slice(&62u16.to_le_bytes());
    f[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
    f[0x34..0x36].copy_from_slice(&64u16.to_le_bytes());
    f[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
    f[0x38..0x3A].copy_from_slice(&2u16.to_le_bytes());
    let code_at = f.len();
    f.extend_from_slice(code);
    let note_at = f.len();
    let mut note = Vec::new();
    note.extend_from_slice(&4u32.to_le_bytes());
    note.extend_from_slice(&4u32.to_le_bytes());
    note.extend_from_slice(
        &entry
            .map_or(1, |_| elf::XEN_ELFNOTE_PHYS32_ENTRY)
            .to_le_bytes(),
    );
    note.extend_from_slice(b"Xen\0");
    note.extend_from_slice(&entry.unwrap_or(0).to_le_bytes());
    f.extend_from_slice(&note);
    for (i, kind, off, pa, filesz, memsz) in [
        (0, 1u32, code_at, paddr, code.len(), memsz),
        (1, 4, note_at, 0, note.len(), note.len() as u64),
    ] {
        let at = 64 + i * 56;
        f[at..at + 4].copy_from_slice(&kind.to_le_bytes());
        f[at + 8..at + 16].copy_from_slice(&(off as u64).to_le_bytes());
        f[at + 0x18..at + 0x20].copy_from_slice(&pa.to_le_bytes());
        f[at + 0x20..at + 0x28].copy_from_slice(&(filesz as u64).to_le_bytes());
        f[at + 0x28..at + 0x30].copy_from_slice(&memsz.to_le_bytes());
    }
    f
}

#[test]
fn loads_segments_initrd_and_start_info() {
    let file = elf(0x10_0000, b"\x90\x90\xf4", 0x2000, Some(0x10_0000));
    let initrd = vec![0x5a; 5000];
    let memory = 16 << 20;
    let p = plan(&file, memory, "greeting=1", initrd.len() as u64).expect("valid");
    let mut ram = vec![0u8; memory as usize];
    let mut mem = SliceMemory::new(&mut ram);
    let (entry, at) = load(&mut mem, &p, &file, "greeting=1", 1, &initrd).expect("loads");
    assert_eq!(entry, 0x10_0000);
    assert_eq!(&ram[0x10_0000..0x10_0003], b"\x90\x90\xf4");
    let si = StartInfo::from_bytes(
        ram[at as usize..(at + START_INFO_SIZE) as usize]
            .try_into()
            .unwrap(),
    )
    .expect("a start info");
    assert_eq!(si.nr_modules, 1);
    assert_eq!(si.rsdp_paddr, acpi::GUEST_TABLES_GPA);
    let cmdline = si.cmdline_paddr as usize;
    assert_eq!(&ram[cmdline..cmdline + 11], b"greeting=1\0");
    let gpa = p.layout.initrds()[0].gpa as usize;
    assert_eq!(&ram[gpa..gpa + initrd.len()], &initrd[..]);
    let rsdp = acpi::GUEST_TABLES_GPA as usize;
    assert_eq!(&ram[rsdp..rsdp + 8], b"RSD PTR ");
}

#[test]
fn refuses_what_cannot_be_loaded() {
    let too_big = elf(0x10_0000, b"\x90", 16 << 20, Some(0x10_0000));
    assert!(plan(&too_big, 16 << 20, "", 0).is_err());
    let no_note = elf(0x10_0000, b"\x90", 16, None);
    assert!(plan(&no_note, 16 << 20, "", 0).is_err());
    assert!(plan(b"MZ", 16 << 20, "", 0).is_err());
    let ok = elf(0x10_0000, b"\x90", 16, Some(0x10_0000));
    assert!(plan(&ok, 16 << 20, "", 0).is_ok());
    assert!(plan(&ok, 16 << 20, "", 32 << 20).is_err());
}
