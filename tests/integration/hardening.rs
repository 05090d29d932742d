//! Hardening (issue 10): what an anonymous attacker, a leaked key and a full disk can do.
//! Each test talks to a real `cairn serve` over real sockets (TCP from chosen source
//! addresses, the admin socket, HTTP/2), one test per numbered item of the issue.
//!
//! `CAIRN_HARDENING_BIN` runs these tests against another build (an older binary, to see
//! them fail before the fixes). Tests that need root (tmpfs, IPv6 addresses on `lo`,
//! another uid) say so and pass without checking when they cannot run.
//! The `figure_*` tests are `#[ignore]`d measurements: run them with `--ignored --nocapture`.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::ADMIN_PASSWORD;

// ----- a launcher that can run another binary ---------------------------------------------

fn bin() -> String {
    std::env::var("CAIRN_HARDENING_BIN").unwrap_or_else(|_| crate::harness::BIN.to_owned())
}

#[derive(Default)]
struct Start {
    env: Vec<(String, String)>,
    no_admin: bool,
    https: bool,
    data_dir: Option<PathBuf>,
    listen: Option<String>,
}

impl Start {
    fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
    fn no_admin(mut self) -> Self {
        self.no_admin = true;
        self
    }
    fn https(mut self) -> Self {
        self.https = true;
        self
    }
    fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_path_buf());
        self
    }
    fn listen(mut self, addr: &str) -> Self {
        self.listen = Some(addr.into());
        self
    }
}

#[derive(Default)]
struct Logs {
    lines: Mutex<Vec<String>>,
    changed: Condvar,
}

impl Logs {
    fn wait_for(&self, timeout: Duration, predicate: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        let mut lines = self.lines.lock().unwrap();
        let mut checked = 0;
        loop {
            for line in &lines[checked..] {
                if let Ok(value) = serde_json::from_str::<Value>(line)
                    && predicate(&value)
                {
                    return Some(value);
                }
            }
            checked = lines.len();
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            lines = self.changed.wait_timeout(lines, deadline - now).unwrap().0;
        }
    }

    fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

fn message_is(value: &Value, message: &str) -> bool {
    value.get("message").and_then(Value::as_str) == Some(message)
}

struct Cairn {
    child: Child,
    http: SocketAddr,
    https: Option<SocketAddr>,
    data_dir: PathBuf,
    logs: Arc<Logs>,
    temp: tempfile::TempDir,
}

impl Cairn {
    fn start(options: Start) -> Self {
        let temp = tempfile::tempdir().unwrap();
        let data_dir = options
            .data_dir
            .clone()
            .unwrap_or_else(|| temp.path().join("data"));
        let mut command = Command::new(bin());
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(&data_dir)
            .args([
                "--http-listen",
                options.listen.as_deref().unwrap_or("127.0.0.1:0"),
                "--log-format",
                "json",
                "--https-listen",
                if options.https { "127.0.0.1:0" } else { "off" },
            ])
            .env_remove("NOTIFY_SOCKET")
            .env_remove("CAIRN_LOG")
            .env_remove("CAIRN_ADMIN_PASSWORD")
            .env_remove("CAIRN_ADMIN_PASSWORD_FILE")
            .env("CAIRN_REGISTRY_DEMO_MODEL", "false")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if !options.no_admin {
            command.env("CAIRN_ADMIN_PASSWORD", ADMIN_PASSWORD);
        }
        for (key, value) in &options.env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn cairn");
        let logs = Arc::new(Logs::default());
        let stderr = child.stderr.take().unwrap();
        let reader = Arc::clone(&logs);
        std::thread::spawn(move || {
            use std::io::BufRead as _;
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                reader.lines.lock().unwrap().push(line);
                reader.changed.notify_all();
            }
            reader
                .lines
                .lock()
                .unwrap()
                .push("{\"message\":\"<stderr closed>\"}".into());
            reader.changed.notify_all();
        });
        let ready = logs.wait_for(Duration::from_secs(60), |v| {
            message_is(v, "cairn is ready") || message_is(v, "<stderr closed>")
        });
        if !ready.is_some_and(|v| message_is(&v, "cairn is ready")) {
            let _ = child.kill();
            let status = child.wait().ok();
            panic!(
                "cairn did not become ready (exit {status:?}); log:\n{}",
                logs.text()
            );
        }
        let addr_of = |listener: &str| {
            logs.wait_for(Duration::from_millis(10), |v| {
                message_is(v, "listening") && v["listener"] == listener
            })
            .and_then(|v| v["addr"].as_str().and_then(|a| a.parse().ok()))
        };
        Self {
            http: addr_of("http").expect("http listener"),
            https: addr_of("https"),
            child,
            data_dir,
            logs,
            temp,
        }
    }

