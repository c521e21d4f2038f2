//! `fluxadmit-afl`: the targets under AFL++ (coverage-guided, stable Rust), built with
//! `cargo afl build --release -p fluxadmit-fuzz --features afl --bin fluxadmit-afl`; the
//! target is the first argument. See FUZZING.md.

use fluxadmit_fuzz::targets::{KNOWN_OPEN, Target};

fn main() {
    let name = std::env::args().nth(1).unwrap_or_default();
    let Some(target) = Target::from_name(&name) else {
        eprintln!("usage: fluxadmit-afl <review|policy|state|overlay|cel|check>");
        std::process::exit(2);
    };
    let strict = std::env::var_os("FLUXADMIT_FUZZ_STRICT").is_some();
    // Force the shared fixtures before the fork server starts, so each run does not rebuild them.
    let _ = target.run(b"");
    afl::fuzz!(|data: &[u8]| {
        // An invariant violation is a finding: abort, so AFL++ saves the input as a crash.
        // Known open findings (FUZZING.md) only with FLUXADMIT_FUZZ_STRICT set.
        if let Err(msg) = target.run(data)
            && (strict || !KNOWN_OPEN.iter().any(|k| msg.starts_with(k)))
        {
            eprintln!("invariant: {msg}");
            std::process::abort();
        }
    });
}
