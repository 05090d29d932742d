//! Listeners and connections: accept, TLS handshake, HTTP/1.1 and HTTP/2 (ALPN on TLS,
//! prior knowledge on plain HTTP), connection limit, idle timeout and graceful drain.
//!
//! Each connection is one tokio task tracked by a `TaskTracker`; shutdown stops the
//! accept loops, asks every connection to finish its in-flight requests
//! (`graceful_shutdown`), and waits for the tracker up to the deadline. A streamed
//! response (an event stream) counts as in flight until its body ends, so the idle timeout
//! leaves it alone; streams end themselves when shutdown begins.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio_util::task::TaskTracker;

use super::service::{self, Peer};
use crate::app::App;
use crate::config::Config;
use crate::telemetry::metrics::ListenerLabels;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Https => "https",
        }
    }
}

/// The admin socket in the data dir: whoever can open it acts as the local admin;
/// `cairn admin` uses it while a server runs. It is created 0600 (under a umask, so it is
/// never more open, not even between bind and chmod), and each peer's credentials are
/// checked too (`SO_PEERCRED`): only cairn's own uid and root are served.
pub const ADMIN_SOCKET: &str = "cairn.sock";

/// The bound sockets, before serving starts (bound before systemd hears `READY=1`).
#[derive(Debug)]
pub struct Listeners {
    http: Option<TcpListener>,
    https: Option<TcpListener>,
    admin: Option<UnixListener>,
}

impl Listeners {
    /// # Errors
    /// An address is in use or not ours to bind.
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        async fn bind_one(
            addr: Option<SocketAddr>,
            key: &str,
        ) -> anyhow::Result<Option<TcpListener>> {
            let Some(addr) = addr else { return Ok(None) };
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {addr} ({key}): {e}"))?;
            Ok(Some(listener))
        }
        // We hold the data-dir lock, so a socket file left there is a dead server's.
        let socket_path = config.data_dir.join(ADMIN_SOCKET);
        let _ = std::fs::remove_file(&socket_path);
        // The umask is process-wide: a file another thread creates in this instant is only
        // made more private.
        let umask = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
        let bound = UnixListener::bind(&socket_path);
        nix::sys::stat::umask(umask);
        let admin = match bound {
            Ok(listener) => Some(listener),
            Err(e) => {
                // A path too long for sun_path, say: the CLI then works only offline.
                tracing::warn!(path = %socket_path.display(), error = %e, "no admin socket");
                None
            }
        };
        Ok(Self {
            http: bind_one(config.http.listen.addr(), "http.listen").await?,
            https: bind_one(config.https.listen.addr(), "https.listen").await?,
            admin,
        })
    }

    #[must_use]
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http.as_ref().and_then(|l| l.local_addr().ok())
    }

    #[must_use]
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.https.as_ref().and_then(|l| l.local_addr().ok())
    }
}

/// The serving listeners; [`Serving::drain`] ends them.
#[derive(Debug)]
pub struct Serving {
    accept_loops: JoinSet<()>,
    connections: TaskTracker,
}

impl Serving {
    /// Waits for the accept loops to stop (the shutdown watch must already be `true`),
    /// then for every connection up to `deadline`. Returns whether all finished in time.
    pub async fn drain(mut self, deadline: Duration) -> bool {
        while self.accept_loops.join_next().await.is_some() {}
        self.connections.close();
        tokio::time::timeout(deadline, self.connections.wait())
            .await
            .is_ok()
    }
}

/// Shared by every connection of the process.
struct Shared {
    app: Arc<App>,
    builder: auto::Builder<TokioExecutor>,
    connection_slots: Arc<Semaphore>,
    /// Open connections per client (an IPv6 client is its prefix, see `auth.ipv6_prefix`).
    per_client: Mutex<HashMap<IpAddr, usize>>,
    connections: TaskTracker,
    shutdown: watch::Receiver<bool>,
}

/// One open connection of a client; counted down when dropped.
struct ClientSlot {
    shared: Arc<Shared>,
    client: IpAddr,
}

impl ClientSlot {
    /// Counts a new connection of `peer`, or `None` when the client already holds
    /// `limits.max_connections_per_address` (0: no limit).
    fn take(shared: &Arc<Shared>, peer: IpAddr) -> Option<Self> {
        let limit = shared.app.config.limits.max_connections_per_address;
        let client = shared.app.auth.client_key(peer);
        let mut counts = shared.per_client.lock().expect("poisoned");
        let count = counts.entry(client).or_insert(0);
        if limit > 0 && *count >= limit {
            return None;
        }
        *count += 1;
        Some(Self {
            shared: Arc::clone(shared),
            client,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut counts = self.shared.per_client.lock().expect("poisoned");
        if let Some(count) = counts.get_mut(&self.client) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.client);
            }
        }
    }
}

/// Starts an accept loop per listener.
pub fn serve(app: Arc<App>, listeners: Listeners, shutdown: watch::Receiver<bool>) -> Serving {
    let limits = &app.config.limits;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .keep_alive(true)
        .max_buf_size(1024 * 1024);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20))
        .max_concurrent_streams(256);
    let shared = Arc::new(Shared {
        connection_slots: Arc::new(Semaphore::new(limits.max_connections)),
        per_client: Mutex::new(HashMap::new()),
        app,
        builder,
        connections: TaskTracker::new(),
        shutdown,
    });
    let mut accept_loops = JoinSet::new();
    for (listener, scheme) in [
        (listeners.http, Scheme::Http),
        (listeners.https, Scheme::Https),
    ] {
        if let Some(listener) = listener {
            if let Ok(addr) = listener.local_addr() {
                tracing::info!(listener = scheme.as_str(), %addr, "listening");
            }
            accept_loops.spawn(accept_loop(listener, scheme, Arc::clone(&shared)));
        }
    }
    if let Some(admin) = listeners.admin {
        accept_loops.spawn(admin_loop(admin, Arc::clone(&shared)));
    }
    Serving {
        accept_loops,
        connections: shared.connections.clone(),
    }
}