    fn pid(&self) -> nix::unistd::Pid {
        nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap())
    }

    /// SIGTERM and wait: the exit status's success.
    fn stop(mut self) -> bool {
        let _ = nix::sys::signal::kill(self.pid(), nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            assert!(Instant::now() < deadline, "cairn did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A request through the admin socket (the local admin), JSON in and out.
    fn local(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        local(&self.data_dir, method, path, body)
    }

    fn get(&self, path: &str, headers: &[(&str, &str)]) -> Reply {
        http(self.http, None, "GET", path, headers, None)
    }

    fn post_json(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> Reply {
        let text = body.to_string();
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        http(self.http, None, "POST", path, &all, Some(text.as_bytes()))
    }

    /// A key for `admin` with `scopes`, made through the admin socket.
    fn key(&self, scopes: &[&str]) -> String {
        self.key_for("admin", scopes)
    }

    fn key_for(&self, user: &str, scopes: &[&str]) -> String {
        let reply = self.local(
            "POST",
            "/api/v1/keys",
            Some(&json!({"name": format!("test {scopes:?}"), "scopes": scopes, "user": user})),
        );
        assert_eq!(reply.status, 201, "{}", reply.text());
        reply.json()["key"].as_str().unwrap().to_owned()
    }

    fn audit(&self, kind: &str) -> Vec<Value> {
        let reply = self.local(
            "GET",
            &format!("/api/v1/audit?kind={kind}&limit=1000"),
            None,
        );
        assert_eq!(reply.status, 200, "{}", reply.text());
        reply.json()["entries"].as_array().unwrap().clone()
    }

    fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Cairn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ----- raw HTTP/1.1 over TCP (from a chosen source address) and the admin socket ---------

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    fn text(&self) -> String {
        format!(
            "{} {}",
            self.status,
            String::from_utf8_lossy(&self.body[..self.body.len().min(2000)])
        )
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    fn code(&self) -> String {
        self.json()["code"].as_str().unwrap_or_default().to_owned()
    }
}

fn request_bytes(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nHost: cairn\r\nConnection: close\r\n");
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        out.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    out.push_str("\r\n");
    let mut bytes = out.into_bytes();
    if let Some(body) = body {
        bytes.extend_from_slice(body);
    }
    bytes
}

/// Reads one response: the head, then `Content-Length` bytes (or to the end).
fn read_reply(stream: &mut impl Read) -> std::io::Result<Reply> {
    let mut data = Vec::new();
    let mut buf = [0u8; 16384];
    let head_end = loop {
        if let Some(at) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "closed before a response",
            ));
        }
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let mut body = data[head_end + 4..].to_vec();
    loop {
        if length.is_some_and(|len| body.len() >= len) {
            break;
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buf[..n]);
    }
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// A TCP connection to `to`, from the source address `from` when given (any address of
/// 127/8; for IPv6, any address of a prefix routed to `lo`, bound with `IP_FREEBIND`).
fn connect(to: SocketAddr, from: Option<IpAddr>) -> TcpStream {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, SockaddrIn6, bind, setsockopt, socket,
        sockopt,
    };
    use std::os::fd::AsRawFd as _;
    let stream = match from {
        None => TcpStream::connect_timeout(&to, Duration::from_secs(10)).unwrap(),
        Some(source) => {
            let family = if source.is_ipv4() {
                AddressFamily::Inet
            } else {
                AddressFamily::Inet6
            };
            let fd = socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC, None).unwrap();
            setsockopt(&fd, sockopt::IpFreebind, &true).unwrap();
            match source {
                IpAddr::V4(v4) => {
                    bind(
                        fd.as_raw_fd(),
                        &SockaddrIn::from(std::net::SocketAddrV4::new(v4, 0)),
                    )
                    .unwrap();
                }
                IpAddr::V6(v6) => {
                    bind(
                        fd.as_raw_fd(),
                        &SockaddrIn6::from(std::net::SocketAddrV6::new(v6, 0, 0, 0)),
                    )
                    .unwrap();
                }
            }
            let target: Box<dyn nix::sys::socket::SockaddrLike> = match to {
                SocketAddr::V4(v4) => Box::new(SockaddrIn::from(v4)),
                SocketAddr::V6(v6) => Box::new(SockaddrIn6::from(v6)),
            };
            nix::sys::socket::connect(fd.as_raw_fd(), target.as_ref()).unwrap();
            TcpStream::from(fd)
        }
    };
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
}

fn http(
    to: SocketAddr,
    from: Option<IpAddr>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Reply {
    let mut stream = connect(to, from);
    stream
        .write_all(&request_bytes(method, path, headers, body))
        .unwrap();
    read_reply(&mut stream).unwrap()
}

fn local(data_dir: &Path, method: &str, path: &str, body: Option<&Value>) -> Reply {
    try_local(data_dir, method, path, body).unwrap()
}

fn try_local(
    data_dir: &Path,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> std::io::Result<Reply> {
    let mut stream = UnixStream::connect(data_dir.join("cairn.sock"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let text = body.map(Value::to_string);
    let headers: &[(&str, &str)] = if text.is_some() {
        &[("content-type", "application/json")]
    } else {
        &[]
    };
    stream.write_all(&request_bytes(
        method,
        path,
        headers,
        text.as_deref().map(str::as_bytes),
    ))?;
    read_reply(&mut stream)
}

/// One request over plain TCP from the test's own address; errors instead of panics.
fn try_http(
    to: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> std::io::Result<Reply> {
    let mut stream = TcpStream::connect_timeout(&to, Duration::from_secs(10))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    stream.write_all(&request_bytes(method, path, headers, body))?;
    read_reply(&mut stream)
}

fn loopback(last: u8) -> Option<IpAddr> {
    Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
}

fn login_body(username: &str, password: &str) -> Vec<u8> {
    json!({"username": username, "password": password})
        .to_string()
        .into_bytes()
}

fn login_from(server: &Cairn, from: Option<IpAddr>, username: &str, password: &str) -> Reply {
    http(
        server.http,
        from,
        "POST",
        "/api/v1/auth/login",
        &[("content-type", "application/json")],
        Some(&login_body(username, password)),
    )
}

/// A logged-in session: (cookie, csrf).
fn session(server: &Cairn, username: &str, password: &str) -> (String, String) {
    let reply = login_from(server, None, username, password);
    assert_eq!(reply.status, 200, "{}", reply.text());
    let cookie = reply
        .header("set-cookie")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    (
        cookie,
        reply.json()["csrf_token"].as_str().unwrap().to_owned(),
    )
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn metric(server: &Cairn, key: &str, name: &str) -> Option<f64> {
    let auth = format!("Bearer {key}");
    let reply = server.get("/metrics", &[("authorization", &auth)]);
    assert_eq!(reply.status, 200);
    String::from_utf8_lossy(&reply.body)
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with([' ', '{']))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

// ----- 12: the setup token stays out of the log; the admin socket checks its peer ----------

#[test]
fn item12_setup_token_is_not_logged_and_the_admin_socket_checks_its_peer() {
    let server = Cairn::start(Start::default().no_admin());
    let token_path = server.data_dir.join("setup-token");
    let token = std::fs::read_to_string(&token_path)
        .unwrap()
        .trim()
        .to_owned();
    let logged = server.logs.text();
    assert!(
        !logged.contains(&token),
        "the setup token is in the log:\n{logged}"
    );
    assert!(
        logged.contains(token_path.to_str().unwrap()),
        "the log says where the token file is"
    );
    let socket = server.data_dir.join("cairn.sock");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    // The service's own uid is let in.
    assert_eq!(
        server.local("GET", "/api/v1/auth/session", None).status,
        200
    );

    // Another uid that can reach the socket (loosened permissions) is refused by its
    // credentials (SO_PEERCRED), not only by the file mode.
    if !is_root() || Command::new("python3").arg("-V").output().is_err() {
        eprintln!("SKIPPED the SO_PEERCRED part: needs root and python3");
        return;
    }
    use std::os::unix::fs::PermissionsExt as _;
    for dir in [server.temp.path(), server.data_dir.as_path()] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    }
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let script = r"
import socket, sys
out = b''
try:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(sys.argv[1])
    s.sendall(b'GET /api/v1/auth/session HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        out += chunk
except Exception as e:
    pass
print(out[:12].decode(errors='replace'))
";
    let output = std::os::unix::process::CommandExt::uid(
        std::os::unix::process::CommandExt::gid(
            Command::new("python3").arg("-c").arg(script).arg(&socket),
            65534,
        ),
        65534,
    )
    .output()
    .unwrap();
    let answer = String::from_utf8_lossy(&output.stdout);
    assert!(
        !answer.contains("200"),
        "uid 65534 was served through the admin socket: {answer:?} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        server.local("GET", "/api/v1/auth/session", None).status,
        200
    );
}

// ----- 6: security headers ---------------------------------------------------------------

#[tokio::test]
async fn item6_hsts_on_https_and_nosniff_everywhere() {
    let server = Cairn::start(Start::default().https());
    for path in [
        "/healthz",
        "/no/such/route",
        "/api/v1/setup",
        "/",
        "/api/v1/users",
    ] {
        let reply = server.get(path, &[]);
        assert_eq!(
            reply.header("x-content-type-options"),
            Some("nosniff"),
            "{path}: {reply:?}"
        );
        assert!(
            reply.header("strict-transport-security").is_none(),
            "no HSTS over plain HTTP"
        );
    }
    let pem = std::fs::read(server.data_dir.join("tls/cert.pem")).unwrap();
    let client = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .build()
        .unwrap();
    let port = server.https.unwrap().port();
    for path in ["/healthz", "/api/v1/users", "/"] {
        let response = client
            .get(format!("https://localhost:{port}{path}"))
            .send()
            .await
            .unwrap();
        let hsts = response
            .headers()
            .get("strict-transport-security")
            .map(|v| v.to_str().unwrap().to_owned());
        assert!(
            hsts.as_deref().is_some_and(|v| v.contains("max-age=")),
            "{path}: {hsts:?}"
        );
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    }
}

// ----- 1: unbounded usernames ------------------------------------------------------------

#[test]
fn item1_login_and_setup_bodies_are_capped_at_16k() {
    let server = Cairn::start(Start::default().no_admin());
    let big = login_body(&"a".repeat(17 * 1024), "whatever-password");
    for path in ["/api/v1/auth/login", "/api/v1/setup"] {
        let reply = http(
            server.http,
            None,
            "POST",
            path,
            &[("content-type", "application/json")],
            Some(&big),
        );
        assert_eq!(reply.status, 413, "{path}: {}", reply.text());
        assert_eq!(reply.code(), "payload_too_large");
    }
    // The same without a declared length (chunked): cut off at the limit while reading.
    let mut stream = connect(server.http, None);
    let mut request = b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    request.extend_from_slice(format!("{:x}\r\n", big.len()).as_bytes());
    request.extend_from_slice(&big);
    request.extend_from_slice(b"\r\n0\r\n\r\n");
    stream.write_all(&request).unwrap();
    let reply = read_reply(&mut stream).unwrap();
    assert_eq!(reply.status, 413, "{}", reply.text());
}

#[test]
fn item1_bad_usernames_are_refused_before_lookup_and_the_audit_actor_is_short() {
    let server = Cairn::start(Start::default().env("CAIRN_AUTH_ADDRESS_RATE_PER_SECOND", "0"));
    let long = "x".repeat(8000);
    let reply = login_from(&server, None, &long, "some-password-1");
    assert_eq!(reply.status, 401, "{}", reply.text());
    let started = Instant::now();
    let reply = login_from(&server, None, "A Bad Name", &"p".repeat(5000));
    assert_eq!(reply.status, 401, "{}", reply.text());
    assert!(started.elapsed() < Duration::from_secs(5));
    let entries = server.audit("login_failed");
    assert!(!entries.is_empty());
    for entry in &entries {
        let actor = entry["actor"].as_str().unwrap();
        assert!(actor.len() <= 100, "audit actor of {} bytes", actor.len());
    }
}

#[test]
fn item1_failed_setup_audit_rows_are_rate_limited() {
    let server = Cairn::start(Start::default().no_admin());
    let mut statuses = Vec::new();
    for i in 0..40 {
        let reply = server.post_json(
            "/api/v1/setup",
            &[],
            &json!({"token": format!("wrong-{i}"), "username": "root", "password": "root-password-1"}),
        );
        statuses.push(reply.status);
    }
    assert!(
        statuses.iter().all(|s| *s == 403 || *s == 429),
        "{statuses:?}"
    );
    assert!(
        statuses.contains(&429),
        "wrong setup tokens are throttled: {statuses:?}"
    );
    let rows = server
        .audit("setup")
        .into_iter()
        .filter(|e| e["ok"] == false)
        .count();
    assert!(rows <= 10, "{rows} audit rows for 40 wrong setup tokens");
}

// ----- 2: stalled bodies -----------------------------------------------------------------

/// Whether the server closed `stream` within `wait` (reads to EOF or a reset).
fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + wait;
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => {}
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false;
            }
            Err(_) => return true,
        }
        if Instant::now() >= deadline {
            return false;
        }
    }
}

#[test]
fn item2_stalled_bodies_time_out_and_one_address_cannot_take_every_slot() {
    let server = Cairn::start(
        Start::default()
            .env("CAIRN_LIMITS_BODY_READ_TIMEOUT", "1s")
            .env("CAIRN_AUTH_ADDRESS_RATE_PER_SECOND", "0"),
    );
    // A body that stops after 10 of 1000 declared bytes: 408, then the connection closes.
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let mut stream = connect(server.http, None);
        stream
            .write_all(b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"usernam")
            .unwrap();
        stalled.push(stream);
    }
    let started = Instant::now();
    for stream in &mut stalled {
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let reply = read_reply(stream).unwrap();
        assert_eq!(reply.status, 408, "{}", reply.text());
        assert!(closed_within(stream, Duration::from_secs(5)));
    }
    assert!(started.elapsed() < Duration::from_secs(8));
    // Routes that never read the body answer and close: the unread body holds nothing.
    for head in [
        "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n",
        "POST /no/such/route HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n",
        "POST /api/v1/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n",
        "POST /api/v1/auth/logout HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n",
    ] {
        let mut stream = connect(server.http, None);
        stream.write_all(head.as_bytes()).unwrap();
        let reply = read_reply(&mut stream).unwrap();
        assert!(reply.status > 0, "{head}");
        assert!(
            closed_within(&mut stream, Duration::from_secs(5)),
            "{head}: the connection stays open after {}",
            reply.status
        );
    }
    drop(server);

    // One address (here 127.0.0.2) holds at most limits.max_connections_per_address
    // connections; everyone else is still served.
    let server = Cairn::start(
        Start::default()
            .env("CAIRN_LIMITS_MAX_CONNECTIONS", "32")
            .env("CAIRN_LIMITS_MAX_CONNECTIONS_PER_ADDRESS", "4"),
    );
    let mut attacker = Vec::new();
    for _ in 0..40 {
        let mut stream = connect(server.http, loopback(2));
        let _ = stream.write_all(
            b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{",
        );
        attacker.push(stream);
    }
    std::thread::sleep(Duration::from_millis(500));
    let held = attacker
        .iter_mut()
        .map(|s| closed_within(s, Duration::from_millis(50)))
        .filter(|closed| !closed)
        .count();
    assert!(held <= 4, "one address holds {held} connections");
    let started = Instant::now();
    let reply = http(server.http, loopback(3), "GET", "/healthz", &[], None);
    assert_eq!(reply.status, 200);
    assert!(started.elapsed() < Duration::from_secs(3));
}

// ----- 7: password change needs a session and is throttled -------------------------------

#[test]
fn item7_password_change_needs_a_session_and_is_throttled() {
    let server = Cairn::start(Start::default().env("CAIRN_AUTH_ADDRESS_RATE_PER_SECOND", "0"));
    let infer_key = server.key(&["infer"]);
    let auth = format!("Bearer {infer_key}");
    let reply = server.post_json(
        "/api/v1/users/me/password",
        &[("authorization", &auth)],
        &json!({"current_password": ADMIN_PASSWORD, "new_password": "taken-over-password"}),
    );
    assert_eq!(reply.status, 403, "{}", reply.text());
    assert_eq!(reply.code(), "forbidden");
    let (cookie, csrf) = session(&server, "admin", ADMIN_PASSWORD);
    let mut statuses = Vec::new();
    for i in 0..8 {
        let reply = server.post_json(
            "/api/v1/users/me/password",
            &[("cookie", &cookie), ("x-csrf-token", &csrf)],
            &json!({"current_password": format!("guess-number-{i}"), "new_password": "new-password-123"}),
        );
        statuses.push(reply.status);
        if reply.status == 429 {
            assert_eq!(reply.code(), "login_throttled");
            assert!(reply.header("retry-after").is_some());
        }
    }
    assert!(
        statuses.contains(&429),
        "wrong current passwords are throttled: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 429),
        "{statuses:?}"
    );
}

// ----- 8: setup race ---------------------------------------------------------------------

#[test]
fn item8_concurrent_setups_make_exactly_one_admin() {
    let server = Cairn::start(Start::default().no_admin());
    let token = std::fs::read_to_string(server.data_dir.join("setup-token"))
        .unwrap()
        .trim()
        .to_owned();
    let n = 12;
    let barrier = Arc::new(Barrier::new(n));
    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (barrier, token, addr) = (Arc::clone(&barrier), token.clone(), server.http);
            std::thread::spawn(move || {
                let body = json!({"token": token, "username": format!("root{i}"), "password": "root-password-1"}).to_string();
                let request = request_bytes(
                    "POST",
                    "/api/v1/setup",
                    &[("content-type", "application/json")],
                    Some(body.as_bytes()),
                );
                let mut stream = connect(addr, None);
                barrier.wait();
                stream.write_all(&request).unwrap();
                read_reply(&mut stream).unwrap().status
            })
        })
        .collect();
    let statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    let users = server.local("GET", "/api/v1/users", None).json();
    assert_eq!(users["users"].as_array().unwrap().len(), 1, "{users}");
}

// ----- 9: last-admin race ----------------------------------------------------------------

fn enabled_admins(server: &Cairn) -> Vec<u64> {
    let users = server.local("GET", "/api/v1/users", None).json();
    users["users"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|u| u["role"] == "admin" && u["disabled"] == false)
        .map(|u| u["id"].as_u64().unwrap())
        .collect()
}

#[test]
fn item9_concurrent_demotions_leave_one_admin() {
    let server = Cairn::start(Start::default());
    for round in 0..5 {
        for suffix in ["a", "b"] {
            let reply = server.local(
                "POST",
                "/api/v1/users",
                Some(&json!({"username": format!("adm{round}{suffix}"), "password": "admin-password-2", "role": "admin"})),
            );
            assert_eq!(reply.status, 201, "{}", reply.text());
        }
        let admins = enabled_admins(&server);
        let barrier = Arc::new(Barrier::new(admins.len()));
        let threads: Vec<_> = admins
            .iter()
            .enumerate()
            .map(|(i, id)| {
                let (barrier, dir, id) = (Arc::clone(&barrier), server.data_dir.clone(), *id);
                std::thread::spawn(move || {
                    let patch = if i % 2 == 0 {
                        json!({"role": "viewer"})
                    } else {
                        json!({"disabled": true})
                    };
                    barrier.wait();
                    local(&dir, "PATCH", &format!("/api/v1/users/{id}"), Some(&patch)).status
                })
            })
            .collect();
        let statuses: Vec<u16> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let left = enabled_admins(&server);
        assert_eq!(left.len(), 1, "round {round}: {statuses:?} left {left:?}");
        assert_eq!(
            statuses.iter().filter(|s| **s == 409).count(),
            1,
            "{statuses:?}"
        );
    }
}

// ----- 10: scope ceiling -----------------------------------------------------------------

#[test]
fn item10_a_key_never_mints_a_key_with_more_scopes() {
    let server = Cairn::start(Start::default());
    let reply = server.local(
        "POST",
        "/api/v1/users",
        Some(&json!({"username": "ops", "password": "ops-password-1", "role": "operator"})),
    );
    assert_eq!(reply.status, 201);
    let manager = server.key(&["keys:manage", "users:manage"]);
    let auth = format!("Bearer {manager}");
    for body in [
        json!({"name": "wider", "scopes": ["infer"], "user": "admin"}),
        json!({"name": "wider", "scopes": ["models:write"], "user": "ops"}),
        json!({"name": "wider", "scopes": ["infer"]}),
    ] {
        let reply = server.post_json("/api/v1/keys", &[("authorization", &auth)], &body);
        assert_eq!(reply.status, 400, "{body}: {}", reply.text());
    }
    let reply = server.post_json(
        "/api/v1/keys",
        &[("authorization", &auth)],
        &json!({"name": "narrower", "scopes": ["keys:manage"], "user": "admin"}),
    );
    assert_eq!(reply.status, 201, "{}", reply.text());
}

// ----- 11: audit flood -------------------------------------------------------------------

#[test]
fn item11_denied_requests_do_not_flood_the_audit_log() {
    let server = Cairn::start(Start::default());
    let key = server.key(&["infer"]);
    let auth = format!("Bearer {key}");
    for _ in 0..300 {
        assert_eq!(
            server
                .get("/api/v1/users", &[("authorization", &auth)])
                .status,
            403
        );
    }
    let rows = server.audit("permission_denied");
    assert!(!rows.is_empty(), "denied requests are still audited");
    assert!(
        rows.len() <= 5,
        "{} audit rows for 300 denied requests",
        rows.len()
    );
}

// ----- 5: admin lockout ------------------------------------------------------------------

#[test]
fn item5_failures_elsewhere_do_not_lock_the_admin_out() {
    let server = Cairn::start(Start::default().env("CAIRN_AUTH_ADDRESS_RATE_PER_SECOND", "0"));
    let mut throttled = false;
    for _ in 0..10 {
        let reply = login_from(&server, loopback(2), "admin", "not-the-password");
        assert!(
            reply.status == 401 || reply.status == 429,
            "{}",
            reply.text()
        );
        throttled |= reply.status == 429;
    }
    assert!(throttled, "the guessing address is throttled");
    let reply = login_from(&server, loopback(3), "admin", ADMIN_PASSWORD);
    assert_eq!(
        reply.status,
        200,
        "the admin from another address: {}",
        reply.text()
    );
    let reply = login_from(&server, loopback(2), "admin", ADMIN_PASSWORD);
    assert_eq!(
        reply.status,
        429,
        "the guessing address stays throttled: {}",
        reply.text()
    );
}

// ----- 3: /readyz stampede ---------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn item3_readyz_probes_are_single_flight() {
    let server = Cairn::start(Start::default());
    let key = server.key(&["metrics:read"]);
    let name = "cairn_readiness_probes_total";
    let before = metric(&server, &key, name).expect("the probe counter is exported");
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let h1 = reqwest::Client::builder().http1_only().build().unwrap();
    let url = format!("http://{}/readyz", server.http);
    let started = Instant::now();
    let mut calls = Vec::new();
    for i in 0..500 {
        let client = if i % 5 == 0 { h1.clone() } else { h2.clone() };
        let url = url.clone();
        calls.push(tokio::spawn(async move {
            client.get(url).send().await.map(|r| r.status().as_u16())
        }));
    }
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap(), 200);
    }
    let elapsed = started.elapsed();
    let after = metric(&server, &key, name).unwrap();
    let probes = after - before;
    #[allow(clippy::cast_precision_loss)]
    let allowed = elapsed.as_secs_f64().ceil() + 1.0;
    assert!(
        probes <= allowed,
        "{probes} probes for 500 concurrent /readyz in {elapsed:?}"
    );
}

