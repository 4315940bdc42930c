//! The `bigcache` binary: parse flags, set up logging, run the server.

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    bigcache::alloc::limit_arenas();
    let argv: Vec<_> = std::env::args_os().collect();
    match bigcache::cli::dispatch(&argv) {
        bigcache::cli::Run::Serve => {}
        bigcache::cli::Run::Warm => {
            init_logging("warn");
            return bigcache::warm::main(argv[1..].to_vec());
        }
        bigcache::cli::Run::Exit(code) => return code,
    }
    let args = match bigcache::config::file::parse(argv.clone()) {
        Ok(args) => args,
        Err(bigcache::config::file::FileError::Flags(e)) => e.exit(),
        Err(e) => {
            eprintln!("bigcache: {e}");
            return ExitCode::from(2);
        }
    };
    if args.print_config {
        return match bigcache::config::file::print(argv) {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("bigcache: {e}");
                ExitCode::from(2)
            }
        };
    }
    init_logging(&args.log);

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
    let served = runtime.block_on(async {
        let listeners = bigcache::server::Listeners::bind(&cfg).await?;
        let clock = bigcache::clock::Clock::system();
        bigcache::server::run(cfg, listeners, clock, bigcache::shutdown::signal()).await
    });
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("bigcache: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(log: &str) {
    let filter = EnvFilter::try_new(log).unwrap_or_else(|e| {
        eprintln!("bigcache: bad --log filter {log:?} ({e}); using `info`");
        EnvFilter::new("info")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
