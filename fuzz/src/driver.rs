//! The in-process fuzzing loop: seeds from `fuzz/corpus/<target>/` and `fuzz/regressions/`,
//! inputs made by byte mutation, tree mutation or generation, every run under
//! `catch_unwind`. Feedback is the target's behaviour signature (which error, which rules
//! fired): an input with a signature not seen before joins the in-memory corpus. A panic or an
//! invariant violation is saved under `fuzz/crashes/<target>/`.
//!
//! Crashes that kill the process (a stack overflow, an abort) cannot be caught in-process: the
//! input about to run is written to `--last-input` first, and the supervisor (`main`) saves it
//! when its worker dies.

use crate::mutator::{self, MAX_INPUT, Pool};
use crate::rng::Rng;
use crate::targets::{KNOWN_OPEN, Target, fuzz_dir};
use std::collections::HashSet;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The most inputs the in-memory corpus grows to per target.
const MAX_CORPUS: usize = 4096;
/// An input slower than this is saved as `slow-*`.
const SLOW: Duration = Duration::from_secs(2);

static PANICS: AtomicU64 = AtomicU64::new(0);
static LAST_PANIC: Mutex<String> = Mutex::new(String::new());
/// How many `run_one` calls are running (a panic on another thread meanwhile is most likely
/// on a thread of the code under test).
static ACTIVE: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static IN_TARGET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Records panics of the code under test (message and place) instead of printing them: the
/// fuzzer reports them. Counted also when the code under test catches them itself (the CEL
/// sandbox does). Any other panic (a test's assertion) goes to the previous hook.
pub fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !IN_TARGET.with(std::cell::Cell::get) && ACTIVE.load(Ordering::SeqCst) == 0 {
            previous(info);
            return;
        }
        PANICS.fetch_add(1, Ordering::SeqCst);
        let place = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        if let Ok(mut last) = LAST_PANIC.lock() {
            *last = format!("{place}: {msg}");
        }
    }));
}

/// What one input did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Ran; the behaviour signature.
    Ok(String),
    /// A panic escaped the target.
    Panic(String),
    /// The target reported a broken invariant.
    Invariant(String),
    /// The target reported a broken invariant that is a known open finding
    /// ([`crate::targets::KNOWN_OPEN`]).
    Known(String),
}

/// Runs one input, catching panics.
pub fn run_one(target: Target, data: &[u8]) -> Verdict {
    ACTIVE.fetch_add(1, Ordering::SeqCst);
    IN_TARGET.with(|c| c.set(true));
    let result = catch_unwind(AssertUnwindSafe(|| target.run(data)));
    IN_TARGET.with(|c| c.set(false));
    ACTIVE.fetch_sub(1, Ordering::SeqCst);
    match result {
        Ok(Ok(sig)) => Verdict::Ok(sig),
        Ok(Err(msg)) if KNOWN_OPEN.iter().any(|k| msg.starts_with(k)) => Verdict::Known(msg),
        Ok(Err(msg)) => Verdict::Invariant(msg),
        Err(_) => Verdict::Panic(LAST_PANIC.lock().map(|s| s.clone()).unwrap_or_default()),
    }
}

/// Every file under `dir` (recursively), sorted.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The seeds of a target: its corpus and every regression input (of any target).
pub fn seeds(target: Target) -> Vec<Vec<u8>> {
    let dir = fuzz_dir();
    let mut files = files_under(&dir.join("corpus").join(target.name()));
    files.extend(files_under(&dir.join("regressions")));
    files
        .iter()
        .filter_map(|f| std::fs::read(f).ok())
        .filter(|d| d.len() <= MAX_INPUT)
        .collect()
}