// ----- 4: IPv6 rotation ------------------------------------------------------------------

/// `fd00:ca1e::1/64` on `lo` with the whole /64 routed locally (removed on drop).
struct Ipv6Prefix;

impl Ipv6Prefix {
    fn add() -> Option<Self> {
        if !is_root() {
            return None;
        }
        let ok = |args: &[&str]| {
            Command::new("ip")
                .args(args)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        let _ = ok(&["-6", "addr", "del", "fd00:ca1e::1/64", "dev", "lo"]);
        if !ok(&["-6", "addr", "add", "fd00:ca1e::1/64", "dev", "lo", "nodad"]) {
            return None;
        }
        let guard = Self;
        if !ok(&[
            "-6",
            "route",
            "replace",
            "local",
            "fd00:ca1e::/64",
            "dev",
            "lo",
            "table",
            "local",
        ]) {
            return None;
        }
        Some(guard)
    }
}

impl Drop for Ipv6Prefix {
    fn drop(&mut self) {
        for args in [
            &[
                "-6",
                "route",
                "del",
                "local",
                "fd00:ca1e::/64",
                "dev",
                "lo",
                "table",
                "local",
            ][..],
            &["-6", "addr", "del", "fd00:ca1e::1/64", "dev", "lo"][..],
        ] {
            let _ = Command::new("ip").args(args).stderr(Stdio::null()).status();
        }
    }
}

fn v6(host: u16, n: u16) -> Option<IpAddr> {
    Some(IpAddr::V6(std::net::Ipv6Addr::new(
        0xfd00, 0xca1e, 0, 0, host, n, 0x1234, 0x5678,
    )))
}

#[test]
fn item4_ipv6_clients_are_keyed_on_their_prefix() {
    let Some(_prefix) = Ipv6Prefix::add() else {
        eprintln!("SKIPPED: needs root and `ip` to route an IPv6 /64 to lo");
        return;
    };
    let listen = "[fd00:ca1e::1]:0";
    // Login throttling: every attempt from a new address of the same /64.
    let server = Cairn::start(
        Start::default()
            .listen(listen)
            .env("CAIRN_AUTH_ADDRESS_RATE_PER_SECOND", "0"),
    );
    let statuses: Vec<u16> = (0..8)
        .map(|i| login_from(&server, v6(7, i), &format!("ghost{i}"), "wrong-password-1").status)
        .collect();
    assert!(
        statuses.contains(&429),
        "rotating inside a /64 escapes the throttle: {statuses:?}"
    );
    drop(server);
    // The prefix is configurable: /128 keys each address alone.
    let server = Cairn::start(
        Start::default()
            .listen(listen)
            .env("CAIRN_AUTH_ADDRESS_RATE_PER_SECOND", "0")
            .env("CAIRN_AUTH_IPV6_PREFIX", "128"),
    );
    let statuses: Vec<u16> = (0..8)
        .map(|i| login_from(&server, v6(8, i), &format!("ghost{i}"), "wrong-password-1").status)
        .collect();
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");
    drop(server);
    // Address rate limits key on the /64 too.
    let server = Cairn::start(
        Start::default()
            .listen(listen)
            .env("CAIRN_AUTH_ADDRESS_RATE_PER_SECOND", "1")
            .env("CAIRN_AUTH_ADDRESS_BURST", "3"),
    );
    let statuses: Vec<u16> = (0..8)
        .map(|i| http(server.http, v6(9, i), "GET", "/api/v1/users", &[], None).status)
        .collect();
    assert!(statuses.contains(&429), "{statuses:?}");
}

// ----- 13: a full disk -------------------------------------------------------------------

/// A small tmpfs (unmounted on drop).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Option<Self> {
        if !is_root() {
            return None;
        }
        std::fs::create_dir_all(at).ok()?;
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Self(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system holding `path` to the last byte.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).unwrap();
    for size in [1 << 20, 64 << 10, 4 << 10, 512, 1] {
        let chunk = vec![0xA5u8; size];
        while file.write_all(&chunk).is_ok() {}
    }
    let _ = file.sync_all();
}

fn create_key_locally(server: &Cairn, name: &str) -> Reply {
    server.local(
        "POST",
        "/api/v1/keys",
        Some(&json!({"name": name, "scopes": ["infer"], "user": "admin"})),
    )
}

fn key_ids(server: &Cairn) -> Vec<String> {
    let keys = server.local("GET", "/api/v1/keys?all=true", None);
    assert_eq!(keys.status, 200, "{}", keys.text());
    keys.json()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn item13_a_full_disk_turns_readiness_off_and_service_comes_back() {
    let temp = tempfile::tempdir().unwrap();
    let Some(mount) = Tmpfs::mount(&temp.path().join("mnt"), "24m") else {
        eprintln!("SKIPPED: needs root to mount a tmpfs");
        return;
    };
    let data = mount.0.join("data");
    let start = || {
        Cairn::start(
            Start::default()
                .data_dir(&data)
                .env("CAIRN_HEALTH_MIN_FREE_DISK", "256KiB")
                .env("CAIRN_AUTH_ADDRESS_RATE_PER_SECOND", "0"),
        )
    };
    let server = start();
    assert_eq!(server.get("/readyz", &[]).status, 200);
    let mut acknowledged = Vec::new();
    let filler = mount.0.join("filler");
    fill(&filler);
    // Write until the store needs space it cannot get.
    let mut refused = None;
    for i in 0..20_000 {
        let reply = create_key_locally(&server, &format!("key {i} {}", "x".repeat(80)));
        if reply.status == 201 {
            acknowledged.push(reply.json()["id"].as_str().unwrap().to_owned());
        } else {
            refused = Some(reply);
            break;
        }
    }
    let refused = refused.expect("a write fails on a full disk");
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert_eq!(refused.code(), "store_unavailable");
    // While full: clear refusals and readiness off (after the 1 s cache).
    std::thread::sleep(Duration::from_millis(1100));
    let ready = server.get("/readyz", &[]);
    assert_eq!(ready.status, 503, "{}", ready.text());
    let again = create_key_locally(&server, "while full");
    assert_eq!(again.status, 503, "{}", again.text());
    assert_eq!(again.code(), "store_unavailable");
    // Space returns: service resumes without a restart.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = server.get("/readyz", &[]);
        if ready.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still not ready after space returned: {}",
            ready.text()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let reply = create_key_locally(&server, "after the disk emptied");
    assert_eq!(reply.status, 201, "{}", reply.text());
    acknowledged.push(reply.json()["id"].as_str().unwrap().to_owned());
    let present = key_ids(&server);
    for id in &acknowledged {
        assert!(present.contains(id), "acknowledged key {id} lost");
    }
    assert!(server.stop(), "clean exit after recovery");
    let server = start();
    let present = key_ids(&server);
    for id in &acknowledged {
        assert!(
            present.contains(id),
            "acknowledged key {id} lost after restart"
        );
    }
    server.kill();
}

// ----- 14: crash consistency -------------------------------------------------------------

fn random_below(n: u64) -> u64 {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).unwrap();
    u64::from_le_bytes(bytes) % n
}

#[derive(Default)]
struct Acknowledged {
    keys: Vec<String>,
    users: Vec<String>,
    sessions: Vec<String>,
}

#[test]
fn item14_acknowledged_writes_survive_sigkill() {
    let iterations: usize = std::env::var("CAIRN_CRASH_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50);
    let temp = tempfile::tempdir().unwrap();
    let data = temp.path().join("data");
    let start = || {
        Cairn::start(
            Start::default()
                .data_dir(&data)
                .env("CAIRN_AUTH_ADDRESS_RATE_PER_SECOND", "0"),
        )
    };
    let acked = Arc::new(Mutex::new(Acknowledged::default()));
    for iteration in 0..=iterations {
        let server = start();
        // Everything acknowledged before the last SIGKILL is there.
        {
            let acked = acked.lock().unwrap();
            let present = key_ids(&server);
            for id in &acked.keys {
                assert!(present.contains(id), "iteration {iteration}: key {id} lost");
            }
            let users = server.local("GET", "/api/v1/users", None).json();
            let names: Vec<&str> = users["users"]
                .as_array()
                .unwrap()
                .iter()
                .map(|u| u["username"].as_str().unwrap())
                .collect();
            for name in &acked.users {
                assert!(
                    names.contains(&name.as_str()),
                    "iteration {iteration}: user {name} lost"
                );
            }
            for cookie in &acked.sessions {
                let reply = server.get("/api/v1/auth/session", &[("cookie", cookie)]);
                assert_eq!(reply.status, 200, "iteration {iteration}: session lost");
            }
        }
        if iteration == iterations {
            break;
        }
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut writers = Vec::new();
        for kind in 0..3 {
            let (acked, stop, dir, addr) = (
                Arc::clone(&acked),
                Arc::clone(&stop),
                server.data_dir.clone(),
                server.http,
            );
            writers.push(std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    // A dying server makes the request fail: stop writing.
                    let result = match kind {
                        0 => try_local(
                            &dir,
                            "POST",
                            "/api/v1/keys",
                            Some(&json!({"name": format!("k{iteration}-{n}"), "scopes": ["infer"], "user": "admin"})),
                        )
                        .map(|reply| {
                            (reply.status == 201)
                                .then(|| reply.json()["id"].as_str().unwrap().to_owned())
                        }),
                        1 => {
                            let name = format!("u{iteration}x{n}");
                            try_local(
                                &dir,
                                "POST",
                                "/api/v1/users",
                                Some(&json!({"username": name, "password": "user-password-1", "role": "viewer"})),
                            )
                            .map(|reply| (reply.status == 201).then_some(name))
                        }
                        _ => try_http(
                            addr,
                            "POST",
                            "/api/v1/auth/login",
                            &[("content-type", "application/json")],
                            Some(&login_body("admin", ADMIN_PASSWORD)),
                        )
                        .map(|reply| {
                            (reply.status == 200).then(|| {
                                reply
                                    .header("set-cookie")
                                    .unwrap()
                                    .split(';')
                                    .next()
                                    .unwrap()
                                    .to_owned()
                            })
                        }),
                    };
                    match result {
                        Ok(Some(done)) => {
                            let mut acked = acked.lock().unwrap();
                            match kind {
                                0 => acked.keys.push(done),
                                1 => acked.users.push(done),
                                _ => acked.sessions.push(done),
                            }
                        }
                        Ok(None) | Err(_) => break,
                    }
                }
            }));
        }
        std::thread::sleep(Duration::from_millis(30 + random_below(400)));
        server.kill();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for writer in writers {
            let _ = writer.join();
        }
    }
    let acked = acked.lock().unwrap();
    eprintln!(
        "{iterations} SIGKILLs: {} keys, {} users, {} sessions acknowledged and kept",
        acked.keys.len(),
        acked.users.len(),
        acked.sessions.len()
    );
    assert!(!acked.keys.is_empty() && !acked.sessions.is_empty());
}

// ----- figures (measurements, run by hand) ----------------------------------------------

/// Connections one address holds with stalled bodies, at the default limits.
#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn figure_stalled_body_connections() {
    let server = Cairn::start(Start::default().env("CAIRN_AUTH_ADDRESS_RATE_PER_SECOND", "0"));
    let open = |server: &Cairn| {
        let reply = server.local("GET", "/metrics", None);
        String::from_utf8_lossy(&reply.body)
            .lines()
            .find(|l| l.starts_with("cairn_http_connections_open{listener=\"http\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let attempts = 5000;
    let mut held = Vec::new();
    let started = Instant::now();
    for _ in 0..attempts {
        let Ok(mut stream) = TcpStream::connect_timeout(&server.http, Duration::from_secs(2))
        else {
            break;
        };
        // A body under every limit (16 KiB on login) that never comes.
        let _ = stream.write_all(b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 10000\r\n\r\n{");
        held.push(stream);
    }
    std::thread::sleep(Duration::from_secs(2));
    let at_2s = open(&server);
    let probe = Instant::now();
    let reply =
        std::panic::catch_unwind(|| http(server.http, loopback(3), "GET", "/healthz", &[], None));
    let healthz = (reply.map(|r| r.status).ok(), probe.elapsed());
    std::thread::sleep(Duration::from_secs(33).saturating_sub(started.elapsed()));
    println!(
        "FIGURE stalled bodies: {} connections opened from one address; server holds {at_2s} \
         after 2 s and {} after 33 s; another address's /healthz: {healthz:?}",
        held.len(),
        open(&server)
    );
}

/// Memory after failed logins with 1 MiB usernames, each from a new address.
#[test]
#[ignore = "a measurement: run with --ignored --nocapture"]
fn figure_failed_login_memory() {
    let n: u32 = std::env::var("CAIRN_FIGURE_LOGINS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let server = Cairn::start(Start::default().env("CAIRN_AUTH_ADDRESS_RATE_PER_SECOND", "0"));
    let before = server.rss_kib();
    let body = login_body(&"u".repeat(1 << 20), "wrong-password-1");
    let started = Instant::now();
    let threads = 8;
    let done: Vec<_> = (0..threads)
        .map(|t| {
            let (addr, body) = (server.http, body.clone());
            std::thread::spawn(move || {
                let mut statuses = std::collections::BTreeMap::new();
                for i in (t..n).step_by(threads as usize) {
                    let from = IpAddr::V4(Ipv4Addr::new(127, 1 + (i >> 16) as u8, (i >> 8) as u8, i as u8));
                    let mut stream = connect(addr, Some(from));
                    let head = format!("POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n", body.len());
                    // A different 1 MiB name each time (the first 8 bytes).
                    let mut body = body.clone();
                    let at = body.windows(12).position(|w| w == b"\"username\":\"").unwrap() + 12;
                    body[at..at + 8].copy_from_slice(format!("{i:08}").as_bytes());
                    let _ = stream.write_all(head.as_bytes());
                    let _ = stream.write_all(&body);
                    let status = read_reply(&mut stream).map_or(0, |r| r.status);
                    *statuses.entry(status).or_insert(0u32) += 1;
                }
                statuses
            })
        })
        .collect();
    let mut statuses = std::collections::BTreeMap::new();
    for thread in done {
        for (status, count) in thread.join().unwrap() {
            *statuses.entry(status).or_insert(0) += count;
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    println!(
        "FIGURE failed logins: {n} with 1 MiB usernames in {:?} ({statuses:?}): RSS {before} KiB before, {} KiB after; store file {} bytes",
        started.elapsed(),
        server.rss_kib(),
        std::fs::metadata(server.data_dir.join("cairn.redb")).map_or(0, |m| m.len())
    );
}
