//! The command line's conventions: `--version` with the commit, the
//! subcommands in `--help` and `bigcache help`, and the man page and shell
//! completions generated from the same clap definition.

use std::process::{Command, Output};

use crate::util::BIN;

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("the binary runs")
}

fn stdout(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "bigcache {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn version_names_the_commit() {
    let v = stdout(&["--version"]);
    assert!(
        v.starts_with(&format!("bigcache {} (", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output();
    if let Some(head) = head.ok().filter(|h| h.status.success()) {
        let sha = String::from_utf8_lossy(&head.stdout).trim().to_string();
        assert!(v.contains(&sha), "{v} does not name HEAD {sha}");
    }
}

#[test]
fn help_lists_the_subcommands_and_explains_each() {
    let help = stdout(&["--help"]);
    for sub in ["warm", "completions", "man", "help"] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(sub)),
            "--help lists no {sub}:\n{help}"
        );
    }
    assert!(
        help.contains("--data-dir"),
        "the server's flags are there too"
    );
    assert_eq!(stdout(&["help"]), help, "`bigcache help` is `--help`");
    let warm = stdout(&["help", "warm"]);
    assert!(
        warm.contains("--concurrency") && warm.contains("<SOURCES>"),
        "{warm}"
    );
    assert_eq!(stdout(&["warm", "--help"]), warm);
    let bad = run(&["warm-up"]);
    assert_eq!(
        bad.status.code(),
        Some(2),
        "an unknown word is a usage error"
    );
    let bad = run(&["warm", "--data-dir", "x", "sitemap.xml"]);
    assert_eq!(bad.status.code(), Some(2), "server flags are not warm's");
}

#[test]
fn the_man_page_is_roff_with_every_flag_and_subcommand() {
    let man = stdout(&["man"]);
    assert!(
        man.starts_with(".ie") || man.starts_with(".TH"),
        "{}",
        &man[..80.min(man.len())]
    );
    assert!(man.contains(".TH bigcache 1"), "a section-1 page");
    for flag in [
        "data\\-dir",
        "proxy\\-listen",
        "compress\\-level",
        "api\\-token",
    ] {
        assert!(man.contains(flag), "the man page lacks --{flag}");
    }
    assert!(man.contains("warm"), "subcommands are listed");
    // man(1) renders it without complaint, where man is installed.
    if let Ok(out) = Command::new("man")
        .args(["--warnings", "-l", "-"])
        .env("MANWIDTH", "80")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(man.as_bytes())?;
            child.wait_with_output()
        })
    {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn completions_complete_flags_and_subcommands_in_bash() {
    let script = stdout(&["completions", "bash"]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bigcache.bash");
    std::fs::write(&path, &script).unwrap();
    // Loaded into a real bash, asked what follows `bigcache --data` and
    // `bigcache w`.
    let probe = format!(
        r#"source {}
COMP_WORDS=(bigcache --data); COMP_CWORD=1; COMP_LINE="bigcache --data"; COMP_POINT=${{#COMP_LINE}}
_bigcache bigcache --data bigcache; echo "flags: ${{COMPREPLY[*]}}"
COMP_WORDS=(bigcache w); COMP_CWORD=1; COMP_LINE="bigcache w"; COMP_POINT=${{#COMP_LINE}}
_bigcache bigcache w bigcache; echo "subcommands: ${{COMPREPLY[*]}}""#,
        path.display()
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(&probe)
        .output()
        .expect("bash");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("flags: --data-dir"), "{said}");
    assert!(said.contains("subcommands: warm"), "{said}");
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let s = stdout(&["completions", shell]);
        assert!(s.contains("data-dir") && s.contains("warm"), "{shell}");
    }
    assert_eq!(run(&["completions", "tcsh"]).status.code(), Some(2));
}

/// A subcommand does not read the server's flags: a bad `BIGCACHE_*`
/// variable in the shell stops the server (as it should), not `warm`,
/// `man` or `completions`.
#[test]
fn subcommands_ignore_the_servers_environment() {
    let with_bad_env = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .env("BIGCACHE_HOT_CACHE_SIZE", "lots")
            .output()
            .expect("the binary runs")
    };
    for args in [&["man"][..], &["completions", "fish"], &["warm", "--help"]] {
        let out = with_bad_env(args);
        assert!(
            out.status.success(),
            "bigcache {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let serve = with_bad_env(&["--data-dir", "/nonexistent/x"]);
    assert_eq!(serve.status.code(), Some(2), "the server still refuses it");
}
