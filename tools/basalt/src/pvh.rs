//! Building a PVH guest from dom0 (`basalt create`): what goes where in the
//! new domain's memory. The kernel is an ELF64 file with Xen's PVH entry
//! note (`XEN_ELFNOTE_PHYS32_ENTRY`, as Basalt's test guests and Linux's
//! `vmlinux` have); its `PT_LOAD` segments go to their physical addresses
//! (the domain's RAM starts zeroed, so the part of a segment beyond its file
//! bytes needs no writing), and an `hvm_start_info` (version 1: command
//! line and memory map) goes in the page at [`START_INFO`], below the
//! legacy hole. vCPU 0 then starts at the entry in 32-bit protected mode
//! with EBX = [`START_INFO`] (Xen's PVH boot ABI).

/// Where the start info, its memory map and the command line go.
pub const START_INFO: u64 = 0x9e000;
/// Where the legacy hole starts (reserved in the memory map up to 1 MiB).
const LEGACY_HOLE: u64 = 0x9f000;
/// `XEN_HVM_START_MAGIC_VALUE`.
const START_MAGIC: u32 = 0x336e_c578;
/// `XEN_ELFNOTE_PHYS32_ENTRY`.
const PHYS32_ENTRY: u32 = 0x12;
/// The longest command line taken (the page holds the rest).
pub const CMDLINE_MAX: usize = 2048;

/// The plan for one guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// `(guest-physical address, offset in the file, bytes from the file)`.
    pub segments: Vec<(u64, usize, usize)>,
    /// The PVH entry point.
    pub entry: u32,
    /// The page at [`START_INFO`]: start info, memory map, command line.
    pub start_info: Vec<u8>,
}

fn le16(d: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(d.get(at..at + 2)?.try_into().ok()?))
}

fn le32(d: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(d.get(at..at + 4)?.try_into().ok()?))
}

fn le64(d: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(d.get(at..at + 8)?.try_into().ok()?))
}

/// The PVH entry in a block of ELF notes.
fn phys32_entry(notes: &[u8]) -> Option<u32> {
    let mut at = 0;
    while at + 12 <= notes.len() {
        let namesz = le32(notes, at)? as usize;
        let descsz = le32(notes, at + 4)? as usize;
        let kind = le32(notes, at + 8)?;
        let desc_at = at + 12 + namesz.div_ceil(4) * 4;
        if notes.get(at + 12..at + 12 + namesz)? == b"Xen\0" && kind == PHYS32_ENTRY {
            return match descsz {
                4 => le32(notes, desc_at),
                8 => le64(notes, desc_at).and_then(|e| u32::try_from(e).ok()),
                _ => None,
            };
        }
        at = desc_at + descsz.div_ceil(4) * 4;
    }
    None
}

