/*
 * PVH entry of the Basalt test guests (AT&T syntax).
 *
 * The PVH boot ABI (Xen's public `arch-x86/hvm/start_info.h` and
 * `elfnote.h`): the loader reads the guest-physical entry point from the ELF
 * note XEN_ELFNOTE_PHYS32_ENTRY (type 18, name "Xen") and starts the vCPU
 * there in 32-bit protected mode with paging off, flat 4 GiB code and data
 * segments, interrupts off and %ebx = guest-physical address of the
 * `hvm_start_info`.
 *
 * `_pvh_start` zeroes .bss, identity-maps the first {MAPPED_GIB} GiB with
 * 2 MiB pages, enters long mode, enables SSE (and XSAVE when the CPU has
 * it) and calls `guest_entry(start_info)`, defined by the guest binary
 * through `basalt_test_guests::entry!`.
 *
 * `pvh_secondary_start` is where the other vCPUs start (src/smp.rs).
 *
 * Placeholders in braces are `const` operands of the `global_asm!` that
 * includes this file (src/lib.rs).
 */

    .set XEN_ELFNOTE_PHYS32_ENTRY, 18
    .set CODE64_SEL, 0x08
    .set DATA_SEL, 0x10
    .set MSR_EFER, 0xc0000080
    .set EFER_LME, 1 << 8
    .set CR0_PE, 1 << 0
    .set CR0_MP, 1 << 1
    .set CR0_EM, 1 << 2
    .set CR0_TS, 1 << 3
    .set CR0_NE, 1 << 5
    .set CR0_PG, 1 << 31
    .set CR4_PAE, 1 << 5
    .set CR4_OSFXSR, 1 << 9
    .set CR4_OSXMMEXCPT, 1 << 10
    .set CR4_OSXSAVE, 1 << 18
    .set PTE_P_RW, 0x3
    .set PDE_P_RW_PS, 0x83

/* The PVH entry note: namesz 4 ("Xen\0"), descsz 4, type 18, then the
   32-bit guest-physical address of `_pvh_start`. */
    .section .note.Xen, "a", @note
    .balign 4
    .long 4
    .long 4
    .long XEN_ELFNOTE_PHYS32_ENTRY
    .asciz "Xen"
    .balign 4
    .long _pvh_start
    .balign 4

    .section .text.pvh_start, "ax", @progbits
    .code32
    .globl _pvh_start
    .type _pvh_start, @function
_pvh_start:
    cli
    cld
    /* Keep the start_info address in %esi: the code below uses the others. */
    movl %ebx, %esi

    /* Zero .bss: the stack and the page tables live there. */
    movl $__bss_start, %edi
    movl $__bss_end, %ecx
    subl %edi, %ecx
    shrl $2, %ecx
    xorl %eax, %eax
    rep stosl

    movl $pvh_stack_top, %esp

    /* PML4[0] -> PDPT. */
    movl $pvh_pdpt, %eax
    orl $PTE_P_RW, %eax
    movl %eax, pvh_pml4

    /* PDPT[i] -> PD i, one per GiB. */
    movl $pvh_pd, %eax
    orl $PTE_P_RW, %eax
    movl $pvh_pdpt, %edi
    movl ${MAPPED_GIB}, %ecx
1:  movl %eax, (%edi)
    addl $4096, %eax
    addl $8, %edi
    loop 1b

    /* PD entries: 2 MiB pages, virtual == physical; %edx:%eax counts up. */
    movl $pvh_pd, %edi
    xorl %eax, %eax
    xorl %edx, %edx
    movl ${MAPPED_GIB} * 512, %ecx