async fn admin_loop(listener: UnixListener, shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.clone();
    let own_uid = nix::unistd::geteuid().as_raw();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "admin socket accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut shutdown) => return,
        };
        match stream.peer_cred() {
            Ok(cred) if cred.uid() == own_uid || cred.uid() == 0 => {}
            Ok(cred) => {
                tracing::warn!(
                    uid = cred.uid(),
                    pid = ?cred.pid(),
                    "admin socket: refused a process that is neither cairn's user nor root"
                );
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "admin socket: cannot read the peer's credentials");
                continue;
            }
        }
        let shared_for_task = Arc::clone(&shared);
        shared.connections.spawn(async move {
            serve_io(stream, Peer::Local, Scheme::Http, &shared_for_task).await;
        });
    }
}

async fn accept_loop(listener: TcpListener, scheme: Scheme, shared: Arc<Shared>) {
    let mut shutdown = shared.shutdown.clone();
    let labels = ListenerLabels {
        listener: scheme.as_str(),
    };
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&shared.connection_slots).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            () = stopped(&mut shutdown) => return,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut shutdown) => return,
        };
        // One client cannot take every slot: past its share, it is closed at once.
        let Some(client_slot) = ClientSlot::take(&shared, peer.ip()) else {
            tracing::debug!(%peer, "closing a connection over limits.max_connections_per_address");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let metrics = &shared.app.metrics.http;
        metrics.connections_total.get_or_create(&labels).inc();
        let open = metrics.connections_open.get_or_create(&labels).clone();
        let shared_for_task = Arc::clone(&shared);
        shared.connections.spawn(async move {
            open.inc();
            match scheme {
                Scheme::Http => serve_io(stream, Peer::Tcp(peer), scheme, &shared_for_task).await,
                Scheme::Https => handshake_then_serve(stream, peer, &shared_for_task).await,
            }
            open.dec();
            drop(client_slot);
            drop(permit);
        });
    }
}

async fn handshake_then_serve(stream: TcpStream, peer: SocketAddr, shared: &Shared) {
    let Some(tls) = shared.app.tls.as_ref() else {
        return;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
    let timeout = shared.app.config.limits.header_read_timeout;
    match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls_stream)) => serve_io(tls_stream, Peer::Tcp(peer), Scheme::Https, shared).await,
        Ok(Err(e)) => {
            shared.app.metrics.http.tls_handshake_failures.inc();
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
        }
        Err(_) => {
            shared.app.metrics.http.tls_handshake_failures.inc();
            tracing::debug!(%peer, "TLS handshake timed out");
        }
    }
}

/// Requests in flight on one connection and the time the last one ended, for the idle
/// timeout (hyper has none for HTTP/1 keep-alive or HTTP/2).
struct Activity {
    epoch: Instant,
    in_flight: AtomicU32,
    last_end_ms: AtomicU64,
}

/// One request in flight on a connection, until dropped: when its response is ready, or,
/// for a streamed response (an event stream), when the body is done. So a connection that
/// streams is never idle, and the idle timeout never cuts a stream.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        let now = u64::try_from(activity.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        activity.last_end_ms.store(now, Ordering::Release);
        activity.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Activity {
    fn idle_for(&self) -> Option<Duration> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = Duration::from_millis(self.last_end_ms.load(Ordering::Acquire));
        Some(self.epoch.elapsed().saturating_sub(last))
    }
}

async fn serve_io<I>(io: I, peer: Peer, scheme: Scheme, shared: &Shared)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity {
        epoch: Instant::now(),
        in_flight: AtomicU32::new(0),
        last_end_ms: AtomicU64::new(0),
    });
    let app = Arc::clone(&shared.app);
    let tracked = Arc::clone(&activity);
    let svc = service_fn(move |request| {
        let app = Arc::clone(&app);
        let in_flight = InFlight::start(Arc::clone(&tracked));
        async move {
            let mut response = service::handle(&app, peer, scheme, request).await;
            if response.body().is_stream() {
                response.body_mut().hold(in_flight);
            }
            Ok::<_, Infallible>(response)
        }
    });
    let connection = shared
        .builder
        .serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(connection);
    let idle_timeout = shared.app.config.limits.idle_timeout;
    // An idle connection asked to close gets this long to finish writing; a client that
    // stops reading its answer cannot keep the slot.
    let close_grace = shared.app.config.limits.header_read_timeout;
    let mut shutdown = shared.shutdown.clone();
    let mut closing = false;
    let mut idle_close_by: Option<tokio::time::Instant> = None;
    let mut next_idle_check = tokio::time::Instant::now() + idle_timeout;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            }
            () = stopped(&mut shutdown), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            () = tokio::time::sleep_until(next_idle_check), if !closing => {
                match activity.idle_for() {
                    Some(idle) if idle >= idle_timeout => {
                        tracing::debug!(%peer, "closing idle connection");
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                        idle_close_by = Some(tokio::time::Instant::now() + close_grace);
                    }
                    Some(idle) => next_idle_check = tokio::time::Instant::now() + (idle_timeout - idle),
                    None => next_idle_check = tokio::time::Instant::now() + idle_timeout,
                }
            }
            () = sleep_until_some(idle_close_by) => {
                tracing::debug!(%peer, "dropping an idle connection that did not close in time");
                return;
            }
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// Resolves once shutdown has been requested (drops the watch guard before returning,
/// so callers' futures stay `Send`).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
