//! `fluxadmit-bench`: load (floor server vs fluxadmit over TLS), memory, startup, scaling and
//! HTTP/2 rapid-reset benchmarks, kept out of the shipped binary. The generators in
//! [`generate`] (`src/gen.rs`) are shared with the criterion benches (`benches/engine.rs`).
//! See BENCHMARKS.md for the commands and the numbers.

#[path = "gen.rs"]
pub mod generate;
pub mod load;
pub mod rapid;
pub mod repo;
pub mod scaling;
pub mod startup;

use clap::{Args, Subcommand};
use fluxadmit::parse_duration;
use load::{LoadConfig, Proto, Scenario, Server};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub command: BenchCommand,
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Floor server vs fluxadmit, over TLS with keep-alive, HTTP/1.1 and HTTP/2.
    Load(LoadArgs),
    /// RSS of this process before and after building the policies and a generated view.
    Memory(MemoryArgs),
    /// Time from starting `fluxadmit serve` to a 200 on /readyz with a generated --state.
    Startup(StartupArgs),
    /// HelmRelease review latency against matching rules and view size.
    Scaling(ScalingArgs),
    /// `fluxadmit check` on a generated Flux repository, without and with kustomize builds.
    Repo(RepoArgs),
    /// HTTP/2 rapid reset (CVE-2023-44487): `fluxadmit serve`'s CPU per stream opened and
    /// cancelled at once, against its CPU per review it answers.
    RapidReset(RapidArgs),
}

#[derive(Args, Debug)]
pub struct RapidArgs {
    /// Streams to open and reset (HEADERS, a DATA chunk of the review, RST_STREAM CANCEL) in
    /// each reset phase; also the number of PINGs of the PING phase.
    #[arg(long, default_value_t = 20_000)]
    pub streams: u64,
    /// Cap on each reset phase, in seconds: it stops then even if not all streams were sent.
    #[arg(long, default_value_t = 30)]
    pub seconds: u64,
    /// One reset phase per value: streams written between two PINGs (each PONG awaited). 1:
    /// the server reads and handles every stream; 100: it sees the resets in bursts.
    #[arg(long, value_delimiter = ',', default_value = "1,100", value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: Vec<u64>,
    /// Real reviews (the ~6 KB Deployment to /validate), each answered and checked.
    #[arg(long, default_value_t = 5_000)]
    pub reviews: u64,
    /// Reviews in flight at once, as streams of one HTTP/2 connection.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
}

#[derive(Args, Debug)]
pub struct RepoArgs {
    /// Flux Kustomizations in the generated repository.
    #[arg(long, default_value_t = 1_000)]
    pub kustomizations: usize,
    /// HelmReleases, spread over the Kustomizations' directories.
    #[arg(long, default_value_t = 2_000)]
    pub releases: usize,
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// A directory holding kustomize or kubectl: also time the repository with a
    /// kustomization.yaml in every app directory (otherwise only without builds).
    #[arg(long)]
    pub kustomize_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Measured time per (server, protocol, connections, body).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Unmeasured time before each measurement (connections are already open).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Rounds per cell: the measured time is split into this many slices, taken in turn from
    /// each server (floor, fluxadmit, floor, fluxadmit, …) and added up, so a drift of the
    /// machine during a cell falls on every server alike. Each slice has its own warm-up.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
    /// Concurrent requests in flight: connections (HTTP/1.1) or streams (HTTP/2).
    #[arg(long, value_delimiter = ',', default_value = "16,64")]
    pub connections: Vec<usize>,
    /// Objects in fluxadmit's generated cluster view.
    #[arg(long, default_value_t = 65_000)]
    pub objects: usize,
    #[arg(long, value_delimiter = ',', default_value = "h1,h2")]
    pub protocols: Vec<Proto>,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "deploy-validate,deploy-mutate,hr-validate"
    )]
    pub bodies: Vec<Scenario>,
    #[arg(long, value_delimiter = ',', default_value = "floor,fluxadmit")]
    pub servers: Vec<Server>,
    /// HTTP/2 connections the streams are spread over.
    #[arg(long, default_value_t = 4)]
    pub h2_connections: usize,
    /// Worker threads of the servers' runtime.
    #[arg(long, default_value_t = 2)]
    pub server_threads: usize,
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 2)]
    pub client_threads: usize,
    /// Also write the markdown report to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct MemoryArgs {
    #[arg(long, default_value_t = 65_000)]
    pub objects: usize,
}

