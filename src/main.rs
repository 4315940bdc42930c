//! The `bigcache` binary: parse flags, set up logging, run the server.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    limit_malloc_arenas();
    let args = bigcache::config::Args::parse();
    let filter = EnvFilter::try_new(&args.log).unwrap_or_else(|e| {
        eprintln!(
            "bigcache: bad --log filter {:?} ({e}); using `info`",
            args.log
        );
        EnvFilter::new("info")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();

    let cfg = match args.validate() {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("bigcache: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bigcache: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bigcache::server::run(cfg, bigcache::shutdown::signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("bigcache: {e}");
            ExitCode::FAILURE
        }
    }
}

/// glibc gives each thread that allocates its own malloc arena (up to 8 per
/// core). Page bodies are allocated on shard threads and freed on runtime
/// threads, so every arena ends up holding freed 20 KB buffers: measured,
/// RSS with a 128 MiB hot tier went to 322 MB instead of ~180 MB. Two
/// arenas keep the process close to its budget at no measurable cost.
/// Must run before any other thread starts.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    // SAFETY: mallopt only sets a glibc tunable; called while single-threaded.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}
