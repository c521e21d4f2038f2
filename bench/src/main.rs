// The same allocator as the shipped binary, so the floor server and fluxadmit run on it alike.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use fluxadmit_bench::{BenchArgs, BenchCommand};
use std::process::ExitCode;

/// fluxadmit's benchmarks: load (vs a floor server), memory, startup, scaling.
#[derive(Parser, Debug)]
#[command(name = "fluxadmit-bench", version)]
struct Cli {
    /// Log format of this process (the in-process fluxadmit server logs as `serve` does:
    /// `FLUXADMIT_BENCH_SERVER_LOG`, see `load`).
    #[arg(
        long,
        global = true,
        env = "FLUXADMIT_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: fluxadmit::LogFormat,
    /// Log filter of this process (tracing env-filter syntax).
    #[arg(long, global = true, env = "FLUXADMIT_LOG", default_value = "info")]
    log_level: String,
    #[command(subcommand)]
    command: BenchCommand,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The process logs as `fluxadmit` does, so the floor server runs under the same global
    // subscriber as the fluxadmit server around it (tracing's cost in hyper and rustls alike).
    let _log = fluxadmit::init_logging(cli.log_format, &cli.log_level);
    match fluxadmit_bench::run(BenchArgs {
        command: cli.command,
    }) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
