//! Architecture-specific code. Only x86_64 exists; AMD-V will join Intel VT-x
//! under `x86_64` behind an arch-neutral vCPU interface.

pub mod x86_64;
