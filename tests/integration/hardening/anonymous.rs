//! Anonymous callers: the setup token and admin socket (12), security headers (6),
//! unbounded usernames (1), stalled bodies (2), the /readyz stampede (3), IPv6 rotation (4).

use super::*;

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
