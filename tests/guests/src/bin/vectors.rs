//! Vector registers survive exits and vCPU switches: XMM0-15 (and the YMM
//! upper halves when AVX can be enabled) and MXCSR hold a pattern derived
//! from `seed=`, while a loop of CPUIDs (each one exits to the hypervisor)
//! runs; the registers are checked every `check=` iterations. Two of these
//! guests with different seeds on one CPU check that the hypervisor keeps
//! each vCPU's vector state apart.
//!
//! Options: `seed=7` (default 1), `iterations=200000`, `check=1000`,
//! `avx=0` (test XMM only, no `xsetbv`), `corrupt=R` (a self-check of the
//! checker: halfway through, flip a bit of register R's top qword: the
//! guest must then fail naming that register).
//!
//! The target is soft-float: compiled code never touches the vector
//! registers, so only the asm below does.

#![no_std]
#![no_main]

use basalt_test_guests::cpu::{self, cpuid};
use basalt_test_guests::{arg_u64, fail, pass, println};
use core::arch::asm;
use core::hint::black_box;

basalt_test_guests::entry!(main);

/// 16 registers of 32 bytes (YMM width; XMM uses the low 16).
#[repr(C, align(32))]
#[derive(Clone, Copy, PartialEq, Eq)]
struct Regs([[u64; 4]; 16]);

/// SplitMix64: a well-spread pattern from the seed.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

fn pattern(seed: u64) -> Regs {
    let mut regs = Regs([[0; 4]; 16]);
    for (r, reg) in regs.0.iter_mut().enumerate() {
        for (q, word) in reg.iter_mut().enumerate() {
            *word = mix(seed.wrapping_mul(64).wrapping_add((r * 4 + q) as u64));
        }
    }
    regs
}

/// MXCSR with all exceptions masked and a seed-dependent rounding mode.
fn mxcsr_pattern(seed: u64) -> u32 {
    0x1f80 | (((seed & 3) as u32) << 13)
}

fn load_xmm(regs: &Regs) {
    // SAFETY: reads the 512 bytes of `regs`; writes XMM0-15, which compiled
    // code (soft-float) never uses.
    unsafe {
        asm!(
            "movdqu xmm0, [{p}]",
            "movdqu xmm1, [{p} + 32]",
            "movdqu xmm2, [{p} + 64]",
            "movdqu xmm3, [{p} + 96]",
            "movdqu xmm4, [{p} + 128]",
            "movdqu xmm5, [{p} + 160]",
            "movdqu xmm6, [{p} + 192]",
            "movdqu xmm7, [{p} + 224]",
            "movdqu xmm8, [{p} + 256]",
            "movdqu xmm9, [{p} + 288]",
            "movdqu xmm10, [{p} + 320]",
            "movdqu xmm11, [{p} + 352]",
            "movdqu xmm12, [{p} + 384]",
            "movdqu xmm13, [{p} + 416]",
            "movdqu xmm14, [{p} + 448]",
            "movdqu xmm15, [{p} + 480]",
            p = in(reg) regs,
            options(nostack, readonly, preserves_flags),
        );
    }
}

fn store_xmm(regs: &mut Regs) {
    // SAFETY: writes the 512 bytes of `regs` (the low 16 of each 32).
    unsafe {
        asm!(
            "movdqu [{p}], xmm0",
            "movdqu [{p} + 32], xmm1",
            "movdqu [{p} + 64], xmm2",
            "movdqu [{p} + 96], xmm3",
            "movdqu [{p} + 128], xmm4",
            "movdqu [{p} + 160], xmm5",
            "movdqu [{p} + 192], xmm6",
            "movdqu [{p} + 224], xmm7",
            "movdqu [{p} + 256], xmm8",
            "movdqu [{p} + 288], xmm9",
            "movdqu [{p} + 320], xmm10",
            "movdqu [{p} + 352], xmm11",
            "movdqu [{p} + 384], xmm12",
            "movdqu [{p} + 416], xmm13",
            "movdqu [{p} + 448], xmm14",
            "movdqu [{p} + 480], xmm15",
            p = in(reg) regs,
            options(nostack, preserves_flags),
        );
    }
}

fn load_ymm(regs: &Regs) {
    // SAFETY: as `load_xmm`, 32 bytes per register; AVX is enabled in
    // XCR0 and CR4.OSXSAVE is set (checked by the caller).
    unsafe {
        asm!(
            "vmovdqu ymm0, [{p}]",
            "vmovdqu ymm1, [{p} + 32]",
            "vmovdqu ymm2, [{p} + 64]",
            "vmovdqu ymm3, [{p} + 96]",
            "vmovdqu ymm4, [{p} + 128]",
            "vmovdqu ymm5, [{p} + 160]",
            "vmovdqu ymm6, [{p} + 192]",
            "vmovdqu ymm7, [{p} + 224]",
            "vmovdqu ymm8, [{p} + 256]",
            "vmovdqu ymm9, [{p} + 288]",
            "vmovdqu ymm10, [{p} + 320]",
            "vmovdqu ymm11, [{p} + 352]",
            "vmovdqu ymm12, [{p} + 384]",
            "vmovdqu ymm13, [{p} + 416]",
            "vmovdqu ymm14, [{p} + 448]",
            "vmovdqu ymm15, [{p} + 480]",
            p = in(reg) regs,
            options(nostack, readonly, preserves_flags),
        );
    }
}

