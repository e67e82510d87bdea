//! The `xen_version` sub-operations that describe Basalt's build
//! (`XENVER_compile_info`, `XENVER_changeset`): Xen's Test Framework reads
//! them (test `xsa-122`) and checks that nothing follows each string but
//! zeros. The strings are stamped by `hypervisor/build.rs`; the structures
//! are built whole by `basalt_guest::xenver` and written in one copy.

use crate::common::domain::Running;
use basalt_guest::hypercall as hc;
use basalt_guest::xenver::{self, CompileInfo};

/// Answers `xen_version(cmd, arg)` if `cmd` is one of these sub-operations:
/// `Some(0)` once written, `Some(-EFAULT)` if `arg` is not writable guest
/// memory; `None` for any other `cmd`.
pub(super) fn describe_build(v: &Running<'_>, cmd: u64, arg: u64) -> Option<u64> {
    let write =
        |bytes: &[u8]| match crate::hvm::guestmem::write_virt(&v.arch, &v.domain.ram, arg, bytes) {
            Ok(()) => 0,
            Err(()) => hc::errno_result(hc::EFAULT),
        };
    match cmd {
        hc::XENVER_COMPILE_INFO => Some(write(
            &CompileInfo {
                compiler: env!("BASALT_BUILD_COMPILER"),
                compile_by: env!("BASALT_BUILD_USER"),
                compile_domain: env!("BASALT_BUILD_HOST"),
                compile_date: env!("BASALT_BUILD_DATE"),
            }
            .to_bytes(),
        )),
        hc::XENVER_CHANGESET => Some(write(&xenver::changeset(env!("BASALT_GIT_VERSION")))),
        _ => None,
    }
}