2:  movl %eax, %ebx
    orl $PDE_P_RW_PS, %ebx
    movl %ebx, (%edi)
    movl %edx, 4(%edi)
    addl $0x200000, %eax
    adcl $0, %edx
    addl $8, %edi
    loop 2b

    /* Long mode: PAE, CR3, EFER.LME, then paging. */
    movl %cr4, %eax
    orl $CR4_PAE, %eax
    movl %eax, %cr4
    movl $pvh_pml4, %eax
    movl %eax, %cr3
    movl $MSR_EFER, %ecx
    rdmsr
    orl $EFER_LME, %eax
    wrmsr
    lgdt pvh_gdt_desc
    movl %cr0, %eax
    orl $(CR0_PG | CR0_PE), %eax
    movl %eax, %cr0
    ljmp $CODE64_SEL, $pvh_start64

    .code64
pvh_start64:
    movl $DATA_SEL, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    movl %eax, %fs
    movl %eax, %gs
    movq $pvh_stack_top, %rsp

    /* SSE: CR0.EM and TS clear, MP and NE set; CR4.OSFXSR and OSXMMEXCPT. */
    movq %cr0, %rax
    andq $~(CR0_EM | CR0_TS), %rax
    orq $(CR0_MP | CR0_NE), %rax
    movq %rax, %cr0
    movq %cr4, %rax
    orq $(CR4_OSFXSR | CR4_OSXMMEXCPT), %rax
    movq %rax, %cr4

    /* CR4.OSXSAVE when CPUID.1:ECX.XSAVE (bit 26). */
    movl $1, %eax
    xorl %ecx, %ecx
    cpuid
    btl $26, %ecx
    jnc 3f
    movq %cr4, %rax
    orq $CR4_OSXSAVE, %rax
    movq %rax, %cr4
3:
    movl %esi, %edi         /* zero-extends: start_info, the first argument */
    xorl %ebp, %ebp
    call guest_entry
4:  cli
    hlt
    jmp 4b
    .size _pvh_start, . - _pvh_start

/* Secondary vCPUs, started by vCPU 0 with VCPUOP_initialise in 64-bit mode
   (VCPU_HVM_MODE_64B): paging on with vCPU 0's CR0/CR3/CR4/EFER, flat
   64-bit segments with selectors of the hypervisor's choosing, GDTR and
   IDTR not ours, interrupts off, %rsp = top of this vCPU's stack,
   %rdi = vCPU id. Load our GDT, reload every segment register (CS through
   a far return), then `basalt_guest_secondary(id)` (src/smp.rs) sets the
   per-CPU state and the IDT. */
    .section .text.pvh_secondary, "ax", @progbits
    .code64
    .globl pvh_secondary_start
    .type pvh_secondary_start, @function
pvh_secondary_start:
    cli
    cld
    lgdt pvh_gdt_desc(%rip)
    movl $DATA_SEL, %eax
    movl %eax, %ds
    movl %eax, %es
    movl %eax, %ss
    movl %eax, %fs
    movl %eax, %gs
    pushq $CODE64_SEL
    leaq 1f(%rip), %rax
    pushq %rax
    lretq
1:  andq $~15, %rsp
    xorl %ebp, %ebp
    call basalt_guest_secondary
2:  cli
    hlt
    jmp 2b
    .size pvh_secondary_start, . - pvh_secondary_start

/* Exception stubs for vectors 0-31: push a zero error code where the CPU
   pushes none, then the vector, and go to the common path, which saves the
   general registers and calls `basalt_guest_exception(&mut frame)`. */
    .section .text.pvh_isr, "ax", @progbits
    .code64
    .irp vec, 0,1,2,3,4,5,6,7,9,15,16,18,19,20,22,23,24,25,26,27,28,31
pvh_isr_\vec:
    pushq $0
    pushq $\vec
    jmp pvh_isr_common
    .endr
    .irp vec, 8,10,11,12,13,14,17,21,29,30
pvh_isr_\vec:
    pushq $\vec
    jmp pvh_isr_common
    .endr

pvh_isr_common:
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    pushq %rsi
    pushq %rdi
    pushq %rbp
    pushq %r8
    pushq %r9
    pushq %r10
    pushq %r11
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    /* 15 registers + vector + error code + the CPU's 5 words: 176 bytes,
       and the CPU aligned %rsp to 16 before pushing: aligned for the call. */
    movq %rsp, %rdi
    cld
    call basalt_guest_exception
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %r11
    popq %r10
    popq %r9
    popq %r8
    popq %rbp
    popq %rdi
    popq %rsi
    popq %rdx
    popq %rcx
    popq %rbx
    popq %rax
    addq $16, %rsp
    iretq

