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

/// The unit file as systemd reads it (`systemd-analyze verify`, with
/// ExecStart pointing at this build), and the shipped TOML started under
/// the unit's settings: every path it writes lies in a directory the unit
/// makes writable (`StateDirectory`, `LogsDirectory`; ProtectSystem=strict
/// leaves nothing else), so it runs with those directories moved into a
/// temporary root.
#[tokio::test(flavor = "multi_thread")]
async fn the_shipped_unit_verifies_and_the_shipped_toml_runs_under_it() {
    let root = env!("CARGO_MANIFEST_DIR");
    let unit = std::fs::read_to_string(format!("{root}/contrib/systemd/bigcache.service")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("bigcache.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/bigcache", BIN)).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no", copy.to_str().unwrap()])
        .current_dir(dir.path())
        .output()
        .expect("systemd-analyze (Debian's systemd package) must be installed");
    let said =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    let about_unit: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("bigcache.service"))
        .collect();
    assert!(out.status.success() && about_unit.is_empty(), "{said}");

    let setting = |key: &str| {
        unit.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{key} missing from the unit"))
            .to_string()
    };
    let writable = [
        format!("/var/lib/{}", setting("StateDirectory")),
        format!("/var/log/{}", setting("LogsDirectory")),
        format!("/run/{}", setting("RuntimeDirectory")),
    ];
    // The proxy's socket: where the unit puts it, the TOML names it and
    // the shipped nginx config looks for it.
    let socket = setting("Environment")
        .strip_prefix("BIGCACHE_PROXY_LISTEN=")
        .expect("the unit sets the proxy's socket")
        .to_string();
    let nginx = std::fs::read_to_string(format!("{root}/nginx/bigcache.conf")).unwrap();
    assert!(
        nginx.contains(&format!("server {socket};")),
        "nginx/bigcache.conf does not reach {socket}"
    );
    let toml_text = std::fs::read_to_string(format!("{root}/contrib/bigcache.toml")).unwrap();
    let toml: toml::Table = toml_text.parse().unwrap();
    assert_eq!(toml["proxy-listen"].as_str(), Some(socket.as_str()));
    for key in ["data-dir", "access-log", "proxy-listen"] {
        let path = toml[key].as_str().unwrap().trim_start_matches("unix:");
        assert!(
            writable
                .iter()
                .any(|w| path.starts_with(&format!("{w}/")) || path == w),
            "{key} = {path} is not writable under the unit ({writable:?})"
        );
    }
    // The same file, those directories under a temporary root, loopback
    // ports chosen by the system.
    let fake = dir.path().join("root");
    for w in &writable {
        std::fs::create_dir_all(fake.join(w.trim_start_matches('/'))).unwrap();
    }
    let mut moved = toml_text
        .replace("\"/var/", &format!("\"{}/var/", fake.display()))
        .replace("\"unix:/run/", &format!("\"unix:{}/run/", fake.display()));
    moved = moved
        .replace("127.0.0.1:8080", "127.0.0.1:0")
        .replace("127.0.0.1:36379", "127.0.0.1:0");
    moved = moved.replace("max-disk = \"200GiB\"", "max-disk = \"1GiB\"");
    let config = dir.path().join("bigcache.toml");
    std::fs::write(&config, moved).unwrap();
    let mut child = Command::new(BIN)
        .args(["--config", config.to_str().unwrap()])
        .env_remove("BIGCACHE_UPSTREAM")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    let stdout = child.stdout.take().unwrap();
    let read = std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line);
        line
    });
    let waited = tokio::task::spawn_blocking(move || read.join().unwrap());
    if let Ok(Ok(line)) = tokio::time::timeout(std::time::Duration::from_secs(60), waited).await {
        first = line;
    }
    let _ = child.kill();
    let out = child.wait_with_output().unwrap();
    assert!(
        first.starts_with("bigcache listening"),
        "{first}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = fake.join("var/log/bigcache/access.log");
    assert!(log.exists(), "the access log was not created");
}
