use super::*;

#[test]
fn words_follow_ioreq_h() {
    let r = Request {
        kind: TYPE_PCI_CONFIG,
        addr: 0x0000_0018_0000_0004,
        data: 0xdead_beef,
        size: 4,
        read: true,
    };
    let w = r.words(FIRST_PORT + 3);
    let mut bytes = [0u8; 32];
    for (i, word) in w.iter().enumerate() {
        bytes[i * 8..i * 8 + 8].copy_from_slice(&word.to_le_bytes());
    }
    // struct ioreq { u64 addr; u64 data; u32 count; u32 size; u32 vp_eport; u16 pad;
    //   u8 state:4, data_is_ptr:1, dir:1, df:1, pad:1; u8 type; }
    assert_eq!(u64::from_le_bytes(bytes[0..8].try_into().unwrap()), r.addr);
    assert_eq!(u64::from_le_bytes(bytes[8..16].try_into().unwrap()), r.data);
    assert_eq!(u32::from_le_bytes(bytes[16..20].try_into().unwrap()), 1);
    assert_eq!(u32::from_le_bytes(bytes[20..24].try_into().unwrap()), 4);
    assert_eq!(u32::from_le_bytes(bytes[24..28].try_into().unwrap()), 4099);
    assert_eq!(u16::from_le_bytes([bytes[28], bytes[29]]), 0, "_pad0");
    assert_eq!(bytes[30] & 0xf, STATE_READY);
    assert_eq!(bytes[30] >> 4 & 1, 0, "data_is_ptr");
    assert_eq!(bytes[30] >> 5 & 1, 1, "dir: read");
    assert_eq!(bytes[31], TYPE_PCI_CONFIG);
    assert_eq!(state(w[3]), STATE_READY);
    let write = Request { read: false, ..r }.words(FIRST_PORT);
    assert_eq!(write[3] >> 53 & 1, 0, "dir: write");
    // The device model's answer: state 3 in the low nibble of byte 30.
    assert_eq!(state(w[3] & !(0xf << 48) | 3 << 48), STATE_IORESP_READY);
}

#[test]
fn ranges_refuse_overlaps_and_bad_kinds() {
    let mut r = Ranges::default();
    assert_eq!(r.map(3, 0, 1), Err(RangeError::Invalid));
    assert_eq!(r.map(RANGE_PORT, 9, 8), Err(RangeError::Invalid));
    r.map(RANGE_PORT, 0x5000, 0x5007).unwrap();
    assert_eq!(r.map(RANGE_PORT, 0x5007, 0x5010), Err(RangeError::Exists));
    assert_eq!(r.map(RANGE_PORT, 0x4000, 0x5000), Err(RangeError::Exists));
    // Another kind is another space.
    r.map(RANGE_MEMORY, 0x5000, 0x5007).unwrap();
    assert!(r.contains(RANGE_PORT, 0x5004, 4));
    assert!(!r.contains(RANGE_PORT, 0x5006, 4), "straddles the end");
    assert!(!r.contains(RANGE_PCI, 0x5004, 1));
    assert!(!r.contains(RANGE_MEMORY, u64::MAX, 2), "wraps");
    assert_eq!(
        r.unmap(RANGE_PORT, 0x5000, 0x5006),
        Err(RangeError::NotFound)
    );
    r.unmap(RANGE_PORT, 0x5000, 0x5007).unwrap();
    assert!(!r.contains(RANGE_PORT, 0x5004, 1));
    r.map(RANGE_PORT, 0x5000, 0x5000).unwrap();
}

#[test]
fn ranges_are_bounded() {
    let mut r = Ranges::default();
    for i in 0..MAX_RANGES as u64 {
        r.map(RANGE_MEMORY, i * 16, i * 16 + 15).unwrap();
    }
    assert_eq!(
        r.map(RANGE_MEMORY, 1 << 40, 1 << 41),
        Err(RangeError::NoSpace)
    );
    r.map(RANGE_PCI, 8, 8).unwrap();
}