/// A stable name for an input (FNV-1a).
pub fn digest(data: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Saves a finding; returns its path.
pub fn save_crash(target: Target, kind: &str, data: &[u8]) -> Option<PathBuf> {
    let dir = fuzz_dir().join("crashes").join(target.name());
    std::fs::create_dir_all(&dir).ok()?;
    let path = dir.join(format!("{kind}-{}", digest(data)));
    std::fs::write(&path, data).ok()?;
    Some(path)
}

#[derive(Debug, Default)]
pub struct Stats {
    pub execs: u64,
    pub elapsed: Duration,
    pub seeds: usize,
    pub corpus: usize,
    pub signatures: usize,
    /// Distinct findings: (kind, message, saved input).
    pub findings: Vec<(String, String, Option<PathBuf>)>,
    /// Panics the code under test caught itself (not findings), by message.
    pub caught_inside: Vec<String>,
    pub slowest: Duration,
    /// Known open findings hit: (message, saved input), one per kind.
    pub known: Vec<(String, Option<PathBuf>)>,
    pub known_hits: u64,
}

pub struct Options {
    pub seconds: f64,
    pub seed: u64,
    /// Where the input about to run is written (for the supervisor), if anywhere.
    pub last_input: Option<PathBuf>,
    /// Count known open findings as findings.
    pub strict: bool,
}

/// Fuzzes one target for the given time.
pub fn fuzz(target: Target, opts: &Options) -> Stats {
    let seeds = seeds(target);
    let pool = Pool::new(&seeds);
    let mut rng = Rng::new(opts.seed);
    let mut corpus: Vec<Vec<u8>> = seeds.clone();
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    let last = opts.last_input.as_ref().and_then(|p| File::create(p).ok());
    let mut stats = Stats {
        seeds: seeds.len(),
        ..Stats::default()
    };
    let mut sigs: HashSet<String> = HashSet::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut caught: HashSet<String> = HashSet::new();
    let start = Instant::now();
    let limit = Duration::from_secs_f64(opts.seconds.max(0.0));
    let mut next_report = Duration::from_secs(30);
    // The seeds run first, as they are; then made inputs.
    let mut pending: Vec<Vec<u8>> = seeds.into_iter().rev().collect();
    loop {
        let elapsed = start.elapsed();
        if elapsed >= limit && pending.is_empty() {
            break;
        }
        if elapsed >= next_report {
            eprintln!(
                "  {}: {:.0}s {} execs, corpus {}, {} findings",
                target.name(),
                elapsed.as_secs_f64(),
                stats.execs,
                corpus.len(),
                stats.findings.len()
            );
            next_report += Duration::from_secs(30);
        }
        let input = match pending.pop() {
            Some(i) => i,
            None => make_input(&mut rng, &pool, target, &corpus),
        };
        if let Some(f) = &last {
            let mut buf = (input.len() as u64).to_le_bytes().to_vec();
            buf.extend_from_slice(&input);
            let _ = f.write_all_at(&buf, 0);
        }
        let panics_before = PANICS.load(Ordering::SeqCst);
        let t0 = Instant::now();
        let verdict = run_one(target, &input);
        let took = t0.elapsed();
        stats.execs += 1;
        stats.slowest = stats.slowest.max(took);
        if took > SLOW {
            let path = save_crash(target, "slow", &input);
            let key = format!("slow:{}", took.as_secs());
            if seen.insert(key) {
                stats.findings.push((
                    "slow".into(),
                    format!("{:.1}s for {} bytes", took.as_secs_f64(), input.len()),
                    path,
                ));
            }
        }
        match verdict {
            Verdict::Ok(sig) => {
                if PANICS.load(Ordering::SeqCst) != panics_before {
                    let msg = LAST_PANIC.lock().map(|s| s.clone()).unwrap_or_default();
                    if caught.insert(msg.clone()) {
                        save_crash(target, "caught", &input);
                        stats.caught_inside.push(msg);
                    }
                }
                if sigs.insert(sig) {
                    if corpus.len() < MAX_CORPUS {
                        corpus.push(input);
                    } else {
                        // Full: the new input replaces a made one (the seeds stay).
                        let i = stats.seeds + rng.below(MAX_CORPUS - stats.seeds.min(MAX_CORPUS));
                        if let Some(slot) = corpus.get_mut(i) {
                            *slot = input;
                        }
                    }
                }
            }
            Verdict::Known(msg) if !opts.strict => {
                stats.known_hits += 1;
                let kind = KNOWN_OPEN
                    .iter()
                    .find(|k| msg.starts_with(*k))
                    .copied()
                    .unwrap_or_default();
                if !stats.known.iter().any(|(m, _)| m.starts_with(kind)) {
                    let path = save_crash(target, "known", &input);
                    stats.known.push((msg, path));
                }
            }
            Verdict::Panic(_) | Verdict::Invariant(_) | Verdict::Known(_) => {
                let (kind, msg) = match verdict {
                    Verdict::Panic(m) => ("panic", m),
                    Verdict::Invariant(m) | Verdict::Known(m) | Verdict::Ok(m) => ("invariant", m),
                };
                // One saved input per distinct message (its first line, digits aside).
                let key: String = msg
                    .lines()
                    .next()
                    .unwrap_or("")
                    .chars()
                    .filter(|c| !c.is_ascii_digit())
                    .take(160)
                    .collect();
                if seen.insert(format!("{kind}:{key}")) {
                    let path = save_crash(target, kind, &input);
                    eprintln!(
                        "  {}: {kind}: {msg} (saved to {})",
                        target.name(),
                        path.as_ref()
                            .map(|p| p.display().to_string())
                            .unwrap_or_default()
                    );
                    stats.findings.push((kind.into(), msg, path));
                }
            }
        }
    }
    stats.elapsed = start.elapsed();
    stats.corpus = corpus.len();
    stats.signatures = sigs.len();
    stats
}

fn make_input(rng: &mut Rng, pool: &Pool, target: Target, corpus: &[Vec<u8>]) -> Vec<u8> {
    let base = rng.pick(corpus).cloned().unwrap_or_default();
    match rng.below(10) {
        0..=3 => {
            let mut d = base;
            mutator::mutate_bytes(rng, &mut d, corpus);
            d
        }
        4..=6 => mutator::mutate_structured(rng, pool, target, &base).unwrap_or_else(|| {
            let mut d = base;
            mutator::mutate_bytes(rng, &mut d, corpus);
            d
        }),
        _ => mutator::generate(rng, pool, target),
    }
}

/// One line of results.
pub fn summary(target: Target, s: &Stats) -> String {
    let secs = s.elapsed.as_secs_f64().max(1e-9);
    format!(
        "{:<8} {:>10} execs {:>8.1} s {:>9.0} execs/s  seeds {:>3}  corpus {:>5}  signatures {:>5}  slowest {:>6.1} ms  findings {}",
        target.name(),
        s.execs,
        secs,
        s.execs as f64 / secs,
        s.seeds,
        s.corpus,
        s.signatures,
        s.slowest.as_secs_f64() * 1e3,
        s.findings.len()
    )
}

/// Writes the results to stdout.
pub fn report(target: Target, s: &Stats) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{}", summary(target, s));
    for (kind, msg, path) in &s.findings {
        let _ = writeln!(
            out,
            "  {kind}: {msg}\n    input: {}",
            path.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
        // Short inputs are printed too, so a CI log alone reproduces them.
        if let Some(data) = path.as_ref().and_then(|p| std::fs::read(p).ok())
            && data.len() <= 2048
        {
            let _ = writeln!(out, "    bytes: {:?}", String::from_utf8_lossy(&data));
        }
    }
    for (msg, path) in &s.known {
        let short: String = msg.chars().take(200).collect();
        let _ = writeln!(
            out,
            "  known open finding ({} hits in all; FUZZING.md): {short}\n    input: {}",
            s.known_hits,
            path.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        );
    }
    for msg in &s.caught_inside {
        let _ = writeln!(out, "  (panic caught inside the code under test: {msg})");
    }
}
