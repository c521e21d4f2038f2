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
    #[command(subcommand)]
    command: BenchCommand,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
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