/// Plans loading `elf` into a domain of `memory` bytes with `cmdline`.
pub fn plan(elf: &[u8], memory: u64, cmdline: &str) -> Result<Plan, String> {
    if elf.get(..4) != Some(b"\x7fELF") {
        return Err("not an ELF file".into());
    }
    if elf.get(4) != Some(&2) || elf.get(5) != Some(&1) || le16(elf, 18) != Some(62) {
        return Err("not a little-endian x86-64 ELF64 file".into());
    }
    let bad = || "truncated ELF program headers".to_string();
    let phoff = le64(elf, 0x20).ok_or_else(bad)? as usize;
    let phentsize = usize::from(le16(elf, 0x36).ok_or_else(bad)?);
    let phnum = usize::from(le16(elf, 0x38).ok_or_else(bad)?);
    let mut segments = Vec::new();
    let mut entry = None;
    for i in 0..phnum {
        let ph = phoff + i * phentsize;
        let kind = le32(elf, ph).ok_or_else(bad)?;
        let offset = le64(elf, ph + 8).ok_or_else(bad)? as usize;
        let paddr = le64(elf, ph + 0x18).ok_or_else(bad)?;
        let filesz = le64(elf, ph + 0x20).ok_or_else(bad)? as usize;
        let memsz = le64(elf, ph + 0x28).ok_or_else(bad)?;
        match kind {
            // PT_LOAD
            1 => {
                let end = paddr
                    .checked_add(memsz)
                    .filter(|&e| e <= memory)
                    .ok_or_else(|| {
                        format!(
                            "a segment at {paddr:#x} of {memsz} bytes does not fit {} MiB",
                            memory >> 20
                        )
                    })?;
                if paddr < START_INFO + 4096 && end > START_INFO {
                    return Err(format!(
                        "a segment at {paddr:#x}-{end:#x} overlaps the start info page at {START_INFO:#x}"
                    ));
                }
                if elf.get(offset..offset.saturating_add(filesz)).is_none() || filesz as u64 > memsz
                {
                    return Err(format!("the segment at {paddr:#x} lies outside the file"));
                }
                segments.push((paddr, offset, filesz));
            }
            // PT_NOTE
            4 => {
                if let Some(notes) = elf.get(offset..offset.saturating_add(filesz)) {
                    entry = entry.or_else(|| phys32_entry(notes));
                }
            }
            _ => {}
        }
    }
    let entry =
        entry.ok_or("no Xen PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY): not a PVH kernel")?;
    if segments.is_empty() {
        return Err("no PT_LOAD segment".into());
    }
    if cmdline.len() > CMDLINE_MAX {
        return Err(format!(
            "the command line is longer than {CMDLINE_MAX} bytes"
        ));
    }
    // hvm_start_info (56 bytes), the memory map (3 entries of 24), the
    // command line.
    let mut page = vec![0u8; 4096];
    let map_at = 64;
    let cmdline_at = map_at + 3 * 24;
    let put32 = |p: &mut [u8], at: usize, v: u32| p[at..at + 4].copy_from_slice(&v.to_le_bytes());
    let put64 = |p: &mut [u8], at: usize, v: u64| p[at..at + 8].copy_from_slice(&v.to_le_bytes());
    put32(&mut page, 0, START_MAGIC);
    put32(&mut page, 4, 1);
    put64(&mut page, 24, START_INFO + cmdline_at as u64);
    put64(&mut page, 40, START_INFO + map_at as u64);
    put32(&mut page, 48, 3);
    for (i, (addr, size, kind)) in [
        (0, LEGACY_HOLE, 1u32),
        (LEGACY_HOLE, 0x10_0000 - LEGACY_HOLE, 2),
        (0x10_0000, memory.saturating_sub(0x10_0000), 1),
    ]
    .into_iter()
    .enumerate()
    {
        let at = map_at + i * 24;
        put64(&mut page, at, addr);
        put64(&mut page, at + 8, size);
        put32(&mut page, at + 16, kind);
    }
    page[cmdline_at..cmdline_at + cmdline.len()].copy_from_slice(cmdline.as_bytes());
    Ok(Plan {
        segments,
        entry,
        start_info: page,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An ELF64 with one PT_LOAD of `code` at `paddr` and a PT_NOTE with
    /// the PVH entry.
    fn elf(paddr: u64, code: &[u8], memsz: u64, entry: Option<u32>) -> Vec<u8> {
        let mut f = vec![0u8; 64 + 2 * 56];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2;
        f[5] = 1;
        f[18..20].copy_from_slice(&62u16.to_le_bytes());
        f[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        f[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        f[0x38..0x3A].copy_from_slice(&2u16.to_le_bytes());
        let code_at = f.len();
        f.extend_from_slice(code);
        let note_at = f.len();
        let mut note = Vec::new();
        note.extend_from_slice(&4u32.to_le_bytes());
        note.extend_from_slice(&4u32.to_le_bytes());
        note.extend_from_slice(&entry.map_or(1, |_| PHYS32_ENTRY).to_le_bytes());
        note.extend_from_slice(b"Xen\0");
        note.extend_from_slice(&entry.unwrap_or(0).to_le_bytes());
        f.extend_from_slice(&note);
        let ph = |f: &mut Vec<u8>,
                  i: usize,
                  kind: u32,
                  off: usize,
                  paddr: u64,
                  filesz: usize,
                  memsz: u64| {
            let at = 64 + i * 56;
            f[at..at + 4].copy_from_slice(&kind.to_le_bytes());
            f[at + 8..at + 16].copy_from_slice(&(off as u64).to_le_bytes());
            f[at + 0x18..at + 0x20].copy_from_slice(&paddr.to_le_bytes());
            f[at + 0x20..at + 0x28].copy_from_slice(&(filesz as u64).to_le_bytes());
            f[at + 0x28..at + 0x30].copy_from_slice(&memsz.to_le_bytes());
        };
        ph(&mut f, 0, 1, code_at, paddr, code.len(), memsz);
        ph(&mut f, 1, 4, note_at, 0, note.len(), note.len() as u64);
        f
    }

    #[test]
    fn plans_segments_entry_and_start_info() {
        let file = elf(0x10_0000, b"\x90\x90\xf4", 0x2000, Some(0x10_0000));
        let p = plan(&file, 16 << 20, "greeting=1").expect("valid");
        assert_eq!(p.segments, vec![(0x10_0000, 64 + 112, 3)]);
        assert_eq!(p.entry, 0x10_0000);
        let si = &p.start_info;
        assert_eq!(le32(si, 0), Some(START_MAGIC));
        assert_eq!(le32(si, 4), Some(1));
        let cmdline = le64(si, 24).expect("cmdline") - START_INFO;
        assert_eq!(
            &si[cmdline as usize..cmdline as usize + 11],
            b"greeting=1\0"
        );
        let map = (le64(si, 40).expect("map") - START_INFO) as usize;
        assert_eq!(le32(si, 48), Some(3));
        assert_eq!(le64(si, map + 2 * 24), Some(0x10_0000));
        assert_eq!(le64(si, map + 2 * 24 + 8), Some((16 << 20) - 0x10_0000));
    }

    #[test]
    fn refuses_what_cannot_be_loaded() {
        let too_big = elf(0x10_0000, b"\x90", 16 << 20, Some(0x10_0000));
        assert!(
            plan(&too_big, 16 << 20, "")
                .expect_err("too big")
                .contains("does not fit")
        );
        let over = elf(START_INFO, b"\x90", 16, Some(START_INFO as u32));
        assert!(
            plan(&over, 16 << 20, "")
                .expect_err("overlap")
                .contains("overlaps")
        );
        let no_note = elf(0x10_0000, b"\x90", 16, None);
        assert!(
            plan(&no_note, 16 << 20, "")
                .expect_err("no note")
                .contains("PVH")
        );
        assert!(plan(b"MZ", 16 << 20, "").is_err());
        let ok = elf(0x10_0000, b"\x90", 16, Some(0x10_0000));
        assert!(plan(&ok, 16 << 20, &"x".repeat(CMDLINE_MAX + 1)).is_err());
    }
}