/* Interrupt stubs for vectors 32-255: no error code; the common path hands
   them to `basalt_guest_exception`, which passes them to the interrupt hook. */
    .irp vec, 32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63,64,65,66,67,68,69,70,71,72,73,74,75,76,77,78,79,80,81,82,83,84,85,86,87,88,89,90,91,92,93,94,95,96,97,98,99,100,101,102,103,104,105,106,107,108,109,110,111,112,113,114,115,116,117,118,119,120,121,122,123,124,125,126,127,128,129,130,131,132,133,134,135,136,137,138,139,140,141,142,143,144,145,146,147,148,149,150,151,152,153,154,155,156,157,158,159,160,161,162,163,164,165,166,167,168,169,170,171,172,173,174,175,176,177,178,179,180,181,182,183,184,185,186,187,188,189,190,191,192,193,194,195,196,197,198,199,200,201,202,203,204,205,206,207,208,209,210,211,212,213,214,215,216,217,218,219,220,221,222,223,224,225,226,227,228,229,230,231,232,233,234,235,236,237,238,239,240,241,242,243,244,245,246,247,248,249,250,251,252,253,254,255
pvh_isr_\vec:
    pushq $0
    pushq $\vec
    jmp pvh_isr_common
    .endr

    .section .rodata.pvh_isr_table, "a", @progbits
    .balign 8
    .globl basalt_guest_isr_table
basalt_guest_isr_table:
    .irp vec, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad pvh_isr_\vec
    .endr
    .irp vec, 32,33,34,35,36,37,38,39,40,41,42,43,44,45,46,47,48,49,50,51,52,53,54,55,56,57,58,59,60,61,62,63,64,65,66,67,68,69,70,71,72,73,74,75,76,77,78,79,80,81,82,83,84,85,86,87,88,89,90,91,92,93,94,95,96,97,98,99,100,101,102,103,104,105,106,107,108,109,110,111,112,113,114,115,116,117,118,119,120,121,122,123,124,125,126,127,128,129,130,131,132,133,134,135,136,137,138,139,140,141,142,143,144,145,146,147,148,149,150,151,152,153,154,155,156,157,158,159,160,161,162,163,164,165,166,167,168,169,170,171,172,173,174,175,176,177,178,179,180,181,182,183,184,185,186,187,188,189,190,191,192,193,194,195,196,197,198,199,200,201,202,203,204,205,206,207,208,209,210,211,212,213,214,215,216,217,218,219,220,221,222,223,224,225,226,227,228,229,230,231,232,233,234,235,236,237,238,239,240,241,242,243,244,245,246,247,248,249,250,251,252,253,254,255
    .quad pvh_isr_\vec
    .endr

/* The GDT (in .data: the CPU sets the accessed bits, pre-set here anyway). */
    .section .data.pvh_gdt, "aw", @progbits
    .balign 16
pvh_gdt:
    .quad 0
    .quad 0x00af9b000000ffff        /* 0x08: 64-bit code, DPL 0 */
    .quad 0x00cf93000000ffff        /* 0x10: flat data, DPL 0 */
pvh_gdt_end:
    .balign 8
pvh_gdt_desc:
    .word pvh_gdt_end - pvh_gdt - 1
    .quad pvh_gdt

/* Page tables and the stack (zeroed by `_pvh_start` with the rest of .bss). */
    .section .bss.pvh, "aw", @nobits
    .balign 4096
pvh_pml4:
    .skip 4096
pvh_pdpt:
    .skip 4096
pvh_pd:
    .skip 4096 * {MAPPED_GIB}
    .balign 16
pvh_stack:
    .skip {STACK_SIZE}
    .globl pvh_stack_top
pvh_stack_top:
