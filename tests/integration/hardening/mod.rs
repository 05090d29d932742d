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

mod anonymous;
mod callers;
mod store_faults;
