//! How a domain's devices reach its vCPUs (docs/architecture.md, "Layers"):
//! an interrupt controller that made an interrupt, an NMI or an INIT wait
//! for a vCPU, or took a start-up IPI for one, tells the domain's
//! [`IrqSink`]; the sink hands it to whatever runs the vCPUs (the
//! scheduler, which implements [`VcpuWaker`]): a halted vCPU wakes, one
//! running on another CPU is made to exit. The devices name no scheduler.

/// The side that runs vCPUs, as the devices see it. The domain is named by
/// its id and generation: a call for an incarnation that has ended reaches
/// nothing.
pub trait VcpuWaker: Sync {
    /// Something waits in vCPU `vcpu`'s local APIC (an interrupt, an NMI,
    /// an INIT, a start-up IPI after INIT): wake it if halted, make it exit
    /// if it runs elsewhere.
    fn kick(&self, domain: u32, generation: u64, vcpu: u32);
    /// A start-up IPI with `vector` reached vCPU `vcpu`.
    fn start_up(&self, domain: u32, generation: u64, vcpu: u32, vector: u8);
}

/// A domain's connection from its interrupt controllers to its vCPUs.
#[derive(Clone, Copy)]
pub struct IrqSink {
    domain: u32,
    generation: u64,
    waker: &'static dyn VcpuWaker,
}

impl core::fmt::Debug for IrqSink {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("IrqSink")
            .field("domain", &self.domain)
            .field("generation", &self.generation)
            .finish()
    }
}

impl IrqSink {
    /// The sink of domain `domain`, incarnation `generation`, reaching its
    /// vCPUs through `waker`.
    pub fn new(domain: u32, generation: u64, waker: &'static dyn VcpuWaker) -> Self {
        Self {
            domain,
            generation,
            waker,
        }
    }

    /// What this sink hands its calls to (for the next incarnation of the
    /// domain).
    pub fn waker(&self) -> &'static dyn VcpuWaker {
        self.waker
    }

    /// See [`VcpuWaker::kick`].
    pub fn kick(&self, vcpu: u32) {
        self.waker.kick(self.domain, self.generation, vcpu);
    }

    /// See [`VcpuWaker::start_up`].
    pub fn start_up(&self, vcpu: u32, vector: u8) {
        self.waker
            .start_up(self.domain, self.generation, vcpu, vector);
    }
}