#[derive(Args, Debug)]
pub struct StartupArgs {
    #[arg(long, default_value_t = 65_000)]
    pub objects: usize,
    /// Number of starts (the state directory is written once).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
    /// Give up on one start after this long.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Args, Debug)]
pub struct ScalingArgs {
    /// Numbers of matching rules (generated policies, one rule each).
    #[arg(long, value_delimiter = ',', default_value = "1,10,50")]
    pub rules: Vec<usize>,
    /// View size for the matching-rules series.
    #[arg(long, default_value_t = 65_000)]
    pub rules_objects: usize,
    /// View sizes (objects) for the view series.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000")]
    pub views: Vec<usize>,
    /// Measuring time per case.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub budget: Duration,
}

/// Median time of one call of `f`, in ns: a tenth of `budget` to warm up and size batches of
/// about 1 ms, then batches until `budget` is spent; the median of the batch means.
pub fn median_ns(mut f: impl FnMut(), budget: Duration) -> f64 {
    let warm = budget / 10;
    let t = Instant::now();
    let mut iters: u128 = 0;
    while t.elapsed() < warm || iters == 0 {
        f();
        iters += 1;
    }
    let per = (t.elapsed().as_nanos() / iters).max(1);
    let batch = (1_000_000 / per).clamp(1, 100_000);
    let mut samples = Vec::new();
    let end = Instant::now() + budget;
    while Instant::now() < end || samples.len() < 5 {
        let t = Instant::now();
        for _ in 0..batch {
            f();
        }
        samples.push(t.elapsed().as_nanos() as f64 / batch as f64);
    }
    samples.sort_by(f64::total_cmp);
    samples.get(samples.len() / 2).copied().unwrap_or(0.0)
}

fn emit(report: &str, out: Option<&PathBuf>) -> anyhow::Result<()> {
    println!("{report}");
    if let Some(p) = out {
        std::fs::write(p, report)?;
    }
    Ok(())
}

/// `fluxadmit bench ...`.
pub fn run(args: BenchArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        BenchCommand::Load(a) => {
            let cfg = LoadConfig {
                duration: a.duration,
                warmup: a.warmup,
                rounds: a.rounds,
                connections: a.connections,
                objects: a.objects,
                protocols: a.protocols,
                scenarios: a.bodies,
                servers: a.servers,
                h2_connections: a.h2_connections,
                server_threads: a.server_threads,
                client_threads: a.client_threads,
            };
            let (rows, probes) = load::run(&cfg)?;
            emit(&load::markdown(&cfg, &rows, &probes), a.out.as_ref())?;
        }
        BenchCommand::Memory(a) => {
            let r = startup::memory(a.objects)?;
            println!("{}", r.markdown());
        }
        BenchCommand::Startup(a) => {
            let (fx, runs) = startup::startup(a.objects, a.runs, a.timeout)?;
            println!("{}", startup::startup_markdown(&fx, &runs));
        }
        BenchCommand::Repo(a) => {
            println!(
                "{}",
                repo::run(a.kustomizations, a.releases, a.runs, a.kustomize_dir)?
            );
        }
        BenchCommand::RapidReset(a) => {
            let r = rapid::run(&rapid::RapidConfig {
                streams: a.streams,
                max_time: Duration::from_secs(a.seconds),
                batches: a.batch,
                reviews: a.reviews,
                concurrency: a.concurrency,
            })?;
            println!("{}", rapid::markdown(&r));
        }
        BenchCommand::Scaling(a) => {
            let (r, v) = scaling::run(&a.rules, a.rules_objects, &a.views, a.budget)?;
            println!("{}", scaling::markdown(&r, &v));
        }
    }
    Ok(ExitCode::SUCCESS)
}
