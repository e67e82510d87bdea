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
 * GuestRegs layout (vcpu.rs): rax rbx rcx rdx rsi rdi rbp r8..r15, 8 bytes each.
 */
.set HOST_RSP, 0x6c14

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
    jnz 1f
    vmlaunch
    jmp .Lentry_failed
1:  vmresume
.Lentry_failed:
    /* CF=1: VMfailInvalid, ZF=1: VMfailValid. Guest values are in the
     * registers; the host's are on the stack. */
    mov $1, %eax
    jc 2f
    mov $2, %eax
2:  add $8, %rsp
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
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbx
    pop %rbp
    xor %eax, %eax
    ret