fn store_ymm(regs: &mut Regs) {
    // SAFETY: as `store_xmm`, 32 bytes per register; AVX is enabled.
    unsafe {
        asm!(
            "vmovdqu [{p}], ymm0",
            "vmovdqu [{p} + 32], ymm1",
            "vmovdqu [{p} + 64], ymm2",
            "vmovdqu [{p} + 96], ymm3",
            "vmovdqu [{p} + 128], ymm4",
            "vmovdqu [{p} + 160], ymm5",
            "vmovdqu [{p} + 192], ymm6",
            "vmovdqu [{p} + 224], ymm7",
            "vmovdqu [{p} + 256], ymm8",
            "vmovdqu [{p} + 288], ymm9",
            "vmovdqu [{p} + 320], ymm10",
            "vmovdqu [{p} + 352], ymm11",
            "vmovdqu [{p} + 384], ymm12",
            "vmovdqu [{p} + 416], ymm13",
            "vmovdqu [{p} + 448], ymm14",
            "vmovdqu [{p} + 480], ymm15",
            p = in(reg) regs,
            options(nostack, preserves_flags),
        );
    }
}

fn load_mxcsr(value: u32) {
    // SAFETY: a valid MXCSR (reserved bits clear); CR4.OSFXSR is set.
    unsafe { asm!("ldmxcsr [{}]", in(reg) &value, options(nostack, readonly)) };
}

fn store_mxcsr() -> u32 {
    let mut value = 0u32;
    // SAFETY: writes the 4 bytes of `value`.
    unsafe { asm!("stmxcsr [{}]", in(reg) &mut value, options(nostack, preserves_flags)) };
    value
}

/// The first register (and qword) that differs: `(register, qword)`.
fn first_difference(want: &Regs, got: &Regs, qwords: usize) -> Option<(usize, usize)> {
    (0..16).find_map(|r| {
        (0..qwords)
            .find(|&q| want.0[r][q] != got.0[r][q])
            .map(|q| (r, q))
    })
}

fn main(cmdline: &str) -> u32 {
    let seed = arg_u64(cmdline, "seed", 1);
    let iterations = arg_u64(cmdline, "iterations", 200_000);
    let every = arg_u64(cmdline, "check", 1000).max(1);
    let avx = arg_u64(cmdline, "avx", 1) != 0 && cpu::enable_avx();
    let (width, qwords, reg) = if avx {
        (256, 4, "ymm")
    } else {
        (128, 2, "xmm")
    };
    println!(
        "vectors: seed {seed}, {iterations} iterations, checking {reg}0-15 ({width} bits) and MXCSR every {every}"
    );

    let want = pattern(seed);
    let want_mxcsr = mxcsr_pattern(seed);
    let mut got = Regs([[0; 4]; 16]);
    if avx {
        load_ymm(&want);
    } else {
        load_xmm(&want);
    }
    load_mxcsr(want_mxcsr);

    let corrupt = arg_u64(cmdline, "corrupt", u64::MAX);
    let progress = (iterations / 10).max(1);
    let mut work = seed;
    for i in 1..=iterations {
        // An exit to the hypervisor, then some integer work.
        let (a, b, c, d) = cpuid(0, 0);
        work = mix(work ^ u64::from(a ^ b ^ c ^ d));
        black_box(work);

        if i == iterations / 2 && corrupt < 16 {
            let mut bad = want;
            bad.0[corrupt as usize][qwords - 1] ^= 1;
            println!("vectors: corrupting {reg}{corrupt} as asked (corrupt={corrupt})");
            if avx {
                load_ymm(&bad);
            } else {
                load_xmm(&bad);
            }
        }
        if i % every == 0 || i == iterations {
            if avx {
                store_ymm(&mut got);
            } else {
                store_xmm(&mut got);
            }
            if let Some((r, q)) = first_difference(&want, &got, qwords) {
                return fail!(
                    "{reg}{r} changed at iteration {i}: qword {q} is {:#018x}, expected {:#018x}",
                    got.0[r][q],
                    want.0[r][q]
                );
            }
            let mxcsr = store_mxcsr();
            if mxcsr != want_mxcsr {
                return fail!(
                    "MXCSR changed at iteration {i}: {mxcsr:#x}, expected {want_mxcsr:#x}"
                );
            }
        }
        if i % progress == 0 {
            println!("vectors: seed {seed}: {i}/{iterations} iterations, registers intact");
        }
    }
    pass()
}
