//! `fluxadmit bench scaling`: one HelmRelease review (`Snapshot::review`, no I/O) against the
//! number of matching rules and against the size of the cluster view.

use super::{generate, median_ns};
use fluxadmit_core::cluster::ClusterView;
use fluxadmit_core::engine::Mode;
use fluxadmit_core::state::Snapshot;
use std::time::Duration;

/// One measured configuration.
#[derive(Debug, Clone)]
pub struct ScalingRow {
    pub label: String,
    pub view_objects: usize,
    pub matched: usize,
    pub findings: usize,
    pub median_ns: f64,
}

fn measure(snap: &Snapshot, body: &[u8], label: String, budget: Duration) -> ScalingRow {
    let (matched, findings) = match snap.review(Mode::Validate, body) {
        Ok(a) => (a.outcome.matched, a.outcome.findings.len()),
        Err(_) => (0, 0),
    };
    let median_ns = median_ns(
        || {
            let _ = std::hint::black_box(snap.review(Mode::Validate, std::hint::black_box(body)));
        },
        budget,
    );
    ScalingRow {
        label,
        view_objects: snap.view.len(),
        matched,
        findings,
        median_ns,
    }
}

/// Latency against the number of matching rules (generated policies, one rule each, on a
/// view of `rules_objects`), then against the view size (default policies + examples).
pub fn run(
    rules: &[usize],
    rules_objects: usize,
    views: &[usize],
    budget: Duration,
) -> anyhow::Result<(Vec<ScalingRow>, Vec<ScalingRow>)> {
    let size = generate::ViewSize::of(rules_objects);
    let body = generate::helmrelease_review(&size, "bench-scaling");
    let mut view: ClusterView = generate::view(&size);
    let mut by_rules = Vec::new();
    for &n in rules {
        let snap = Snapshot {
            policies: generate::scaling_policies(n)?,
            view,
        };
        let row = measure(&snap, &body, format!("{n} matching rules"), budget);
        eprintln!("  {}: {:.1} µs", row.label, row.median_ns / 1e3);
        by_rules.push(row);
        view = snap.view;
    }
    drop(view);
    let mut by_view = Vec::new();
    for &objects in views {
        let size = generate::ViewSize::of(objects);
        let body = generate::helmrelease_review(&size, "bench-scaling");
        let snap = Snapshot {
            policies: generate::policies()?,
            view: generate::view(&size),
        };
        let row = measure(&snap, &body, format!("view of {objects} objects"), budget);
        eprintln!("  {}: {:.1} µs", row.label, row.median_ns / 1e3);
        by_view.push(row);
    }
    Ok((by_rules, by_view))
}

/// Both tables.
pub fn markdown(by_rules: &[ScalingRow], by_view: &[ScalingRow]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for (title, rows) in [
        ("HelmRelease review vs matching rules", by_rules),
        (
            "HelmRelease review vs view size (defaults + examples)",
            by_view,
        ),
    ] {
        let _ = writeln!(
            out,
            "{title}:\n\n| case | view objects | policies matched | findings | median µs |\n|---|--:|--:|--:|--:|"
        );
        for r in rows {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {:.1} |",
                r.label,
                r.view_objects,
                r.matched,
                r.findings,
                r.median_ns / 1e3
            );
        }
        out.push('\n');
    }
    out
}
