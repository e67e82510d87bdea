use super::*;

fn round_trip(domain: u32, r: Request<'_>) {
    let mut buf = [0u8; MAX_BUFFER];
    let n = encode(domain, &r, &mut buf).expect("fits");
    assert_eq!(n, r.buffer_size());
    let (d, back) = decode(&buf[..n]).expect("decodes");
    assert_eq!((d, back), (domain, r));
}

fn create_args() -> CreateArgs {
    CreateArgs {
        memory: 64 << 20,
        affinity: 0b110,
        vcpus: 2,
        flags: create_flags::XEN,
        weight: 256,
        cap: 50,
        name: Name::new("guest-1").expect("short"),
    }
}

#[test]
fn every_request_round_trips() {
    round_trip(0, Request::Create(create_args()));
    round_trip(
        3,
        Request::Populate {
            gpa: 0x10_0000,
            source: 0x7fff_0000_1000,
            length: 4096,
        },
    );
    round_trip(
        3,
        Request::SetVcpuStart(VcpuStart {
            vcpu: 0,
            mode: StartMode::Pvh32,
            rip: 0x100_0000,
            start_info: 0x9000,
            boot_params: 0,
            cr3: 0,
            gdt_base: 0,
            gdt_limit: 0,
        }),
    );
    round_trip(
        3,
        Request::SetVcpuStart(VcpuStart {
            vcpu: 1,
            mode: StartMode::Linux64,
            rip: 0xffff_ffff_8100_0000,
            start_info: 0,
            boot_params: 0x7000,
            cr3: 0x9_c000,
            gdt_base: 0x9_b000,
            gdt_limit: 0x27,
        }),
    );
    for r in [
        Request::Unpause,
        Request::Pause,
        Request::Destroy,
        Request::GetInfo,
    ] {
        round_trip(7, r);
    }
    round_trip(1, Request::Shutdown { reason: 1 });
    round_trip(0, Request::List { first: 0, max: 32 });
    round_trip(
        2,
        Request::Sched(SchedArgs {
            flags: sched_flags::ALL,
            weight: 512,
            cap: 0,
        }),
    );
    round_trip(
        2,
        Request::ConsoleRead {
            from: 123,
            max: MAX_CONSOLE_READ,
        },
    );
    round_trip(2, Request::ConsoleWrite(b"ls /\n"));
}

/// A valid `list` call, to be damaged by the tests.
fn list_call() -> [u8; 16 + 8 + 8 * INFO_SIZE] {
    let mut buf = [0u8; 16 + 8 + 8 * INFO_SIZE];
    encode(0, &Request::List { first: 0, max: 8 }, &mut buf).expect("fits");
    buf
}

#[test]
fn header_errors_come_in_order() {
    let good = list_call();
    assert!(decode(&good).is_ok());
    assert_eq!(decode(&good[..15]), Err(Errno(errno::EINVAL)));
    assert_eq!(decode(&[]), Err(Errno(errno::EINVAL)));
    let big = [0u8; MAX_BUFFER + 1];
    assert_eq!(decode(&big), Err(Errno(errno::EINVAL)));
    // Another version, even with other garbage: -EACCES first.
    let mut b = good;
    b[0] ^= 1;
    b[12] = 1;
    b[4] = 99;
    assert_eq!(decode(&b), Err(Errno(errno::EACCES)));
    let mut b = good;
    b[12] = 1;
    assert_eq!(decode(&b), Err(Errno(errno::EINVAL)));
    for op in [0u32, 14, u32::MAX] {
        let mut b = good;
        b[4..8].copy_from_slice(&op.to_le_bytes());
        assert_eq!(decode(&b), Err(Errno(errno::ENOSYS)), "op {op}");
    }
}

