//! Process signals: SIGTERM/SIGINT start a graceful shutdown, SIGHUP reloads TLS material.

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;

/// What a signal asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Shutdown,
    Reload,
}

/// Listens for signals and forwards them: shutdown through the `watch` (seen by every
/// listener and connection), reload through the returned receiver.
///
/// # Errors
/// The signal handlers cannot be installed.
pub fn listen(
    shutdown: watch::Sender<bool>,
) -> std::io::Result<tokio::sync::mpsc::Receiver<Request>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            let request = tokio::select! {
                _ = term.recv() => Request::Shutdown,
                _ = int.recv() => Request::Shutdown,
                _ = hup.recv() => Request::Reload,
            };
            if request == Request::Shutdown {
                shutdown.send_replace(true);
            }
            if tx.send(request).await.is_err() {
                return;
            }
        }
    });
    Ok(rx)
}
