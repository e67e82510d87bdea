/*
 * VM entry and exit (Intel SDM Vol. 3C, "VM Entries", "VM Exits").
 *
 * u64 vmx_enter(GuestRegs *regs, u64 launched)
 *   Saves the host's callee-saved registers and `regs` on the stack, points
 *   HOST_RSP at that frame, loads the guest's general registers from `regs`
 *   and executes VMLAUNCH (launched == 0) or VMRESUME. Returns 0 after a VM
 *   exit (guest registers stored back into `regs`), 1 if the instruction
 *   failed with VMfailInvalid, 2 with VMfailValid.
 *
 * GuestRegs layout (arch/x86_64/gprs.rs): rax rbx rcx rdx rsi rdi rbp r8..r15, 8 bytes each.
 *
 * Speculative-execution hygiene (docs/vmx.md; decided in vmx/spec.rs, bits
 * of `basalt_spec_flags`): before entry an L1D flush (IA32_FLUSH_CMD) while
 * host registers are still free, and VERW as the last instruction; after
 * exit, before the first RET, the return stack buffer is overwritten.
 */
.set HOST_RSP, 0x6c14
.set SPEC_RSB_FULL, 1
.set SPEC_RSB_LITE, 2
.set SPEC_L1D_FLUSH, 4
.set SPEC_VERW, 8
.set MSR_FLUSH_CMD, 0x10b

.section .text.vmx, "ax"
.code64
.global vmx_enter
vmx_enter:
    push %rbp
    push %rbx
    push %r12
    push %r13
    push %r14
    push %r15
    push %rdi
    mov $HOST_RSP, %eax
    vmwrite %rsp, %rax
    jbe .Lvmwrite_failed

    testb $SPEC_L1D_FLUSH, basalt_spec_flags(%rip)
    jz .Lno_l1d_flush
    /* IA32_FLUSH_CMD.L1D_FLUSH: write back and invalidate the L1 data
     * cache, so the guest cannot sample host data through L1TF. */
    mov $MSR_FLUSH_CMD, %ecx
    mov $1, %eax
    xor %edx, %edx
    wrmsr
.Lno_l1d_flush:
    mov %rsi, %rax                  /* keep the launched flag through loads */
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
    test %rax, %rax
    mov 0(%rdi), %rax
    mov 40(%rdi), %rdi
    jnz .Lresume
    /* VERW (MD_CLEAR) clears the store, fill and load buffers; it changes
     * only ZF, and comes after the last host memory access. */
    testb $SPEC_VERW, basalt_spec_flags(%rip)
    jz 1f
    verw basalt_verw_selector(%rip)
1:  vmlaunch
    jmp .Lentry_failed
.Lresume:
    testb $SPEC_VERW, basalt_spec_flags(%rip)
    jz 2f
    verw basalt_verw_selector(%rip)
2:  vmresume
.Lentry_failed:
    /* CF=1: VMfailInvalid, ZF=1: VMfailValid. Guest values are in the
     * registers; the host's are on the stack. */
    mov $1, %eax
    jc 4f
    mov $2, %eax
4:  add $8, %rsp
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbx
    pop %rbp
    ret

.Lvmwrite_failed:
    mov $1, %eax
    jc 3f
    mov $2, %eax
3:  add $8, %rsp
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbx
    pop %rbp
    ret

/* HOST_RIP: the CPU arrives here on every VM exit, with RSP = HOST_RSP,
 * interrupts off. */
.global vmx_exit
vmx_exit:
    push %rdi
    mov 8(%rsp), %rdi
    mov %rax, 0(%rdi)
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
    pop %rax
    mov %rax, 40(%rdi)
    add $8, %rsp
    /* The caller-saved registers still hold guest values that Basalt's
     * code never reads but could use under speculation: cleared (the
     * callee-saved ones are popped below, RAX is the result). */
    xor %ecx, %ecx
    xor %edx, %edx
    xor %esi, %esi
    xor %r8d, %r8d
    xor %r9d, %r9d
    xor %r10d, %r10d
    xor %r11d, %r11d
    /* Overwrite the return stack buffer before the first RET: the guest
     * may have filled it with return predictions into Basalt's code. Each
     * of the 32 CALLs (unrolled: the cheapest sequence) pushes an entry
     * whose predicted return is an INT3 that stops speculation; the stack
     * pointer is then restored. */
    testb $SPEC_RSB_FULL, basalt_spec_flags(%rip)
    jz .Lrsb_lite
    .rept 32
    call 5f
    int3
5:
    .endr
    add $(32 * 8), %rsp
    lfence
    jmp .Lrsb_done
.Lrsb_lite:
    /* Enhanced IBRS without PBRSB_NO: one CALL covers the last RET
     * prediction the guest could leave behind. */
    testb $SPEC_RSB_LITE, basalt_spec_flags(%rip)
    jz .Lrsb_done
    call .Lrsb_lite_target
    int3
.Lrsb_lite_target:
    add $8, %rsp
    lfence
.Lrsb_done:
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbx
    pop %rbp
    xor %eax, %eax
    ret
