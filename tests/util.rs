//! Starting and stopping the real binary for tests.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_bigcache");

/// A running `bigcache` on a free loopback port, killed when dropped.
pub struct Server {
    child: Child,
    pub api: String,
    pub proxy: String,
}

impl Server {
    /// Starts bigcache on `dir` with extra flags and waits until it listens.
    pub fn start_in(dir: &Path, extra: &[&str]) -> Server {
        let mut child = Command::new(BIN)
            .arg("--data-dir")
            .arg(dir)
            .args([
                "--api-listen",
                "127.0.0.1:0",
                "--proxy-listen",
                "127.0.0.1:0",
            ])
            .args(["--log", "warn"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
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
        Server { child, api, proxy }
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
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
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
    pub fn kill9_now(&self) {
        self.signal("-KILL");
    }

    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
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
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
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
