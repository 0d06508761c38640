//! systemd readiness and watchdog (`Type=notify`, `WatchdogSec=`) through the `sd-notify`
//! crate (sd_notify(3) without linking libsystemd). Outside systemd (no `NOTIFY_SOCKET`) every
//! call does nothing.

use std::time::Duration;

use sd_notify::NotifyState;

/// What the gateway tells the service manager.
#[derive(Debug, Clone, Copy)]
pub enum State {
    /// Started: the API and the node run.
    Ready,
    /// Still alive (the watchdog kick).
    Watchdog,
    /// Shutting down.
    Stopping,
}

/// Sends `state` to the service manager, if there is one.
pub fn notify(state: State) {
    let s = match state {
        State::Ready => NotifyState::Ready,
        State::Watchdog => NotifyState::Watchdog,
        State::Stopping => NotifyState::Stopping,
    };
    if let Err(e) = sd_notify::notify(false, &[s]) {
        tracing::warn!(%e, ?state, "cannot notify the service manager");
    }
}

/// Half the watchdog period systemd asked for (`$WATCHDOG_USEC`, for this process by
/// `$WATCHDOG_PID`), if it asked.
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0u64;
    (sd_notify::watchdog_enabled(false, &mut usec) && usec > 0)
        .then(|| Duration::from_micros(usec / 2))
}
