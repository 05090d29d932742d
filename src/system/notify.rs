//! systemd's notify protocol: `READY=1`, `WATCHDOG=1`, `STOPPING=1`, `STATUS=`.
//! Every call is a no-op when `NOTIFY_SOCKET` is unset (not under systemd).

use std::time::Duration;

use sd_notify::NotifyState;

fn send(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    if let Err(e) = sd_notify::notify(false, states) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// The listeners are up and the store is open.
pub fn ready(status: &str) {
    send(&[NotifyState::Ready, NotifyState::Status(status)]);
}

/// Shutdown has begun.
pub fn stopping() {
    send(&[NotifyState::Stopping, NotifyState::Status("draining")]);
}

/// Spawns the watchdog pinger when systemd asked for one (`WATCHDOG_USEC`): it pings at
/// half the interval from a tokio task, so a wedged runtime misses pings and systemd
/// restarts the service.
pub fn spawn_watchdog() -> Option<tokio::task::JoinHandle<()>> {
    let mut usec = 0;
    if std::env::var_os("NOTIFY_SOCKET").is_none() || !sd_notify::watchdog_enabled(false, &mut usec)
    {
        return None;
    }
    let period = Duration::from_micros(usec / 2).max(Duration::from_millis(100));
    tracing::info!(period_ms = period.as_millis(), "systemd watchdog enabled");
    Some(tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        loop {
            tick.tick().await;
            send(&[NotifyState::Watchdog]);
        }
    }))
}
