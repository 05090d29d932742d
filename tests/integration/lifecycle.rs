use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::harness::{Options, Server};

fn receive_until(socket: &UnixDatagram, needle: &str, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        socket
            .set_read_timeout(Some(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1)),
            ))
            .unwrap();
        match socket.recv(&mut buf) {
            Ok(n) => {
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                let done = message.lines().any(|l| l == needle);
                seen.push(message);
                if done {
                    return seen;
                }
            }
            Err(_) => break,
        }
    }
    panic!("no {needle} within {timeout:?}; got {seen:?}");
}

#[test]
fn systemd_notify_ready_watchdog_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    let server = Server::start(
        Options::default()
            .env("NOTIFY_SOCKET", socket_path.to_str().unwrap())
            .env("WATCHDOG_USEC", "400000")
            .watchdog_pid(),
    );
    let ready = receive_until(&socket, "READY=1", Duration::from_secs(10));
    assert!(
        ready
            .iter()
            .any(|m| m.contains("STATUS=serving http://127.0.0.1:")),
        "{ready:?}"
    );
    // Pings at half the 400 ms interval.
    let started = Instant::now();
    receive_until(&socket, "WATCHDOG=1", Duration::from_secs(5));
    receive_until(&socket, "WATCHDOG=1", Duration::from_secs(5));
    assert!(started.elapsed() < Duration::from_secs(2));
    server.signal(Signal::SIGTERM);
    receive_until(&socket, "STOPPING=1", Duration::from_secs(10));
    let mut server = server;
    assert!(server.wait_exit(Duration::from_secs(30)).success());
}

#[test]
fn sigint_and_sigterm_exit_zero_after_flushing() {
    for signal in [Signal::SIGINT, Signal::SIGTERM] {
        let mut server = Server::start(Options::default());
        server.signal(signal);
        let status = server.wait_exit(Duration::from_secs(30));
        assert_eq!(status.code(), Some(0), "{signal}: {}", server.logs.text());
        assert!(server.logs.text().contains("store flushed"));
    }
}

#[test]
fn in_flight_request_completes_during_shutdown() {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    let mut server = Server::start(Options::default());
    let addr = server.http.unwrap();
    let body = format!(
        r#"{{"username":"admin","password":"{}"}}"#,
        crate::harness::ADMIN_PASSWORD
    );
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    write!(
        stream,
        "POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .unwrap();
    let (first, rest) = body.split_at(10);
    stream.write_all(first.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    server.signal(Signal::SIGTERM);
    // Shutdown has begun: new connections are refused once the listener closes.
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(addr).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the listener stays open during drain"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "the server waits for the in-flight request"
    );
    stream.write_all(rest.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("csrf_token"));
    let status = server.wait_exit(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0));
}
