//! Starting and stopping bigcache for tests: the real binary in a child
//! process (for signals, `kill -9` and restarts), or the same server in
//! this process with a manual clock (for anything that waits for time to
//! pass: the test advances the clock instead of sleeping).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

use bigcache::clock::Clock;
use clap::Parser;

pub const BIN: &str = env!("CARGO_BIN_EXE_bigcache");

/// A running bigcache on free loopback ports, stopped when dropped.
pub struct Server {
    run: Run,
    pub api: String,
    pub proxy: String,
}

enum Run {
    Child(Child),
    Local {
        clock: Clock,
        /// Shuts the server down (as SIGTERM would) when sent or dropped.
        stop: Option<tokio::sync::oneshot::Sender<()>>,
    },
}

impl Server {
    /// Runs `bigcache::server::run` in this process on `dir`, with the same
    /// flags the binary takes and a manual clock (see [`Server::advance`]).
    pub async fn local_in(dir: &Path, extra: &[&str]) -> Server {
        let dir = dir.to_str().expect("a UTF-8 temporary directory");
        let mut argv = vec![
            "bigcache",
            "--data-dir",
            dir,
            "--api-listen",
            "127.0.0.1:0",
            "--proxy-listen",
            "127.0.0.1:0",
        ];
        argv.extend_from_slice(extra);
        let cfg = bigcache::config::Args::try_parse_from(argv)
            .expect("flags")
            .validate()
            .expect("valid flags");
        let listeners = bigcache::server::Listeners::bind(&cfg).await.expect("bind");
        let api = format!("http://{}", listeners.api.local_addr().unwrap());
        let proxy = format!("http://{}", listeners.proxy.local_addr().unwrap());
        let clock = Clock::manual(SystemTime::now());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(bigcache::server::run(
            cfg,
            listeners,
            clock.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        // The API answers 503 until the store is open: wait for ready.
        let ready = format!("{api}/readyz");
        for _ in 0..500 {
            match reqwest::get(&ready).await {
                Ok(r) if r.status() == 200 => break,
                _ => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
        Server {
            run: Run::Local {
                clock,
                stop: Some(stop),
            },
            api,
            proxy,
        }
    }

    /// Moves an in-process server's clock forward: every lifetime it keeps
    /// runs down by `by` at once.
    pub fn advance(&self, by: Duration) {
        match &self.run {
            Run::Local { clock, .. } => assert!(clock.advance(by)),
            Run::Child(_) => panic!("only an in-process server's clock can be advanced"),
        }
    }

    /// Starts bigcache on `dir` with extra flags and waits until it listens.
    pub fn start_in(dir: &Path, extra: &[&str]) -> Server {
        Self::start_with_env(dir, extra, &[])
    }

    /// [`Server::start_in`] with its log (stderr) going to `log`.
    pub fn start_logging(dir: &Path, extra: &[&str], log: &Path) -> Server {
        let file = std::fs::File::create(log).expect("log file");
        Self::spawn(dir, extra, &[], Stdio::from(file))
    }

    /// [`Server::start_in`] with extra environment variables.
    pub fn start_with_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        Self::spawn(dir, extra, env, Stdio::inherit())
    }

    fn spawn(dir: &Path, extra: &[&str], env: &[(&str, &str)], stderr: Stdio) -> Server {
        let mut child = Command::new(BIN)
            .arg("--data-dir")
            .arg(dir)
            .args([
                "--api-listen",
                "127.0.0.1:0",
                "--proxy-listen",
                "127.0.0.1:0",
            ])
            .args([
                "--log",
                &std::env::var("BIGCACHE_TEST_LOG").unwrap_or("warn".into()),
            ])
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn bigcache");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let (api, proxy) = loop {
            match lines.next() {
                Some(Ok(line)) => {
                    if let Some(rest) = line.strip_prefix("bigcache listening api=")
                        && let Some((api, proxy)) = rest.trim().split_once(" proxy=")
                    {
                        break (api.to_string(), proxy.to_string());
                    }
                }
                _ => {
                    let status = child.wait().ok();
                    panic!("bigcache exited before listening: {status:?}");
                }
            }
        };
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Server {
            run: Run::Child(child),
            api,
            proxy,
        }
    }

    fn child(&mut self) -> &mut Child {
        match &mut self.run {
            Run::Child(c) => c,
            Run::Local { .. } => panic!("an in-process server has no process"),
        }
    }

    /// A URL on the REST API.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.api, path)
    }

    /// A URL on the proxy.
    pub fn page(&self, path: &str) -> String {
        format!("{}{}", self.proxy, path)
    }

    fn signal(&self, sig: &str) {
        let Run::Child(child) = &self.run else {
            panic!("an in-process server takes no signals");
        };
        let ok = Command::new("kill")
            .args([sig, &child.id().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig} failed");
    }

    /// SIGTERM, then waits (bounded) for a clean exit.
    pub fn stop(mut self) -> ExitStatus {
        self.signal("-TERM");
        self.wait(Duration::from_secs(15))
    }

    /// SIGKILL, without waiting: no chance to flush or close anything.
    /// Sends SIGTERM and returns at once (the server drains meanwhile).
    pub fn terminate(&self) {
        self.signal("-TERM");
    }

    /// The server process's resident memory, in bytes.
    pub fn rss(&self) -> u64 {
        let Run::Child(child) = &self.run else {
            panic!("an in-process server shares this process's memory");
        };
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .expect("VmRSS")
            * 1024
    }

    /// SIGHUP: the server reopens its access log.
    pub fn hangup(&self) {
        self.signal("-HUP");
    }

    pub fn kill9_now(&self) {
        self.signal("-KILL");
    }

    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child().try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "bigcache did not exit in {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        match &mut self.run {
            Run::Child(child) => {
                let _ = child.kill();
                let _ = child.wait();
            }
            Run::Local { stop, .. } => {
                if let Some(stop) = stop.take() {
                    let _ = stop.send(());
                }
            }
        }
    }
}

/// A server (the binary) on a fresh temporary directory, with `args`.
pub fn start(args: &[&str]) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_in(dir.path(), args);
    (dir, server)
}

/// [`start`], in this process, for tests that advance its clock.
pub async fn start_local(args: &[&str]) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::local_in(dir.path(), args).await;
    (dir, server)
}

fn upstream_args<'a>(origin: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["--upstream", origin];
    args.extend_from_slice(extra);
    args
}

/// [`start`] in front of the upstream at `origin`.
pub fn start_proxy(origin: &str, extra: &[&str]) -> (tempfile::TempDir, Server) {
    start(&upstream_args(origin, extra))
}

/// [`start_local`] in front of the upstream at `origin`.
pub async fn start_local_proxy(origin: &str, extra: &[&str]) -> (tempfile::TempDir, Server) {
    start_local(&upstream_args(origin, extra)).await
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// POSTs `body` as JSON to the REST API; the status and the JSON answer
/// (`null` if none).
pub async fn post_json(
    s: &Server,
    path: &str,
    body: serde_json::Value,
) -> (reqwest::StatusCode, serde_json::Value) {
    let r = client().post(s.url(path)).json(&body).send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// GETs a REST API path; the status and the JSON answer (`null` if none).
pub async fn get_json(s: &Server, path: &str) -> (reqwest::StatusCode, serde_json::Value) {
    let r = client().get(s.url(path)).send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

/// Waits (bounded) until the store holds `n` entries. A page is written
/// after its requester has been answered; a test that moves the clock, or
/// kills the server, next lets the write land first, as real time would.
pub async fn stored(s: &Server, n: u64) {
    for _ in 0..500 {
        let r: serde_json::Value = client()
            .get(s.url("/stat/count"))
            .send()
            .await
            .expect("GET /stat/count")
            .json()
            .await
            .expect("a JSON count");
        if r["count"].as_u64() >= Some(n) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the store never held {n} entries");
}

/// Bytes under `dir`, recursively.
pub fn du(dir: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                total += du(&e.path());
            } else {
                total += m.len();
            }
        }
    }
    total
}

/// Incompressible-ish bytes, so disk figures are not flattered by snappy.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A string of `len` printable characters that snappy cannot shrink much.
pub fn noise_text(seed: u64, len: usize) -> String {
    noise(seed, len)
        .into_iter()
        .map(|b| char::from(b'a' + b % 26))
        .collect()
}

/// A tmpfs of a given size, mounted for one test (needs root, as the test
/// suite runs), so a full or small disk is a real one.
pub struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    pub fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "mounting a tmpfs needs root (the test suite runs as root)"
        );
        SmallDisk { dir }
    }

    pub fn remount(&self, opts: &str) {
        let ok = std::process::Command::new("mount")
            .args(["-o", &format!("remount,{opts}")])
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "remount {opts}");
    }

    pub fn path(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Bytes the data directory `dir` takes: every file once, however many
/// names it has.
pub fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push(e.path());
            } else if seen.insert((m.dev(), m.ino())) {
                total += m.len();
            }
        }
    }
    total
}
