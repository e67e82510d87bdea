//! A domain's Xen interface state (docs/control-domain.md, "State"): where
//! its shared_info and each vCPU's vcpu_info and runstate area are, its
//! event-channel table, its upcall vectors and HVM parameters; event
//! delivery into its memory (2-level: the bits are the guest's, set with
//! atomic operations) and the pvclock it reads. The hypercalls that change
//! this state are in `common::hypercall::xen`.

use super::memory::GuestRam;
use super::platform::Platform;
use alloc::vec::Vec;
use basalt_xen::evtchn::{self, Channels, EventWords};
use basalt_xen::layout::{self, Runstate, shared_info as si, vcpu_info as vi};
use basalt_xen::time::Pvclock;
use core::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use spin::Mutex;

/// No guest address set.
const NONE: u64 = u64::MAX;
/// HVM parameters kept (`HVM_PARAM_*` below this number).
pub const NR_PARAMS: usize = 40;
/// `HVM_PARAM_CALLBACK_IRQ`.
pub const PARAM_CALLBACK_IRQ: usize = 0;

/// One vCPU's part.
#[derive(Debug)]
pub struct XenVcpu {
    /// Guest-physical address of its registered `vcpu_info` (`NONE`: the
    /// default slot in shared_info, for vCPUs 0-31).
    vcpu_info: AtomicU64,
    /// Its upcall vector (`HVMOP_set_evtchn_upcall_vector`); 0: none.
    upcall_vector: AtomicU8,
    /// Guest-physical address of its runstate area (`NONE`: none).
    runstate_gpa: AtomicU64,
    /// Its run-state accounting.
    runstate: Mutex<Runstate>,
    /// Its single-shot timer fired since it last blocked: the next
    /// `SCHEDOP_block`, poll or HLT returns at once (Basalt's rule for
    /// every domain: a block ends at the timer, VIRQ_TIMER bound or not).
    timer_fired: core::sync::atomic::AtomicBool,
}

/// A domain's Xen interface.
#[derive(Debug)]
pub struct XenDomain {
    /// The control domain (privileged operations allowed).
    pub control: bool,
    /// Its event channels.
    pub channels: Mutex<Channels>,
    /// Guest-physical address of its shared_info page (`NONE`: not placed).
    shared_info: AtomicU64,
    vcpus: Vec<XenVcpu>,
    /// `HVM_PARAM_*` values.
    pub params: Mutex<[u64; NR_PARAMS]>,
    /// Host frames of its grant table (v1), by index; allocated when the
    /// domain first maps one.
    grant_frames: Mutex<Vec<u64>>,
}

/// Grant-table frames a domain may have (v1: 512 entries each).
pub const MAX_GRANT_FRAMES: u32 = 4;

/// Ports a domain may use: Xen's default `max_event_channels` for a guest
/// is 1023; the control domain gets the whole 2-level space.
fn port_limit(control: bool) -> u32 {
    if control { evtchn::MAX_PORTS } else { 1024 }
}

impl XenDomain {
    /// The state of a new domain with `vcpus` vCPUs.
    pub fn new(vcpus: u32, control: bool) -> Self {
        Self {
            control,
            channels: Mutex::new(Channels::new(vcpus, port_limit(control))),
            shared_info: AtomicU64::new(NONE),
            vcpus: (0..vcpus)
                .map(|_| XenVcpu {
                    vcpu_info: AtomicU64::new(NONE),
                    upcall_vector: AtomicU8::new(0),
                    runstate_gpa: AtomicU64::new(NONE),
                    runstate: Mutex::new(Runstate {
                        state: layout::runstate::OFFLINE,
                        ..Runstate::default()
                    }),
                    timer_fired: core::sync::atomic::AtomicBool::new(false),
                })
                .collect(),
            params: Mutex::new([0; NR_PARAMS]),
            grant_frames: Mutex::new(Vec::new()),
        }
    }

    /// Bytes Basalt holds for this interface (the boot log's figure): the
    /// structures (per-vCPU state, HVM params, the event-channel table)
    /// and the grant-table frames allocated so far (4 KiB each, at most
    /// [`MAX_GRANT_FRAMES`], allocated when the domain maps them). The
    /// shared_info and vcpu_info pages are the domain's own RAM.
    pub fn footprint(&self) -> usize {
        core::mem::size_of::<Self>()
            + self.vcpus.capacity() * core::mem::size_of::<XenVcpu>()
            + self.channels.lock().footprint()
            + self.grant_frames.lock().len() * 4096
    }

    /// Where the shared_info page is.
    pub fn shared_info(&self) -> Option<u64> {
        Some(self.shared_info.load(Ordering::SeqCst)).filter(|g| *g != NONE)
    }

    /// `XENMEM_add_to_physmap(XENMAPSPACE_shared_info)`: the page at `gpa`
    /// becomes the shared_info (as in KVM, the guest's own RAM page:
    /// zeroed, then the wall clock and each vCPU's pvclock are written).
    pub fn place_shared_info(&self, ram: &GuestRam, gpa: u64, tsc_offset: u64) -> bool {
        if !gpa.is_multiple_of(4096) || gpa.checked_add(4096).is_none_or(|end| end > ram.size()) {
            return false;
        }
        if ram.write(gpa, &[0u8; 4096]).is_err() {
            return false;
        }
        self.shared_info.store(gpa, Ordering::SeqCst);
        let wall = crate::time::wall_at_boot();
        let mut wc = [0u8; 16];
        wc[0..4].copy_from_slice(&2u32.to_le_bytes());
        wc[4..8].copy_from_slice(&(wall as u32).to_le_bytes());
        wc[12..16].copy_from_slice(&((wall >> 32) as u32).to_le_bytes());
        let _ = ram.write(gpa + si::WC_VERSION, &wc);
        for v in 0..self.vcpus.len() as u32 {
            self.write_pvclock(ram, v, tsc_offset);
        }
        true
    }

    /// Grant-table frames allocated so far.
    pub fn grant_frames(&self) -> u32 {
        self.grant_frames.lock().len() as u32
    }

    /// `XENMEM_add_to_physmap(XENMAPSPACE_grant_table)`: grant-table frame
    /// `index` (allocated now if it is the next one) appears at
    /// guest-physical `gpa`, outside the domain's RAM.
    pub fn map_grant_frame(&self, ram: &GuestRam, index: u32, gpa: u64) -> Result<(), ()> {
        let hpa = self.grant_frame(ram, index).ok_or(())?;
        ram.map_extra(gpa, hpa).map_err(|_| ())
    }

    /// Grant-table frame `index`, allocated now (with those before it)
    /// when the table is smaller; `None` past [`MAX_GRANT_FRAMES`] or
    /// without memory.
    pub fn grant_frame(&self, ram: &GuestRam, index: u32) -> Option<u64> {
        if index >= MAX_GRANT_FRAMES {
            return None;
        }
        let mut frames = self.grant_frames.lock();
        while frames.len() <= index as usize {
            frames.push(ram.alloc_frame()?);
        }
        Some(frames[index as usize])
    }

    /// Runs `f` on entry `gref` of the grant table (v1: the word of its
    /// flags and domid, and its frame), as atomics: the domain changes them
    /// at any time. `None` for a reference past the frames the domain has,
    /// or when its memory (where the frames are) was taken already.
    pub fn with_grant_entry<R>(
        &self,
        ram: &GuestRam,
        gref: u32,
        f: impl FnOnce(&AtomicU32, &AtomicU32) -> R,
    ) -> Option<R> {
        // The frames are freed with the RAM: pinned meanwhile.
        if !ram.pin() {
            return None;
        }
        let per = basalt_xen::grant::ENTRIES_PER_FRAME;
        let frames = self.grant_frames.lock();
        let result = frames.get((gref / per) as usize).map(|&hpa| {
            let at = crate::mm::DIRECT_MAP_BASE + hpa + u64::from(gref % per) * 8;
            // SAFETY: `hpa` is a 4 KiB frame allocated for this table
            // (`alloc_frame`), direct-mapped and freed only with the RAM,
            // which the pin keeps; `at` is 8-aligned within it, so both
            // 4-byte words are aligned and in the frame. An `AtomicU32` has
            // the layout of a `u32`; the guest's accesses are atomic or
            // plain aligned ones.
            let entry = unsafe { &*(at as *const [AtomicU32; 2]) };
            f(&entry[0], &entry[1])
        });
        drop(frames);
        // Nothing was mapped: no CPU can hold a translation to wait for.
        ram.unpin();
        result
    }

    /// Where vCPU `v`'s vcpu_info is.
    pub fn vcpu_info(&self, v: u32) -> Option<u64> {
        let x = self.vcpus.get(v as usize)?;
        match x.vcpu_info.load(Ordering::SeqCst) {
            NONE if v < si::LEGACY_VCPUS => self
                .shared_info()
                .map(|s| s + si::VCPU_INFO + u64::from(v) * vi::SIZE),
            NONE => None,
            gpa => Some(gpa),
        }
    }