#[test]
fn short_payloads_and_small_buffers_are_refused() {
    for op in SubOp::ALL {
        let mut b = [0u8; 16];
        b[..4].copy_from_slice(&INTERFACE_VERSION.to_le_bytes());
        b[4..8].copy_from_slice(&(op as u32).to_le_bytes());
        let r = decode(&b);
        let replies = matches!(op, SubOp::GetInfo | SubOp::Physinfo);
        if op.request_size() == 0 && !replies {
            assert!(r.is_ok(), "{op:?}");
        } else if replies {
            assert_eq!(r, Err(Errno(errno::ENOBUFS)), "{op:?}");
        } else {
            assert_eq!(r, Err(Errno(errno::EINVAL)), "{op:?}");
        }
    }
    // A list of 8 in a buffer with room for 7 records.
    let good = list_call();
    assert_eq!(decode(&good[..good.len() - 1]), Err(Errno(errno::ENOBUFS)));
    let mut out = [0u8; 20];
    assert_eq!(
        encode(0, &Request::List { first: 0, max: 1 }, &mut out),
        Err(Errno(errno::ENOBUFS))
    );
}

#[test]
fn counts_are_bounded() {
    let mut b = list_call();
    b[20..24].copy_from_slice(&(MAX_LIST + 1).to_le_bytes());
    assert_eq!(decode(&b), Err(Errno(errno::E2BIG)));
    b[20..24].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(decode(&b), Err(Errno(errno::E2BIG)));
    b[20..24].copy_from_slice(&0u32.to_le_bytes());
    assert_eq!(decode(&b), Err(Errno(errno::EINVAL)));

    let mut buf = [0u8; MAX_BUFFER];
    let n = encode(1, &Request::ConsoleWrite(b"abc"), &mut buf).expect("fits");
    // A count larger than the bytes given.
    buf[16..20].copy_from_slice(&200u32.to_le_bytes());
    assert_eq!(decode(&buf[..n]), Err(Errno(errno::EINVAL)));
    buf[16..20].copy_from_slice(&(MAX_CONSOLE_WRITE + 1).to_le_bytes());
    assert_eq!(decode(&buf), Err(Errno(errno::E2BIG)));

    let n = encode(
        1,
        &Request::ConsoleRead {
            from: 0,
            max: MAX_CONSOLE_READ,
        },
        &mut buf,
    )
    .expect("fits");
    assert_eq!(n, MAX_BUFFER);
    buf[24..28].copy_from_slice(&(MAX_CONSOLE_READ + 1).to_le_bytes());
    assert_eq!(decode(&buf), Err(Errno(errno::E2BIG)));

    let n = encode(
        1,
        &Request::Populate {
            gpa: 0,
            source: 0,
            length: MAX_POPULATE + 1,
        },
        &mut buf,
    )
    .expect("fits");
    assert_eq!(decode(&buf[..n]), Err(Errno(errno::E2BIG)));
    let n = encode(
        1,
        &Request::Populate {
            gpa: u64::MAX - 10,
            source: 0,
            length: 4096,
        },
        &mut buf,
    )
    .expect("fits");
    assert_eq!(decode(&buf[..n]), Err(Errno(errno::EINVAL)));
}

#[test]
fn create_checks_its_fields() {
    let bad = |f: &dyn Fn(&mut CreateArgs), want: i64| {
        let mut a = create_args();
        f(&mut a);
        let mut buf = [0u8; 128];
        let n = encode(0, &Request::Create(a), &mut buf).expect("fits");
        assert_eq!(decode(&buf[..n]), Err(Errno(want)), "{a:?}");
    };
    bad(&|a| a.memory = 0, errno::EINVAL);
    bad(&|a| a.memory = (2 << 20) + 4096, errno::EINVAL);
    bad(&|a| a.vcpus = 0, errno::EINVAL);
    bad(&|a| a.vcpus = MAX_VCPUS + 1, errno::E2BIG);
    bad(&|a| a.flags = 1 << 5, errno::EINVAL);
    bad(&|a| a.weight = 0, errno::EINVAL);
    bad(&|a| a.name = Name::new("").expect("empty"), errno::EINVAL);
    bad(
        &|a| a.name = Name::new("has space").expect("short"),
        errno::EINVAL,
    );
    // A name field without its NUL, or with bytes after it.
    let mut buf = [0u8; 128];
    let n = encode(0, &Request::Create(create_args()), &mut buf).expect("fits");
    let mut b = buf;
    b[48..80].fill(b'a');
    assert_eq!(decode(&b[..n]), Err(Errno(errno::EINVAL)));
    let mut b = buf;
    b[79] = b'x';
    assert_eq!(decode(&b[..n]), Err(Errno(errno::EINVAL)));
    assert!(Name::new(&"n".repeat(NAME_LEN)).is_none());
    assert!(Name::new(&"n".repeat(NAME_LEN - 1)).is_some());
}

