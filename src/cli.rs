//! The command line as one clap definition: the server's flags
//! ([`crate::config::Args`]) and the subcommands (`warm`, `completions`,
//! `man`, `help`). `--help`, `bigcache help <command>`, the man page and
//! the shell completions are all made from it, so none of them can
//! forget a flag or a subcommand the binary takes.

use std::ffi::OsString;
use std::io::Write;
use std::process::ExitCode;

use clap::{Arg, CommandFactory};

/// `bigcache --version`: the crate's version and the commit it was built
/// from (`build.rs`).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (",
    env!("BIGCACHE_COMMIT"),
    ")"
);

/// The whole command line.
pub fn command() -> clap::Command {
    crate::config::Args::command()
        .args_conflicts_with_subcommands(true)
        .subcommand(warm_command())
        .subcommand(
            clap::Command::new("completions")
                .about(
                    "Print the completion script for a shell (bash, zsh, fish, elvish, powershell)",
                )
                .arg(
                    Arg::new("shell")
                        .required(true)
                        .value_parser(clap::value_parser!(clap_complete::Shell)),
                ),
        )
        .subcommand(clap::Command::new("man").about("Print the man page (roff, for man -l)"))
}

/// `bigcache warm`, as `--help`, `bigcache help warm` and the subcommand
/// itself read it.
pub fn warm_command() -> clap::Command {
    crate::warm::WarmArgs::command()
        .name("warm")
        .bin_name("bigcache warm")
        .about("Request a sitemap's (or a list's) pages through the proxy, so visitors find them cached")
        .version(VERSION)
}

/// What `main` does with its arguments.
pub enum Run {
    /// Serve, with flags `config::file::parse` reads.
    Serve,
    /// `bigcache warm ...`: `argv` from `warm` on.
    Warm,
    /// Done here (help, version, a generated file, or a usage error).
    Exit(ExitCode),
}

/// Reads `argv` against the whole command line: help and version (with the
/// subcommands listed), usage errors, and the generated files are answered
/// here; serving and warming are `main`'s.
pub fn dispatch(argv: &[OsString]) -> Run {
    // A subcommand is read on its own: the server's flags, and the
    // `BIGCACHE_*` variables that set them, are not its business (a bad
    // `BIGCACHE_SHARDS` in the shell must not stop `bigcache warm`). It
    // can only come first (`args_conflicts_with_subcommands`).
    let first = argv.get(1).and_then(|a| a.to_str());
    if first == Some("warm") {
        return Run::Warm;
    }
    if let Some(name @ ("completions" | "man")) = first {
        let sub = command()
            .find_subcommand(name)
            .cloned()
            .map(|c| c.bin_name(format!("bigcache {name}")));
        return match sub.map(|c| c.try_get_matches_from(&argv[1..])) {
            Some(Ok(_)) if name == "man" => man(),
            Some(Ok(m)) => completions(&m),
            Some(Err(e)) => exit_with(&e),
            None => Run::Exit(ExitCode::from(2)),
        };
    }
    // The server's flags; help, version and usage errors end here.
    match command().try_get_matches_from(argv) {
        Ok(m) => match m.subcommand_name() {
            None => Run::Serve,
            Some(other) => {
                eprintln!("bigcache: no subcommand {other}");
                Run::Exit(ExitCode::from(2))
            }
        },
        Err(e) => exit_with(&e),
    }
}

/// Help and version print to stdout and succeed; errors do not.
fn exit_with(e: &clap::Error) -> Run {
    let _ = e.print();
    Run::Exit(ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2)))
}

/// `bigcache completions <shell>`, for the whole command line.
fn completions(m: &clap::ArgMatches) -> Run {
    let Some(shell) = m.get_one::<clap_complete::Shell>("shell").copied() else {
        return Run::Exit(ExitCode::from(2));
    };
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut command(), "bigcache", &mut out);
    Run::Exit(write_out(&out))
}

/// `bigcache man`: the whole command line's man page.
fn man() -> Run {
    let mut out = Vec::new();
    match clap_mangen::Man::new(command()).render(&mut out) {
        Ok(()) => Run::Exit(write_out(&out)),
        Err(e) => {
            eprintln!("bigcache man: {e}");
            Run::Exit(ExitCode::FAILURE)
        }
    }
}

fn write_out(bytes: &[u8]) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        // A closed pipe (`bigcache man | head`) is not worth a message.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bigcache: writing: {e}");
            ExitCode::FAILURE
        }
    }
}
