/*
 * VMRUN and #VMEXIT (AMD APM Vol. 2 §15.5 "VMRUN Instruction", §15.6
 * "#VMEXIT", §15.17 "Global Interrupt Flag, STGI and CLGI").
 *
 * u64 svm_run(GuestRegs *regs, u64 vmcb_pa, u64 host_save_pa)
 *   Runs the guest of the VMCB at physical address `vmcb_pa` until its next
 *   #VMEXIT. `regs` holds the guest's general registers other than RAX and
 *   RSP (those two live in the VMCB save area); they are loaded before VMRUN
 *   and stored back after. `host_save_pa` is this CPU's host-save VMCB: the
 *   host's FS, GS, TR, LDTR (hidden parts included), KernelGsBase, STAR,
 *   LSTAR, CSTAR, SFMASK and SYSENTER MSRs go there with VMSAVE before the
 *   guest's are loaded with VMLOAD, and come back with VMLOAD after the
 *   exit. Returns 0; the exit code is in the VMCB.
 *
 * GuestRegs layout (arch/x86_64/gprs.rs, shared with vmx/entry.S): rax rbx
 * rcx rdx rsi rdi rbp r8..r15, 8 bytes each; the RAX slot is not used here.
 *
 * Interrupts follow Xen's sequence `cli; clgi; sti; ... vmrun; ... stgi`:
 * with GIF clear, interrupts and NMIs that arrive stay pending (the host's
 * IF=1 at VMRUN lets a physical interrupt end the guest with an INTR exit
 * when it is intercepted), and they are taken at STGI, after the host's
 * GS (per-CPU data) and TR (IST stacks) are back. The STI is not right
 * before VMRUN, so its interrupt shadow cannot leak into the guest. The
 * caller's RFLAGS (IF) are restored on return.
 *
 * Host DS, ES and SS must hold usable selectors: VMRUN saves them and
 * #VMEXIT reloads them (Basalt's GDT data selector, loaded at boot).
 */
.section .text.svm, "ax"
.code64
.global svm_run
svm_run:
    push %rbp
    push %rbx
    push %r12
    push %r13
    push %r14
    push %r15
    pushfq
    push %rdi                       /* 16(%rsp) after the two below */
    push %rsi                       /* 8(%rsp): the guest VMCB */
    push %rdx                       /* 0(%rsp): the host-save VMCB */

    cli
    clgi
    sti
    mov %rdx, %rax
    vmsave %rax                     /* the host's FS/GS/TR/LDTR and MSRs */
    mov %rsi, %rax
    vmload %rax                     /* the guest's */
    mov 8(%rdi), %rbx
    mov 16(%rdi), %rcx
    mov 24(%rdi), %rdx
    mov 32(%rdi), %rsi
    mov 48(%rdi), %rbp
    mov 56(%rdi), %r8
    mov 64(%rdi), %r9
    mov 72(%rdi), %r10
    mov 80(%rdi), %r11
    mov 88(%rdi), %r12
    mov 96(%rdi), %r13
    mov 104(%rdi), %r14
    mov 112(%rdi), %r15
    mov 40(%rdi), %rdi
    vmrun %rax

    /* #VMEXIT: GIF=0; RAX, RSP, RFLAGS (IF=1), CS, SS, DS, ES, GDTR, IDTR,
     * CR0/3/4 and EFER are the host's again; every other GPR holds the
     * guest's value; FS, GS, TR, LDTR are still the guest's. */
    push %rdi
    mov 24(%rsp), %rdi
    mov %rbx, 8(%rdi)
    mov %rcx, 16(%rdi)
    mov %rdx, 24(%rdi)
    mov %rsi, 32(%rdi)
    mov %rbp, 48(%rdi)
    mov %r8, 56(%rdi)
    mov %r9, 64(%rdi)
    mov %r10, 72(%rdi)
    mov %r11, 80(%rdi)
    mov %r12, 88(%rdi)
    mov %r13, 96(%rdi)
    mov %r14, 104(%rdi)
    mov %r15, 112(%rdi)
    pop %rbx
    mov %rbx, 40(%rdi)
    vmsave %rax                     /* RAX is the guest VMCB again */
    pop %rax
    vmload %rax                     /* the host's FS/GS/TR/LDTR back */
    add $16, %rsp
    /* The caller-saved registers still hold guest values that Basalt's
     * code never reads but could use under speculation: cleared. */
    xor %ecx, %ecx
    xor %edx, %edx
    xor %esi, %esi
    xor %edi, %edi
    xor %r8d, %r8d
    xor %r9d, %r9d
    xor %r10d, %r10d
    xor %r11d, %r11d
    /* Overwrite the return stack buffer before the first RET (the guest
     * may have left return predictions into Basalt's code): 32 CALLs whose
     * predicted returns are INT3s, then the stack pointer put back. */
    .rept 32
    call 1f
    int3
1:
    .endr
    add $(32 * 8), %rsp
    lfence
    stgi                            /* pending interrupts and NMIs now */
    popfq
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbx
    pop %rbp
    xor %eax, %eax
    ret
