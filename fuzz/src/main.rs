//! `fluxadmit-fuzz`: the in-process fuzzer (see FUZZING.md).
//!
//! ```text
//! cargo run --release -p fluxadmit-fuzz -- all --seconds 60     # every target, 60 s each
//! cargo run --release -p fluxadmit-fuzz -- cel --seconds 300    # one target
//! cargo run --release -p fluxadmit-fuzz -- replay FILE...       # run inputs through every target
//! cargo run --release -p fluxadmit-fuzz -- seed                 # rewrite fuzz/corpus from the fixtures
//! ```
//!
//! Each target runs in a worker process, so an input that kills the process (a stack overflow)
//! is saved too: the worker writes every input to a file before running it, and a worker that
//! dies has its last input saved as `fuzz/crashes/<target>/abort-*`; fuzzing then resumes.
//! Exit status: 0 when nothing was found, 1 otherwise.

use clap::Parser;
use fluxadmit_fuzz::driver::{self, Options, Verdict};
use fluxadmit_fuzz::targets::{ALL, Target, fuzz_dir};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// A worker's exit status when it found something.
const FOUND: i32 = 3;

#[derive(Parser, Debug)]
#[command(
    name = "fluxadmit-fuzz",
    about = "Fuzz fluxadmit's parsers of outside input"
)]
struct Args {
    /// review, policy, state, overlay, cel, check, or all; `seed` rewrites the corpus from the
    /// fixtures; `replay` runs the FILES through every target.
    what: String,
    /// Files for `replay`.
    files: Vec<PathBuf>,
    /// How long to fuzz each target.
    #[arg(long, default_value_t = 60.0)]
    seconds: f64,
    /// Seed of the random input maker (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Run in this process (no supervisor): what the supervisor runs.
    #[arg(long)]
    worker: bool,
    /// Where the worker writes the input about to run.
    #[arg(long)]
    last_input: Option<PathBuf>,
    /// Count the known open findings (FUZZING.md) as findings.
    #[arg(long)]
    strict: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.what.as_str() {
        "seed" => seed(),
        "replay" => replay(&args.files),
        "all" => run_targets(&ALL, &args),
        name => match Target::from_name(name) {
            Some(t) => run_targets(&[t], &args),
            None => {
                eprintln!(
                    "unknown target {name:?}: one of review, policy, state, overlay, cel, check, all, seed, replay"
                );
                ExitCode::from(2)
            }
        },
    }
}

fn seed() -> ExitCode {
    let root = fuzz_dir().join("..");
    match fluxadmit_fuzz::seed::write(&root) {
        Ok(counts) => {
            for (t, n) in counts {
                println!("{t}: {n} seeds");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cannot write the corpus: {e}");
            ExitCode::FAILURE
        }
    }
}

fn replay(files: &[PathBuf]) -> ExitCode {
    driver::install_panic_hook();
    let mut bad = 0;
    for f in files {
        let Ok(data) = std::fs::read(f) else {
            eprintln!("{}: cannot read", f.display());
            bad += 1;
            continue;
        };
        for t in ALL {
            let v = driver::run_one(t, &data);
            if !matches!(v, Verdict::Ok(_) | Verdict::Known(_)) {
                bad += 1;
            }
            println!("{} {}: {v:?}", f.display(), t.name());
        }
    }
    if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1)
}

fn run_targets(targets: &[Target], args: &Args) -> ExitCode {
    let seed = args.seed.unwrap_or_else(clock_seed);
    if args.worker {
        driver::install_panic_hook();
        let mut found = false;
        for (i, &t) in targets.iter().enumerate() {
            let opts = Options {
                seconds: args.seconds,
                seed: seed.wrapping_add(i as u64),
                last_input: args.last_input.clone(),
                strict: args.strict,
            };
            let stats = driver::fuzz(t, &opts);
            driver::report(t, &stats);
            found |= !stats.findings.is_empty();
        }
        return if found {
            ExitCode::from(FOUND as u8)
        } else {
            ExitCode::SUCCESS
        };
    }
    println!("seed {seed}, {} s per target", args.seconds);
    let mut found = false;
    for (i, &t) in targets.iter().enumerate() {
        found |= supervise(t, args, seed.wrapping_add(i as u64));
    }
    if found {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Runs one target in worker processes until its time is up; true when something was found.
fn supervise(t: Target, args: &Args, seed: u64) -> bool {
    let seconds = args.seconds;
    let Ok(exe) = std::env::current_exe() else {
        eprintln!("cannot find this executable");
        return true;
    };
    let last = std::env::temp_dir().join(format!(
        "fluxadmit-fuzz-{}-{}.last",
        t.name(),
        std::process::id()
    ));
    let start = Instant::now();
    let mut found = false;
    for restart in 0..10u64 {
        let left = seconds - start.elapsed().as_secs_f64();
        if restart > 0 && left < 1.0 {
            break;
        }
        let mut cmd = std::process::Command::new(&exe);
        if args.strict {
            cmd.arg("--strict");
        }
        let status = cmd
            .arg(t.name())
            .arg("--worker")
            .arg("--seconds")
            .arg(format!("{}", left.max(0.0)))
            .arg("--seed")
            .arg(format!("{}", seed.wrapping_add(restart * 7919)))
            .arg("--last-input")
            .arg(&last)
            .status();
        match status {
            Ok(s) if s.success() => break,
            Ok(s) if s.code() == Some(FOUND) => {
                found = true;
                break;
            }
            other => {
                found = true;
                let data = std::fs::read(&last).unwrap_or_default();
                let input = last_input(&data);
                let saved = driver::save_crash(t, "abort", input);
                println!(
                    "  {}: the worker died ({other:?}); its last input saved to {}",
                    t.name(),
                    saved.map(|p| p.display().to_string()).unwrap_or_default()
                );
            }
        }
    }
    let _ = std::fs::remove_file(&last);
    found
}

/// The input in a last-input file: a little-endian length, then the bytes.
fn last_input(data: &[u8]) -> &[u8] {
    let Some((len, rest)) = data.split_first_chunk::<8>() else {
        return &[];
    };
    let len = usize::try_from(u64::from_le_bytes(*len)).unwrap_or(usize::MAX);
    &rest[..len.min(rest.len())]
}
