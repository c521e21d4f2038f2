//! Every corpus and regression input, through every target: none may panic or break an
//! invariant. A crash the fuzzer finds is fixed, and its input added under `fuzz/regressions/`
//! (or `fuzz/corpus/<target>/`), so it stays fixed. Known open findings
//! (`targets::KNOWN_OPEN`, FUZZING.md; none now) are reported but not failed here.

use fluxadmit_fuzz::driver::{self, Verdict, files_under};
use fluxadmit_fuzz::targets::{ALL, fuzz_dir};
use std::path::PathBuf;
use std::sync::OnceLock;

fn inputs() -> Vec<PathBuf> {
    let dir = fuzz_dir();
    let mut files = files_under(&dir.join("corpus"));
    files.extend(files_under(&dir.join("regressions")));
    files
}

/// (file, target, verdict) of every input through every target, computed once (no test may
/// assert while another runs targets: see `driver::install_panic_hook`).
fn replay_all() -> &'static [(PathBuf, &'static str, Verdict)] {
    static ALL_RUNS: OnceLock<Vec<(PathBuf, &'static str, Verdict)>> = OnceLock::new();
    ALL_RUNS.get_or_init(|| {
        driver::install_panic_hook();
        let mut out = Vec::new();
        for f in inputs() {
            let data = std::fs::read(&f).unwrap_or_default();
            for t in ALL {
                out.push((f.clone(), t.name(), driver::run_one(t, &data)));
            }
        }
        out
    })
}

#[test]
fn every_corpus_and_regression_input_passes_every_target() {
    let files = inputs();
    assert!(
        files.len() > 50,
        "the corpus is missing: {} files",
        files.len()
    );
    assert!(
        files
            .iter()
            .any(|f| f.starts_with(fuzz_dir().join("regressions"))),
        "fuzz/regressions is missing"
    );
    let failures: Vec<String> = replay_all()
        .iter()
        .filter(|(_, _, v)| !matches!(v, Verdict::Ok(_) | Verdict::Known(_)))
        .map(|(f, t, v)| format!("{} through {t}: {v:?}", f.display()))
        .collect();
    assert!(failures.is_empty(), "{failures:#?}");
}
