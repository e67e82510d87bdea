/*
 * Basalt's entry from a Multiboot2 loader (Multiboot2 spec §3.3): 32-bit
 * protected mode, paging off, EAX = magic, EBX = physical address of the
 * boot information. This code runs at its load address (see linker.ld),
 * checks that the CPU can run 64-bit code, zeroes .bss, builds the boot page
 * tables, enters long mode and calls `kmain(magic, info)` in the higher half
 * on the boot stack. Everything else, including the check of the magic, is
 * Rust.
 */

.set MB2_MAGIC,        0xe85250d6
.set MB2_ARCH_I386,    0
.set MB1_MAGIC,        0x1badb002
.set MB1_FLAGS,        0x00000003       /* page-align modules, memory info */
.set KERNEL_VMA,       0xffffffff80000000
.set PTE_P_RW,         0x003
.set PDE_2M,           0x083            /* present, writable, 2 MiB page */
.set COM1,             0x3f8

/* --- Multiboot2 header (spec §3.1): within the first 32 KiB, 8-aligned --- */
.section .multiboot2, "a"
.balign 8
mb2_header:
    .long MB2_MAGIC
    .long MB2_ARCH_I386
    .long mb2_header_end - mb2_header
    .long 0x100000000 - (MB2_MAGIC + MB2_ARCH_I386 + (mb2_header_end - mb2_header))
    /* end tag */
    .balign 8
    .short 0, 0
    .long 8
mb2_header_end:

/*
 * A Multiboot (version 1) header too, so that a version-1 loader (GRUB's
 * `multiboot`, QEMU's `-kernel`) starts Basalt far enough for it to say that
 * it needs a Multiboot2 loader, instead of the loader failing silently.
 */
.section .multiboot1, "a"
.balign 4
    .long MB1_MAGIC
    .long MB1_FLAGS
    .long 0x100000000 - (MB1_MAGIC + MB1_FLAGS)

.section .boot.text, "ax"
.code32
.global _start32
_start32:
    cli
    cld
    mov %eax, %esi
    mov %ebx, %ebp

    /* Zero the boot tables and the hypervisor's .bss first (loaders should,
     * but a stale page table would be fatal); the loader's EAX and EBX wait
     * in ESI and EBP. */
    xor %eax, %eax
    mov $__boot_bss_start, %edi
    mov $__boot_bss_end, %ecx
    sub %edi, %ecx
    shr $2, %ecx
    rep stosl
    mov $(__bss_start - KERNEL_VMA), %edi
    mov $(__bss_end - KERNEL_VMA), %ecx
    sub %edi, %ecx
    shr $2, %ecx
    rep stosl

    mov %esi, boot_magic
    mov %ebp, boot_info
    mov $boot_stack32_top, %esp

    /* CPUID present? (EFLAGS.ID can be toggled) */
    pushfl
    pop %eax
    mov %eax, %ecx
    xor $0x200000, %eax
    push %eax
    popfl
    pushfl
    pop %eax
    push %ecx
    popfl
    cmp %eax, %ecx
    je .Lno_long_mode

    /* Long mode present? (CPUID 0x80000001 EDX bit 29) */
    mov $0x80000000, %eax
    cpuid
    cmp $0x80000001, %eax
    jb .Lno_long_mode
    mov $0x80000001, %eax
    cpuid
    test $(1 << 29), %edx
    jz .Lno_long_mode
    mov %edx, %ebp                  /* keep: bit 20 is NX */

    /*
     * Boot page tables (replaced once Rust runs its memory manager):
     *   PML4[0]   -> boot_pdpt_low:  identity map of 0..4 GiB in 2 MiB pages
     *   PML4[511] -> boot_pdpt_high: PDPT[510] maps KERNEL_VMA -> 0..1 GiB
     */
    mov $boot_pdpt_low, %eax
    or $PTE_P_RW, %eax
    mov %eax, boot_pml4
    mov $boot_pdpt_high, %eax
    or $PTE_P_RW, %eax
    mov %eax, boot_pml4 + 511 * 8

    /* 4 page directories, 2048 entries of 2 MiB each */
    mov $boot_pd, %edi
    xor %ecx, %ecx