    /// `VCPUOP_register_vcpu_info`: vCPU `v`'s vcpu_info moves to `gpa`
    /// (8-aligned, within one page of RAM); the pending state it had is
    /// carried over and its pvclock written.
    pub fn register_vcpu_info(&self, ram: &GuestRam, v: u32, gpa: u64, tsc_offset: u64) -> bool {
        let Some(x) = self.vcpus.get(v as usize) else {
            return false;
        };
        let fits = gpa.is_multiple_of(8)
            && gpa % 4096 <= 4096 - vi::SIZE
            && gpa
                .checked_add(vi::SIZE)
                .is_some_and(|end| end <= ram.size());
        if !fits {
            return false;
        }
        let mut old = [0u8; vi::SIZE as usize];
        if let Some(from) = self.vcpu_info(v) {
            let _ = ram.read(from, &mut old);
        }
        // Xen copies the old contents, so an event pending before the move
        // is not lost.
        if ram.write(gpa, &old).is_err() {
            return false;
        }
        x.vcpu_info.store(gpa, Ordering::SeqCst);
        self.write_pvclock(ram, v, tsc_offset);
        true
    }

    /// Writes vCPU `v`'s pvclock (`vcpu_info.time`) for now: the version
    /// goes odd, the body is written, the version goes even again.
    pub fn write_pvclock(&self, ram: &GuestRam, v: u32, tsc_offset: u64) {
        let Some(info) = self.vcpu_info(v) else {
            return;
        };
        let Some((mul, shift)) = basalt_xen::time::scale(crate::time::tsc_hz()) else {
            return;
        };
        let at = info + vi::TIME;
        let mut version = [0u8; 4];
        if ram.read(at, &mut version).is_err() {
            return;
        }
        let version = u32::from_le_bytes(version) | 1;
        let tsc = crate::arch::x86_64::cpu::rdtsc();
        let clock = Pvclock {
            tsc_timestamp: tsc.wrapping_add(tsc_offset),
            system_time: crate::time::ns_at_tsc(tsc),
            mul,
            shift,
            flags: layout::time_info::TSC_STABLE,
        };
        let _ = ram.write(at, &version.to_le_bytes());
        let _ = ram.write(at + 8, &clock.body());
        let _ = ram.write(at, &version.wrapping_add(1).to_le_bytes());
    }

    /// `VCPUOP_register_runstate_memory_area` with the area's guest-physical
    /// address (translated once, by the caller); the area is written now.
    pub fn register_runstate(&self, ram: &GuestRam, v: u32, gpa: u64) -> bool {
        let Some(x) = self.vcpus.get(v as usize) else {
            return false;
        };
        let size = layout::runstate::SIZE as u64;
        if gpa.checked_add(size).is_none_or(|end| end > ram.size()) {
            return false;
        }
        x.runstate_gpa.store(gpa, Ordering::SeqCst);
        let r = *x.runstate.lock();
        ram.write(gpa, &r.to_bytes()).is_ok()
    }

    /// vCPU `v` changes run state at system time `now`; its area (if any)
    /// is rewritten.
    pub fn runstate_switch(&self, ram: &GuestRam, v: u32, state: u32, now: u64) {
        let Some(x) = self.vcpus.get(v as usize) else {
            return;
        };
        let r = {
            let mut r = x.runstate.lock();
            r.switch(state, now);
            *r
        };
        let gpa = x.runstate_gpa.load(Ordering::SeqCst);
        if gpa != NONE {
            let _ = ram.write(gpa, &r.to_bytes());
        }
    }

    /// vCPU `v`'s run-state accounting.
    pub fn runstate(&self, v: u32) -> Option<Runstate> {
        Some(*self.vcpus.get(v as usize)?.runstate.lock())
    }

    /// Records that vCPU `v`'s single-shot timer fired.
    pub fn timer_fired(&self, v: u32) {
        if let Some(x) = self.vcpus.get(v as usize) {
            x.timer_fired.store(true, Ordering::SeqCst);
        }
    }

    /// Whether vCPU `v`'s timer fired since the last call (and forgets it).
    pub fn take_timer_fired(&self, v: u32) -> bool {
        self.vcpus
            .get(v as usize)
            .is_some_and(|x| x.timer_fired.swap(false, Ordering::SeqCst))
    }

    /// `HVMOP_set_evtchn_upcall_vector`.
    pub fn set_upcall_vector(&self, v: u32, vector: u8) -> bool {
        match self.vcpus.get(v as usize) {
            Some(x) if vector >= 0x10 => {
                x.upcall_vector.store(vector, Ordering::SeqCst);
                true
            }
            _ => false,
        }
    }

    /// The vector that raises vCPU `v`'s upcall: its own, or the domain's
    /// `HVM_PARAM_CALLBACK_IRQ` when that is of the vector type (2 << 56).
    fn upcall_vector(&self, v: u32) -> Option<u8> {
        let own = self
            .vcpus
            .get(v as usize)?
            .upcall_vector
            .load(Ordering::SeqCst);
        if own != 0 {
            return Some(own);
        }
        let via = self.params.lock()[PARAM_CALLBACK_IRQ];
        (via >> 56 == 2 && (via & 0xff) >= 0x10).then_some(via as u8)
    }