#[test]
fn vcpu_start_checks_each_mode() {
    let pvh = VcpuStart {
        vcpu: 0,
        mode: StartMode::Pvh32,
        rip: 0x100_0000,
        start_info: 0x1000,
        boot_params: 0,
        cr3: 0,
        gdt_base: 0,
        gdt_limit: 0,
    };
    let linux = VcpuStart {
        mode: StartMode::Linux64,
        rip: 0xffff_ffff_8100_0000,
        start_info: 0,
        boot_params: 0x7000,
        cr3: 0x1000,
        ..pvh
    };
    let refused = |s: VcpuStart| {
        let mut buf = [0u8; 128];
        let n = encode(1, &Request::SetVcpuStart(s), &mut buf).expect("fits");
        decode(&buf[..n]) == Err(Errno(errno::EINVAL))
    };
    assert!(!refused(pvh) && !refused(linux));
    assert!(refused(VcpuStart {
        rip: 1 << 32,
        ..pvh
    }));
    assert!(refused(VcpuStart { cr3: 0x1000, ..pvh }));
    assert!(refused(VcpuStart {
        rip: 0x8000_0000_0000_0000,
        ..linux
    }));
    assert!(refused(VcpuStart {
        cr3: 0x1001,
        ..linux
    }));
    assert!(refused(VcpuStart {
        gdt_limit: 0x1_0000,
        ..linux
    }));
    assert!(refused(VcpuStart {
        vcpu: MAX_VCPUS,
        ..linux
    }));
    // An unknown mode.
    let mut buf = [0u8; 128];
    let n = encode(1, &Request::SetVcpuStart(pvh), &mut buf).expect("fits");
    buf[20..24].copy_from_slice(&3u32.to_le_bytes());
    assert_eq!(decode(&buf[..n]), Err(Errno(errno::EINVAL)));
}

#[test]
fn shutdown_and_sched_check_their_fields() {
    let mut buf = [0u8; 64];
    for reason in [2u32, 3, 4, u32::MAX] {
        let n = encode(1, &Request::Shutdown { reason }, &mut buf).expect("fits");
        assert_eq!(decode(&buf[..n]), Err(Errno(errno::EINVAL)), "{reason}");
    }
    let n = encode(
        1,
        &Request::Sched(SchedArgs {
            flags: sched_flags::WEIGHT,
            weight: 0,
            cap: 0,
        }),
        &mut buf,
    )
    .expect("fits");
    assert_eq!(decode(&buf[..n]), Err(Errno(errno::EINVAL)));
    let n = encode(
        1,
        &Request::Sched(SchedArgs {
            flags: 4,
            weight: 1,
            cap: 0,
        }),
        &mut buf,
    )
    .expect("fits");
    assert_eq!(decode(&buf[..n]), Err(Errno(errno::EINVAL)));
    // Only the cap: a weight of 0 is ignored.
    let n = encode(
        1,
        &Request::Sched(SchedArgs {
            flags: sched_flags::CAP,
            weight: 0,
            cap: 0,
        }),
        &mut buf,
    )
    .expect("fits");
    assert!(decode(&buf[..n]).is_ok());
}

fn info(id: u32, name: &str) -> DomainInfo {
    DomainInfo {
        id,
        state: DomainState::Paused,
        flags: info_flags::CONTROL,
        vcpus: 2,
        memory: 512 << 20,
        cpu_time_ns: 1_234_567_890,
        weight: 256,
        cap: 0,
        exit_code: 7,
        affinity: 3,
        name: Name::new(name).expect("short"),
    }
}

