//! The vendor-neutral core (docs/architecture.md, "Layers"): domains and
//! their lifecycle, the scheduler, exit dispatch, hypercalls, and the
//! operator's services (monitor, measurement). It uses the devices and
//! emulation of [`crate::hvm`], the vendor seam and the base; nothing below
//! it names a module here.

pub mod domain;
pub mod domctl;
pub mod exit;
pub mod hypercall;
pub mod lifecycle;
pub mod measure;
pub mod monitor;
pub mod sched;