    /// Sets `port` pending and notifies the vCPU it is bound to, as
    /// 2-level delivery does; `me`: the calling vCPU of this domain, if it
    /// is the sender. Nothing happens before shared_info is placed.
    pub fn deliver(&self, ram: &GuestRam, platform: &Platform, port: u32, me: Option<u32>) {
        let Some(vcpu) = self.channels.lock().notify_vcpu(port) else {
            return;
        };
        if let Some(words) = self.words(ram, platform, me) {
            evtchn::set_pending(&words, port, vcpu);
        }
    }

    /// Sends `virq` of vCPU `vcpu` (global VIRQs: bound on vCPU 0).
    pub fn send_virq(&self, ram: &GuestRam, platform: &Platform, virq: u32, vcpu: u32) {
        let port = self.channels.lock().virq_port(virq, vcpu);
        if let Some(port) = port {
            self.deliver(ram, platform, port, None);
        }
    }

    /// The guest's event bits, if shared_info is placed.
    pub fn words<'a>(
        &'a self,
        ram: &'a GuestRam,
        platform: &'a Platform,
        me: Option<u32>,
    ) -> Option<Words<'a>> {
        Some(Words {
            xen: self,
            ram,
            platform,
            shared: self.shared_info()?,
            me,
        })
    }
}

/// The 2-level bits of one domain in its memory.
pub struct Words<'a> {
    xen: &'a XenDomain,
    ram: &'a GuestRam,
    platform: &'a Platform,
    shared: u64,
    me: Option<u32>,
}

impl Words<'_> {
    fn bit(&self, base: u64, port: u32) -> (u64, u64) {
        (
            self.shared + base + u64::from(port / 64) * 8,
            1u64 << (port % 64),
        )
    }

    fn fetch_or(&self, gpa: u64, bit: u64) -> Option<u64> {
        self.ram
            .with_atomic_u64(gpa, |w| w.fetch_or(bit, Ordering::SeqCst))
    }
}

impl EventWords for Words<'_> {
    fn test_and_set_pending(&self, port: u32) -> bool {
        let (gpa, bit) = self.bit(si::EVTCHN_PENDING, port);
        self.fetch_or(gpa, bit).is_none_or(|old| old & bit != 0)
    }

    fn clear_pending(&self, port: u32) {
        let (gpa, bit) = self.bit(si::EVTCHN_PENDING, port);
        self.ram
            .with_atomic_u64(gpa, |w| w.fetch_and(!bit, Ordering::SeqCst));
    }

    fn pending(&self, port: u32) -> bool {
        let (gpa, bit) = self.bit(si::EVTCHN_PENDING, port);
        self.ram
            .with_atomic_u64(gpa, |w| w.load(Ordering::SeqCst) & bit != 0)
            .unwrap_or(false)
    }

    fn masked(&self, port: u32) -> bool {
        let (gpa, bit) = self.bit(si::EVTCHN_MASK, port);
        self.ram
            .with_atomic_u64(gpa, |w| w.load(Ordering::SeqCst) & bit != 0)
            .unwrap_or(true)
    }

    fn test_and_clear_mask(&self, port: u32) -> bool {
        let (gpa, bit) = self.bit(si::EVTCHN_MASK, port);
        self.ram
            .with_atomic_u64(gpa, |w| w.fetch_and(!bit, Ordering::SeqCst) & bit != 0)
            .unwrap_or(false)
    }

    fn test_and_set_selector(&self, vcpu: u32, word: u32) -> bool {
        let Some(info) = self.xen.vcpu_info(vcpu) else {
            // Nowhere to say it: no upcall.
            return true;
        };
        let bit = 1u64 << (word % 64);
        self.fetch_or(info + vi::PENDING_SEL, bit)
            .is_none_or(|old| old & bit != 0)
    }

    fn mark_upcall(&self, vcpu: u32) {
        let Some(info) = self.xen.vcpu_info(vcpu) else {
            return;
        };
        // evtchn_upcall_pending is byte 0 of the vcpu_info's first word.
        self.fetch_or(info + vi::UPCALL_PENDING, 1);
        match self.xen.upcall_vector(vcpu) {
            Some(vector) => super::vapic::raise_vector(self.platform, vcpu, vector, self.me),
            // No vector yet: a vCPU blocked in SCHEDOP_poll still wakes.
            None => {
                if self.me != Some(vcpu) {
                    self.platform.irq.kick(vcpu);
                }
            }
        }
    }
}
