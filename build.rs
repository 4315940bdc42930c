//! Sets `BIGCACHE_COMMIT` for `bigcache --version`: the commit the binary
//! was built from, read from git in a checkout, from the
//! `.cargo_vcs_info.json` `cargo package` writes in a packaged crate, and
//! `unknown` where neither is there.

use std::path::Path;
use std::process::Command;

fn main() {
    let commit = from_git()
        .or_else(from_package)
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=BIGCACHE_COMMIT={commit}");
    // A new commit moves the branch's ref; a checkout moves HEAD.
    println!("cargo:rerun-if-changed=.git/HEAD");
    if let Ok(head) = std::fs::read_to_string(".git/HEAD")
        && let Some(r) = head.trim().strip_prefix("ref: ")
    {
        println!("cargo:rerun-if-changed=.git/{r}");
    }
    println!("cargo:rerun-if-changed=.git/packed-refs");
}

fn from_git() -> Option<String> {
    if !Path::new(".git").exists() {
        return None;
    }
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    let sha = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !sha.is_empty()).then_some(sha)
}

fn from_package() -> Option<String> {
    let text = std::fs::read_to_string(".cargo_vcs_info.json").ok()?;
    // {"git": {"sha1": "<40 hex>"}, ...}: the one value this needs.
    let at = text.find("\"sha1\"")?;
    let rest = &text[at + 6..];
    let start = rest.find('"')? + 1;
    let sha: String = rest[start..]
        .chars()
        .take_while(char::is_ascii_hexdigit)
        .collect();
    (sha.len() >= 12).then(|| sha[..12].to_string())
}