#[test]
fn list_replies_round_trip() {
    let records = [
        info(0, "Domain-0"),
        info(1, "t1"),
        info(2, "a-much-longer-name"),
    ];
    let mut reply = [0u8; 8 + 3 * INFO_SIZE];
    assert_eq!(encode_list(5, &records, &mut reply), reply.len());
    let (count, total) = decode_list(&reply, 3).expect("valid");
    assert_eq!((count, total), (3, 5));
    for (i, r) in records.iter().enumerate() {
        assert_eq!(list_record(&reply, i as u32).as_ref(), Some(r));
    }
    assert_eq!(list_record(&reply, 3), None);
    // More records claimed than asked for or than the reply holds.
    assert_eq!(decode_list(&reply, 2), None);
    assert_eq!(decode_list(&reply[..8 + 2 * INFO_SIZE], 3), None);
    // An unknown state.
    let mut bad = reply;
    bad[8 + 4] = 9;
    assert_eq!(list_record(&bad, 0), None);
}

#[test]
fn info_layout_is_as_documented() {
    let mut b = [0xAAu8; INFO_SIZE];
    info(0x0102_0304, "Domain-0").encode(&mut b);
    assert_eq!(&b[0..4], &[4, 3, 2, 1]);
    assert_eq!(&b[4..8], &[1, 0, 0, 0]);
    assert_eq!(&b[8..12], &[1, 0, 0, 0]);
    assert_eq!(&b[12..16], &[2, 0, 0, 0]);
    assert_eq!(
        u64::from_le_bytes(b[16..24].try_into().expect("8")),
        512 << 20
    );
    assert_eq!(
        u64::from_le_bytes(b[24..32].try_into().expect("8")),
        1_234_567_890
    );
    assert_eq!(&b[32..36], &[0, 1, 0, 0]);
    assert_eq!(&b[36..40], &[7, 0, 0, 0]);
    assert_eq!(&b[48..57], b"Domain-0\0");
    assert!(b[57..80].iter().all(|&x| x == 0));
}

#[test]
fn other_replies_round_trip() {
    let mut r = [0u8; 64];
    assert_eq!(encode_sched(300, 25, &mut r), 8);
    assert_eq!(decode_sched(&r), Some((300, 25)));
    let mut r = [0u8; 16 + 5];
    r[16..].copy_from_slice(b"hello");
    assert_eq!(encode_console_read(99, 5, 3, &mut r), 21);
    assert_eq!(decode_console_read(&r), Some((99, 3, &b"hello"[..])));
    assert_eq!(decode_console_read(&r[..20]), None);
    assert_eq!(encode_created(4, &mut r), 8);
    assert_eq!(&r[..8], &[4, 0, 0, 0, 0, 0, 0, 0]);
}

#[test]
fn errno_results() {
    assert_eq!(Errno(errno::EPERM).result(), (-1i64) as u64);
    assert_eq!(
        Errno::from_result((-13i64) as u64),
        Some(Errno(errno::EACCES))
    );
    assert_eq!(Errno::from_result(0), None);
    assert_eq!(Errno::from_result(5), None);
    assert_eq!(Errno(errno::EACCES).name(), "EACCES");
}

#[test]
fn hypercall_number_is_reachable_through_privcmd() {
    // 56-127: above Xen's arch range (48-55), below the 128 that kernels up to 6.1.122 refuse.
    const { assert!(HYPERCALL >= 56 && HYPERCALL < 128) };
    // The largest call fits the one page ring 0 copies.
    for r in [
        Request::List {
            first: 0,
            max: MAX_LIST,
        },
        Request::ConsoleRead {
            from: 0,
            max: MAX_CONSOLE_READ,
        },
    ] {
        assert!(r.buffer_size() <= MAX_BUFFER);
    }
}

#[test]
fn physinfo_round_trip() {
    let mut b = [0u8; HEADER_SIZE + PHYSINFO_SIZE];
    let n = encode(0, &Request::Physinfo, &mut b).unwrap();
    assert_eq!(n, HEADER_SIZE + PHYSINFO_SIZE);
    assert_eq!(decode(&b[..n]), Ok((0, Request::Physinfo)));
    let mut reply = [0u8; PHYSINFO_SIZE];
    encode_physinfo(1 << 30, 600 << 20, 2, &mut reply);
    assert_eq!(decode_physinfo(&reply), Some((1 << 30, 600 << 20, 2)));
    assert_eq!(decode_physinfo(&reply[..20]), None);
}
