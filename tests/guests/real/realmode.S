/*
 * realmode: a flat 16-bit guest, started by Basalt with `boot=real` in real
 * mode at 0000:7C00 (unrestricted guest; no BIOS). It checks that CR0.PE is
 * clear, writes to the console through port 0xE9, then ends through Xen's
 * sched_op hypercall with the 32-bit register convention (EAX = op, EBX,
 * ECX = arguments): exit code (Basalt's 0x4241) then SCHEDOP_shutdown.
 * On the way, `rep outsb` and `rep insb` through segments 0x07c0 (string
 * port I/O emulated in real mode).
 */
.code16
.section .text
.global _start
_start:
    cli
    xor %ax, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $0x7c00, %sp

    mov $msg_hello, %si
    call puts

    mov %cr0, %eax
    test $1, %eax
    jnz .Lfail_pe

    /* A far jump and a segment other than 0 work (real-mode addressing). */
    mov $0x07c0, %ax
    mov %ax, %ds
    mov $(msg_segment - _start), %si
    call puts
    xor %ax, %ax
    mov %ax, %ds

    /* String port I/O in real mode, through segments other than 0:
     * rep outsb from DS:SI, then rep insb from the UART scratch register
     * (COM1 + 7) into ES:DI. CX and SI/DI must end as the processor
     * leaves them. */
    mov $0x07c0, %ax
    mov %ax, %ds
    mov %ax, %es
    cld
    mov $(msg_rep - _start), %si
    mov $(msg_rep_end - msg_rep), %cx
    mov $0xe9, %dx
    rep outsb
    cmp $(msg_rep_end - _start), %si
    jne .Lfail_rep
    test %cx, %cx
    jnz .Lfail_rep
    mov $0x3ff, %dx
    mov $0x5a, %al
    out %al, %dx
    mov $(buffer - _start), %di
    mov $4, %cx
    rep insb
    cmp $(buffer - _start + 4), %di
    jne .Lfail_rep
    test %cx, %cx
    jnz .Lfail_rep
    cmpl $0x5a5a5a5a, %es:(buffer - _start)
    jne .Lfail_rep
    cmpb $0xa5, %es:(buffer - _start + 4)
    jne .Lfail_rep
    xor %ax, %ax
    mov %ax, %ds
    mov %ax, %es

    /* A #GP in real mode: `rep insw` with DI = 0xFFFF puts a word past
     * ES's 64 KiB limit. The emulated string I/O injects #GP without an
     * error code (real mode pushes none; VM entry refuses one); the
     * handler, reached through the IVT, skips the 2-byte instruction. CX
     * and DI stay as they were. */
    movw $gp_handler, (13 * 4)
    movw $0, (13 * 4 + 2)
    movb $0, gp_seen
    mov $0xffff, %di
    mov $1, %cx
    mov $0x3ff, %dx
    rep insw
    cmpb $1, gp_seen
    jne .Lfail_gp
    cmp $1, %cx
    jne .Lfail_gp
    cmp $0xffff, %di
    jne .Lfail_gp
    mov $msg_gp, %si
    call puts

    mov $msg_pass, %si
    call puts
    xor %edx, %edx          /* exit code 0 */
    jmp exit

.Lfail_pe:
    mov $msg_fail, %si
    call puts
    mov $1, %edx
    jmp exit

.Lfail_rep:
    xor %ax, %ax
    mov %ax, %ds
    mov $msg_fail_rep, %si
    call puts
    mov $1, %edx

.Lfail_gp:
    xor %ax, %ax
    mov %ax, %ds
    mov $msg_fail_gp, %si
    call puts
    mov $1, %edx
    jmp exit

/* #GP: note it and return past the 2-byte `rep insw` that raised it. */
gp_handler:
    push %bp
    mov %sp, %bp
    addw $2, 2(%bp)
    movb $1, gp_seen
    pop %bp
    iret

exit:
    /* sched_op(0x4241 exit code, code) */
    mov $29, %eax
    mov $0x4241, %ebx
    mov %edx, %ecx
    vmcall
    /* sched_op(SCHEDOP_shutdown, &reason) with reason poweroff (0) */
    movl $0, reason
    mov $29, %eax
    mov $2, %ebx
    mov $reason, %ecx
    vmcall
1:  hlt
    jmp 1b

/* Writes the NUL-terminated string at DS:SI to port 0xE9. */
puts:
    lodsb
    test %al, %al
    jz 2f
    out %al, $0xe9
    jmp puts
2:  ret

msg_hello:   .asciz "real-mode guest: started at 0000:7c00\n"
msg_segment: .asciz "real-mode guest: read through DS=0x07c0\n"
msg_pass:    .asciz "real-mode guest: CR0.PE is clear\nTEST PASS realmode\n"
msg_fail:    .asciz "TEST FAIL realmode: CR0.PE is set\n"
msg_rep:     .ascii "real-mode guest: rep outsb through DS=0x07c0\n"
msg_rep_end:
msg_fail_rep: .asciz "TEST FAIL realmode: rep outsb/insb left CX, SI, DI or memory wrong\n"
msg_gp:      .asciz "real-mode guest: #GP from rep insw past ES's limit, no error code\n"
msg_fail_gp: .asciz "TEST FAIL realmode: rep insw past ES's limit did not raise #GP as in real mode\n"
buffer:      .byte 0, 0, 0, 0, 0xa5
gp_seen:     .byte 0
.balign 4
reason:      .long 0
