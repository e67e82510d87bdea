/*
 * Application-processor start-up trampoline (Intel SDM Vol. 3A §9.4.4,
 * §10.8.5). The boot CPU copies the bytes between ap_trampoline_start and
 * ap_trampoline_end to a free page below 1 MiB (from the firmware's memory
 * map, identity-mapped while CPUs start), fills in the variables at the end,
 * and sends INIT-SIPI-SIPI with the page number as the start-up vector. The
 * AP starts here in real mode at CS = page << 8, IP = 0, finds the page's
 * address from CS (so the code runs on any page), goes through protected
 * mode into long mode on the hypervisor's page tables and jumps to
 * `tr_entry(tr_arg)` on the stack `tr_stack`. The code is data until it is
 * copied: it is never run in place.
 */

.section .rodata.trampoline, "a"
.balign 16
.global ap_trampoline_start
ap_trampoline_start:
.code16
    cli
    cld
    mov %cs, %ax
    mov %ax, %ds
    movzwl %ax, %ebx
    shl $4, %ebx                    /* EBX: the page's physical address */
    /* The absolute addresses, written before paging makes the page
     * read-only (every AP writes the same values). */
    lea (tr_gdt - ap_trampoline_start)(%ebx), %eax
    mov %eax, (tr_gdt_ptr + 2 - ap_trampoline_start)
    lea (tr_pm32 - ap_trampoline_start)(%ebx), %eax
    mov %eax, (tr_jmp32 - ap_trampoline_start)
    lea (tr_lm64 - ap_trampoline_start)(%ebx), %eax
    mov %eax, (tr_jmp64 - ap_trampoline_start)
    lgdtl (tr_gdt_ptr - ap_trampoline_start)
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl *(tr_jmp32 - ap_trampoline_start)

.code32
tr_pm32:
    mov $0x10, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov %cr4, %eax
    or $(1 << 5), %eax              /* PAE */
    mov %eax, %cr4
    mov (tr_cr3 - ap_trampoline_start)(%ebx), %eax
    mov %eax, %cr3
    mov $0xc0000080, %ecx           /* EFER */
    rdmsr
    or (tr_efer - ap_trampoline_start)(%ebx), %eax         /* LME, and NXE when the boot CPU uses it */
    wrmsr
    mov %cr0, %eax
    or $0x80010000, %eax            /* PG, WP */
    mov %eax, %cr0
    ljmpl *(tr_jmp64 - ap_trampoline_start)(%ebx)

.code64
tr_lm64:
    mov $0x10, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov tr_stack(%rip), %rsp
    mov tr_arg(%rip), %rdi
    mov tr_entry(%rip), %rax
    xor %ebp, %ebp
    call *%rax
1:  cli
    hlt
    jmp 1b

.balign 8
/*
 * The descriptors have their accessed bit set already: once paging is on,
 * the page is mapped read-only (CR0.WP), and a CPU that had to set the bit
 * while loading a selector would take a page fault.
 */
tr_gdt:
    .quad 0
    .quad 0x00cf9b000000ffff        /* 0x08: 32-bit code */
    .quad 0x00cf93000000ffff        /* 0x10: data */
    .quad 0x00af9b000000ffff        /* 0x18: 64-bit code */
tr_gdt_end:
tr_gdt_ptr:
    .short tr_gdt_end - tr_gdt - 1
    .long 0                         /* tr_gdt's address */
/* Far pointers (offset, selector) to the protected and long mode code. */
tr_jmp32: .long 0
          .short 0x08
tr_jmp64: .long 0
          .short 0x18

/* Variables, filled in by the boot CPU (offsets exported below). */
.balign 8
.global ap_trampoline_vars
ap_trampoline_vars:
tr_cr3:   .long 0
tr_efer:  .long 0
tr_stack: .quad 0
tr_arg:   .quad 0
tr_entry: .quad 0
.global ap_trampoline_end
ap_trampoline_end:
