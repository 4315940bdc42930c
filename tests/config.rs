//! The config file and `--print-config`, through the real binary.

use std::process::Command;

use crate::util::BIN;

fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .envs(env.iter().copied())
        .env_remove("BIGCACHE_UPSTREAM")
        .output()
        .expect("run bigcache");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Flags win over `BIGCACHE_*` variables, which win over the file, which
/// wins over the defaults; `--print-config` shows the outcome as a config
/// file, which reads back to the same.
#[test]
fn precedence_is_flags_then_environment_then_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bigcache.toml");
    std::fs::write(
        &file,
        r#"
upstream = "http://127.0.0.1:9999"
grace = "5s"
max_variants = 7
sync = true
host = ["a.example", "b.example"]
api-token = "s3cret"
"#,
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let (code, out, err) = run(
        &["--config", f, "--max-variants", "9", "--print-config"],
        &[("BIGCACHE_GRACE", "6s")],
    );
    assert_eq!(code, 0, "{err}");
    for line in [
        r#"upstream = "http://127.0.0.1:9999""#,
        r#"grace = "6s""#,
        r#"max-variants = "9""#,
        "sync = true",
        r#"host = ["a.example", "b.example"]"#,
        r#"shards = "4""#,
        r#"api-token = "<set>""#,
    ] {
        assert!(
            out.lines().any(|l| l == line),
            "{line} missing from:\n{out}"
        );
    }
    assert!(!out.contains("s3cret"), "the token was printed");
    // What it printed is itself a config file giving the same outcome.
    let printed = dir.path().join("printed.toml");
    std::fs::write(&printed, out.replace("\"<set>\"", "\"s3cret\"")).unwrap();
    let (code, again, err) = run(
        &["--config", printed.to_str().unwrap(), "--print-config"],
        &[],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(again, out);
}

/// A key no flag has, a value of the wrong kind, or a value the flag
/// refuses, is an error naming it, and bigcache does not start.
#[test]
fn bad_config_files_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    for (text, needle) in [
        ("upstream_url = \"http://x\"", "unknown key `upstream_url`"),
        ("sync = \"yes\"", "`sync`"),
        ("grace = { a = 1 }", "`grace`"),
        ("grace = \"soon\"", "--grace"),
        ("shards = [", "bigcache.toml: line 1"),
        // The offending line is not echoed: it may hold the token.
        ("api-token = \"s3cret", "bigcache.toml: line 1"),
    ] {
        let file = dir.path().join("bigcache.toml");
        std::fs::write(&file, text).unwrap();
        let (code, _, err) = run(&["--config", file.to_str().unwrap(), "--print-config"], &[]);
        assert_eq!(code, 2, "{text}: {err}");
        assert!(err.contains(needle), "{text}: {err}");
    }
    let file = dir.path().join("bigcache.toml");
    std::fs::write(&file, "api-token = \"s3cret").unwrap();
    let (_, _, err) = run(&["--config", file.to_str().unwrap()], &[]);
    assert!(!err.contains("s3cret"), "the token was echoed: {err}");
    // A value that starts with `-` is a value, not a flag.
    std::fs::write(
        &file,
        "session-cookie = [\"-sid\"]\nupstream = \"http://127.0.0.1:9\"",
    )
    .unwrap();
    let (code, out, err) = run(&["--config", file.to_str().unwrap(), "--print-config"], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(r#"session-cookie = ["-sid"]"#), "{out}");
    let (code, _, err) = run(&["--config", "/nonexistent.toml"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("/nonexistent.toml"), "{err}");
}
