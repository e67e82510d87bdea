//! A domain's life (docs/scheduler.md, "Domain lifecycle"): running ⇄
//! paused → dying (its vCPUs are being taken off the CPUs) → dead (every
//! resource returned); how it ended and its exit code; how many of its
//! vCPUs still exist.

use core::sync::atomic::{AtomicU32, Ordering};
use spin::Mutex;

/// How a domain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// SCHEDOP_shutdown(poweroff).
    Poweroff,
    /// SCHEDOP_shutdown(reboot) or the monitor's `reboot`: it starts again
    /// from its image.
    Reboot,
    /// SCHEDOP_shutdown(crash), or ended by Basalt for a guest error.
    Crash,
    /// The monitor's `destroy`.
    Destroyed,
}

impl EndReason {
    /// The word the monitor and the log use.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Poweroff => "poweroff",
            Self::Reboot => "reboot",
            Self::Crash => "crashed",
            Self::Destroyed => "destroyed",
        }
    }
}

/// A domain's life (docs/scheduler.md, "Domain lifecycle"): running ⇄
/// paused → dying (its vCPUs are being taken off the CPUs) → dead (every
/// resource returned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Its vCPUs run or wait.
    Running,
    /// Its vCPUs are held off the CPUs until `unpause`.
    Paused,
    /// Ending: its vCPUs are leaving the CPUs; memory is freed when the
    /// last one has.
    Dying(EndReason),
    /// Ended; nothing left.
    Dead(EndReason),
}

impl State {
    /// The word the monitor uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Dying(_) => "dying",
            Self::Dead(_) => "dead",
        }
    }
}

/// Where a domain is in its life.
#[derive(Debug)]
pub struct Lifecycle {
    state: Mutex<State>,
    /// Exit code set with Basalt's SCHEDOP exit-code operation.
    pub exit_code: AtomicU32,
    /// vCPUs not yet retired.
    alive_vcpus: AtomicU32,
}

impl Lifecycle {
    /// A domain being built: running, exit code 0, no vCPU yet.
    pub fn new() -> Self {
        Self {
            state: Mutex::new(State::Running),
            exit_code: AtomicU32::new(0),
            alive_vcpus: AtomicU32::new(0),
        }
    }

    /// The domain's state.
    pub fn state(&self) -> State {
        *self.state.lock()
    }

    /// Whether it is ending or ended.
    pub fn is_ending(&self) -> bool {
        matches!(self.state(), State::Dying(_) | State::Dead(_))
    }

    /// Running → paused; false if it was not running.
    pub fn set_paused(&self, paused: bool) -> bool {
        let mut state = self.state.lock();
        match (*state, paused) {
            (State::Running, true) => *state = State::Paused,
            (State::Paused, false) => *state = State::Running,
            _ => return false,
        }
        true
    }

    /// Starts the end of the domain (the scheduler then takes its vCPUs off
    /// the CPUs; see `sched::end_domain`). False if it was already ending.
    pub fn begin_end(&self, reason: EndReason) -> bool {
        let mut state = self.state.lock();
        if matches!(*state, State::Dying(_) | State::Dead(_)) {
            return false;
        }
        *state = State::Dying(reason);
        true
    }

    /// The domain is dead.
    pub fn set_dead(&self, reason: EndReason) {
        *self.state.lock() = State::Dead(reason);
    }

    /// Its `count` vCPUs exist.
    pub fn vcpus_created(&self, count: u32) {
        self.alive_vcpus.store(count, Ordering::SeqCst);
    }

    /// One of its vCPUs was dropped: how it ended if that was the last
    /// (a domain whose vCPUs all went without an end counts as destroyed).
    pub fn vcpu_retired(&self) -> Option<EndReason> {
        if self.alive_vcpus.fetch_sub(1, Ordering::SeqCst) != 1 {
            return None;
        }
        Some(match self.state() {
            State::Dying(r) | State::Dead(r) => r,
            State::Running | State::Paused => EndReason::Destroyed,
        })
    }
}

impl Default for Lifecycle {
    fn default() -> Self {
        Self::new()
    }
}
