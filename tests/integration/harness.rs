//! Starts the real `cairn` binary on ephemeral ports with a temp data dir, and reads its
//! JSON logs to learn the bound addresses.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_cairn");

/// How to start a server.
#[derive(Default)]
pub struct Options {
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
    pub https: bool,
    /// Use this data dir instead of a fresh temp dir.
    pub data_dir: Option<PathBuf>,
    /// Written to `cairn.toml` in the temp dir and passed with `--config`.
    pub config_toml: Option<String>,
    /// Set `WATCHDOG_PID` to the server's pid, as systemd does.
    pub watchdog_pid: bool,
    /// Start without an admin (no `CAIRN_ADMIN_PASSWORD`).
    pub no_admin: bool,
}

/// The admin every test server gets unless `no_admin()`.
pub const ADMIN_PASSWORD: &str = "admin-password-123";

impl Options {
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn arg(mut self, value: &str) -> Self {
        self.args.push(value.into());
        self
    }

    pub fn https(mut self) -> Self {
        self.https = true;
        self
    }

    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_path_buf());
        self
    }

    pub fn no_admin(mut self) -> Self {
        self.no_admin = true;
        self
    }

    pub fn watchdog_pid(mut self) -> Self {
        self.watchdog_pid = true;
        self
    }
}

/// Log lines seen so far, shared with the reader thread.
#[derive(Default)]
pub struct Logs {
    lines: Mutex<Vec<String>>,
    changed: Condvar,
}

impl Logs {
    /// Waits until a line satisfies `predicate`, returning it parsed.
    pub fn wait_for(&self, timeout: Duration, predicate: impl Fn(&Value) -> bool) -> Option<Value> {
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

    pub fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

pub struct Server {
    pub child: Child,
    pub http: Option<SocketAddr>,
    pub https: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub logs: Arc<Logs>,
    _temp: Option<tempfile::TempDir>,
}

pub fn message_is(value: &Value, message: &str) -> bool {
    value.get("message").and_then(Value::as_str) == Some(message)
}

fn spawn_log_reader(stderr: std::process::ChildStderr, logs: Arc<Logs>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            logs.lines.lock().unwrap().push(line);
            logs.changed.notify_all();
        }
        // A closing marker so waiters stop early on exit.
        logs.lines
            .lock()
            .unwrap()
            .push("{\"message\":\"<stderr closed>\"}".into());
        logs.changed.notify_all();
    });
}

impl Server {
    pub fn start(options: Options) -> Self {
        Self::try_start(options).unwrap_or_else(|(logs, status)| {
            panic!("cairn did not become ready (exit {status:?}); log:\n{logs}")
        })
    }

    /// Starts a server; on failure returns the log and the exit status.
    pub fn try_start(options: Options) -> Result<Self, (String, Option<ExitStatus>)> {
        let temp = tempfile::tempdir().unwrap();
        let data_dir = options
            .data_dir
            .clone()
            .unwrap_or_else(|| temp.path().join("data"));
        let mut command = if options.watchdog_pid {
            // exec keeps the shell's pid, which systemd would have put in WATCHDOG_PID.
            let mut sh = Command::new("/bin/sh");
            sh.args(["-c", "export WATCHDOG_PID=$$; exec \"$0\" \"$@\"", BIN]);
            sh
        } else {
            Command::new(BIN)
        };
        command
            .arg("serve")
            .arg("--data-dir")
            .arg(&data_dir)
            .args(["--http-listen", "127.0.0.1:0", "--log-format", "json"])
            .args([
                "--https-listen",
                if options.https { "127.0.0.1:0" } else { "off" },
            ])
            .env_remove("NOTIFY_SOCKET")
            .env_remove("CAIRN_LOG")
            .env_remove("CAIRN_ADMIN_PASSWORD")
            .env_remove("CAIRN_ADMIN_PASSWORD_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(toml) = &options.config_toml {
            let path = temp.path().join("cairn.toml");
            std::fs::write(&path, toml).unwrap();
            command.arg("--config").arg(path);
        }
        if !options.no_admin {
            command.env("CAIRN_ADMIN_PASSWORD", ADMIN_PASSWORD);
        }
        command.args(&options.args);
        for (key, value) in &options.env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn cairn");
        let logs = Arc::new(Logs::default());
        spawn_log_reader(child.stderr.take().unwrap(), Arc::clone(&logs));
        let ready = logs.wait_for(Duration::from_secs(30), |v| {
            message_is(v, "cairn is ready") || message_is(v, "<stderr closed>")
        });
        if !ready.is_some_and(|v| message_is(&v, "cairn is ready")) {
            let _ = child.kill();
            let status = child.wait().ok();
            return Err((logs.text(), status));
        }
        let addr_of = |listener: &str| {
            logs.wait_for(Duration::from_millis(10), |v| {
                message_is(v, "listening") && v["listener"] == listener
            })
            .and_then(|v| v["addr"].as_str().and_then(|a| a.parse().ok()))
        };
        Ok(Self {
            http: addr_of("http"),
            https: addr_of("https"),
            child,
            data_dir,
            logs,
            _temp: Some(temp),
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http.expect("http listener"))
    }

    pub fn https_url(&self, path: &str) -> String {
        format!(
            "https://localhost:{}{path}",
            self.https.expect("https listener").port()
        )
    }

    /// Creates an API key for `user` through the running server's admin socket.
    pub fn key_for(&self, user: &str, scopes: &str) -> String {
        let dir = self.data_dir.to_str().unwrap();
        let (code, out, err) = run_cli(
            &[
                "admin",
                "create-key",
                "--data-dir",
                dir,
                "--user",
                user,
                "--scopes",
                scopes,
            ],
            &[],
        );
        assert_eq!(code, 0, "create-key failed: {err}");
        out.trim().to_owned()
    }

    /// An admin key with every scope.
    pub fn admin_key(&self) -> String {
        self.key_for(
            "admin",
            "infer,models:read,models:write,tasks:read,tasks:write,metrics:read,fleet:read,keys:manage,users:manage",
        )
    }

    /// Creates a user through the admin socket.
    pub fn create_user(&self, username: &str, role: &str, password: &str) {
        let dir = self.data_dir.to_str().unwrap();
        let (code, _, err) = run_cli_stdin(
            &[
                "admin",
                "create-user",
                "--data-dir",
                dir,
                "--username",
                username,
                "--role",
                role,
                "--password-stdin",
            ],
            password,
        );
        assert_eq!(code, 0, "create-user failed: {err}");
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        nix::sys::signal::kill(pid, signal).unwrap();
    }

    /// SIGTERM, then the exit status.
    pub fn stop(mut self) -> ExitStatus {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        self.wait_exit(Duration::from_secs(30))
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "cairn did not exit; log:\n{}",
                self.logs.text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// Runs `cairn` with `args` to completion: (exit code, stdout, stderr).
pub fn run_cli(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(BIN);
    command.args(args);
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output().expect("run cairn");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs `cairn` with `input` on stdin: (exit code, stdout, stderr).
pub fn run_cli_stdin(args: &[&str], input: &str) -> (i32, String, String) {
    use std::io::Write as _;
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run cairn");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{input}\n").as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A logged-in console session: the cookie and the CSRF token.
pub struct Session {
    pub cookie: String,
    pub csrf: String,
}

pub async fn login(base: &str, username: &str, password: &str) -> Session {
    let response = client()
        .post(format!("{base}/api/v1/auth/login"))
        .json(&serde_json::json!({"username": username, "password": password}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "login of {username}");
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let body: serde_json::Value = response.json().await.unwrap();
    Session {
        cookie,
        csrf: body["csrf_token"].as_str().unwrap().to_owned(),
    }
}