1:  mov %ecx, %eax
    shl $21, %eax
    or $PDE_2M, %eax
    mov %eax, (%edi, %ecx, 8)
    mov %ecx, %eax
    shr $11, %eax                   /* high dword: (index * 2 MiB) >> 32 */
    mov %eax, 4(%edi, %ecx, 8)
    inc %ecx
    cmp $2048, %ecx
    jb 1b

    /* PDPT entries for the 4 directories */
    xor %ecx, %ecx
2:  mov %ecx, %eax
    shl $12, %eax
    add $boot_pd, %eax
    or $PTE_P_RW, %eax
    mov %eax, boot_pdpt_low(, %ecx, 8)
    inc %ecx
    cmp $4, %ecx
    jb 2b
    mov $boot_pd, %eax
    or $PTE_P_RW, %eax
    mov %eax, boot_pdpt_high + 510 * 8

    /* CR4.PAE, CR3, EFER.LME (+ NXE when offered), CR0.PG|WP */
    mov %cr4, %eax
    or $(1 << 5), %eax
    mov %eax, %cr4
    mov $boot_pml4, %eax
    mov %eax, %cr3
    mov $0xc0000080, %ecx
    rdmsr
    or $(1 << 8), %eax
    test $(1 << 20), %ebp
    jz 3f
    or $(1 << 11), %eax
3:  wrmsr
    mov %cr0, %eax
    or $0x80010001, %eax
    mov %eax, %cr0

    lgdt boot_gdt_ptr
    ljmp $0x08, $long_mode_entry

.Lno_long_mode:
    mov $msg_no_long_mode, %esi
    call serial_puts32
4:  cli
    hlt
    jmp 4b

/* Writes the NUL-terminated string at ESI to COM1 by polling. */
serial_puts32:
    mov $(COM1 + 5), %dx
5:  in %dx, %al
    test $0x20, %al
    jz 5b
    lodsb
    test %al, %al
    jz 6f
    mov $COM1, %dx
    out %al, %dx
    jmp serial_puts32
6:  ret

.code64
long_mode_entry:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    xor %eax, %eax
    mov %eax, %fs
    mov %eax, %gs
    movabs $boot_stack_top, %rsp
    xor %ebp, %ebp
    mov boot_magic, %edi
    mov boot_info, %esi
    movabs $kmain, %rax
    call *%rax
7:  cli
    hlt
    jmp 7b

.section .boot.rodata, "a"
.balign 16
boot_gdt:
    .quad 0
    .quad 0x00af9a000000ffff        /* 0x08: 64-bit code */
    .quad 0x00cf92000000ffff        /* 0x10: data */
boot_gdt_end:
boot_gdt_ptr:
    .short boot_gdt_end - boot_gdt - 1
    .long boot_gdt
msg_no_long_mode:
    .ascii "Basalt: this CPU cannot run 64-bit code (no CPUID or no long mode). "
    .ascii "Basalt needs an x86_64 CPU.\r\n"
    .asciz "BASALT-VERDICT: FAIL: no long mode\r\n"

.section .boot.bss, "aw", @nobits
.balign 4096
boot_pml4:      .skip 4096
boot_pdpt_low:  .skip 4096
boot_pdpt_high: .skip 4096
boot_pd:        .skip 4 * 4096
boot_stack32:   .skip 1024
boot_stack32_top:
.balign 4
.global boot_magic
boot_magic:     .long 0
.global boot_info
boot_info:      .long 0

.section .bss.boot_stack, "aw", @nobits
.balign 4096
.global boot_stack_bottom
boot_stack_bottom:
    .skip 256 * 1024
.global boot_stack_top
boot_stack_top:
