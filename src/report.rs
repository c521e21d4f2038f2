//! What `fluxadmit check` prints: the findings as text for people (grouped by cluster and
//! file), as JSON for scripts, or as SARIF 2.1.0 for GitHub code scanning; and the exit code.

use crate::check::{CheckFinding, Report};
use crate::policy::PolicySet;
use crate::rules::Level;
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

/// The output format of `fluxadmit check`.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum CheckFormat {
    /// Findings grouped by cluster and file, then a summary line.
    Text,
    /// One JSON object: counts, findings and notes.
    Json,
    /// SARIF 2.1.0, for GitHub code scanning (`github/codeql-action/upload-sarif`).
    Sarif,
}

/// Writes the report in the format asked for. `color` adds ANSI colours to the text format
/// (see [`stdout_color`]); the other formats ignore it.
pub fn write_report(
    out: &mut impl Write,
    report: &Report,
    policies: &PolicySet,
    format: CheckFormat,
    color: bool,
) -> std::io::Result<()> {
    match format {
        CheckFormat::Text => write_text(out, report, color),
        CheckFormat::Json => write_json(out, &json_report(report)),
        CheckFormat::Sarif => write_json(out, &sarif(report, policies)),
    }
}

/// 1 when the report holds errors, or warnings and `strict`; else 0.
pub fn exit_code(report: &Report, strict: bool) -> u8 {
    u8::from(report.errors() > 0 || (strict && report.warnings() > 0))
}

/// Whether the text written to stdout should be coloured: stdout is a terminal and `NO_COLOR`
/// is unset (as for the logs on stderr).
pub fn stdout_color() -> bool {
    use std::io::IsTerminal as _;
    color_wanted(
        std::io::stdout().is_terminal(),
        std::env::var_os("NO_COLOR").is_some(),
    )
}

fn color_wanted(terminal: bool, no_color: bool) -> bool {
    terminal && !no_color
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Error => "error",
        Level::Warning => "warning",
    }
}

const BOLD: &str = "\x1b[1m";
const RED: &str = "\x1b[31m";
const YELLOW: &str = "\x1b[33m";
const RESET: &str = "\x1b[0m";

/// Findings by world (cluster), then file in path order, then line; equal keys keep the order
/// the engine reported them in.
fn sorted(report: &Report) -> Vec<&CheckFinding> {
    let mut findings: Vec<&CheckFinding> = report.findings.iter().collect();
    findings.sort_by(|a, b| {
        a.world
            .cmp(&b.world)
            .then_with(|| Path::new(&a.file).cmp(Path::new(&b.file)))
            .then_with(|| a.line.cmp(&b.line))
    });
    findings
}

fn write_text(out: &mut impl Write, report: &Report, color: bool) -> std::io::Result<()> {
    let (bold, reset) = if color { (BOLD, RESET) } else { ("", "") };
    let by_world = report.findings.iter().any(|f| f.world.is_some());
    let mut world: Option<Option<&str>> = None;
    let mut file: Option<&str> = None;
    for f in sorted(report) {
        if by_world && world != Some(f.world.as_deref()) {
            if world.is_some() {
                writeln!(out)?;
            }
            world = Some(f.world.as_deref());
            file = None;
            if let Some(w) = &f.world {
                writeln!(out, "{bold}# {w}{reset}")?;
            }
        }
        if file != Some(f.file.as_str()) {
            file = Some(f.file.as_str());
            writeln!(out, "{bold}{}{reset}", f.file)?;
        }
        write!(out, "  ")?;
        if let Some(line) = f.line {
            write!(out, "{line}: ")?;
        }
        let level = level_name(f.level);
        if color {
            let paint = match f.level {
                Level::Error => RED,
                Level::Warning => YELLOW,
            };
            write!(out, "{} {paint}{level}{RESET}: {}", f.object, f.text)?;
        } else {
            write!(out, "{} {level}: {}", f.object, f.text)?;
        }
        if let Some(by) = &f.applied_by {
            write!(out, " (applied by {by})")?;
        }
        writeln!(out)?;
    }
    for n in &report.notes {
        writeln!(out, "note: {n}")?;
    }
    writeln!(
        out,
        "checked {}: {}, {}",
        count(report.objects, "object"),
        count(report.errors(), "error"),
        count(report.warnings(), "warning")
    )
}

/// `1 error`, `2 errors`.
fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn write_json(out: &mut impl Write, value: &Value) -> std::io::Result<()> {
    serde_json::to_writer_pretty(&mut *out, value)?;
    writeln!(out)
}

fn json_report(report: &Report) -> Value {
    let findings: Vec<Value> = report
        .findings
        .iter()
        .map(|f| {
            json!({
                "file": f.file,
                "line": f.line,
                "object": f.object,
                "appliedBy": f.applied_by,
                "world": f.world,
                "policy": f.policy,
                "rule": f.rule,
                "level": level_name(f.level),
                "message": f.text,
            })
        })
        .collect();
    json!({
        "objects": report.objects,
        "errors": report.errors(),
        "warnings": report.warnings(),
        "findings": findings,
        "notes": report.notes,
    })
}

pub(crate) const SARIF_SCHEMA: &str = "https://json.schemastore.org/sarif-2.1.0.json";

/// The report as a SARIF 2.1.0 log with one run. Every rule of the policy set is a
/// reportingDescriptor (id `policy/rule`), then any rule only the findings name (the engine's
/// own, e.g. `fluxadmit/mutate`); each result points at its rule by id and index.
fn sarif(report: &Report, policies: &PolicySet) -> Value {
    let mut rules: Vec<Value> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    for p in policies.policies.iter() {
        for r in &p.rules {
            let id = format!("{}/{}", p.name, r.name);
            if index.contains_key(&id) {
                continue;
            }
            index.insert(id.clone(), rules.len());
            rules.push(json!({
                "id": id,
                "name": &*r.name,
                "shortDescription": {
                    "text": format!("{} rule {} of policy {}", r.kind_name(), r.name, p.name),
                },
                "properties": {"policy": &*p.name, "source": p.source},
            }));
        }
    }
    let mut results = Vec::with_capacity(report.findings.len());
    for f in &report.findings {
        let id = format!("{}/{}", f.policy, f.rule);
        let rule_index = match index.get(&id) {
            Some(&i) => i,
            None => {
                let i = rules.len();
                index.insert(id.clone(), i);
                rules.push(json!({
                    "id": id,
                    "name": f.rule,
                    "shortDescription": {"text": format!("rule {} of {}", f.rule, f.policy)},
                    "properties": {"policy": f.policy},
                }));
                i
            }
        };
        let mut physical = Map::new();
        physical.insert(
            "artifactLocation".into(),
            json!({"uri": artifact_uri(&f.file)}),
        );
        if let Some(line) = f.line.filter(|&l| l >= 1) {
            physical.insert("region".into(), json!({"startLine": line}));
        }
        results.push(json!({
            "ruleId": id,
            "ruleIndex": rule_index,
            "level": level_name(f.level),
            "message": {"text": format!("{}: {}", f.object, f.text)},
            "locations": [{"physicalLocation": physical}],
            "properties": {
                "object": f.object,
                "appliedBy": f.applied_by,
                "world": f.world,
            },
        }));
    }
    let mut run = json!({
        "tool": {"driver": {
            "name": "fluxadmit",
            "version": env!("CARGO_PKG_VERSION"),
            "rules": rules,
        }},
        "results": results,
        "properties": {"objects": report.objects},
    });
    if let Some(home) = option_env!("CARGO_PKG_HOMEPAGE").filter(|h| !h.is_empty())
        && let Some(driver) = run
            .pointer_mut("/tool/driver")
            .and_then(Value::as_object_mut)
    {
        driver.insert("informationUri".into(), json!(home));
    }
    if !report.notes.is_empty()
        && let Some(run) = run.as_object_mut()
    {
        // What could not be read or built: tool notifications of a successful run.
        let notes: Vec<Value> = report
            .notes
            .iter()
            .map(|n| json!({"level": "note", "message": {"text": n}}))
            .collect();
        run.insert(
            "invocations".into(),
            json!([{"executionSuccessful": true, "toolExecutionNotifications": notes}]),
        );
    }
    json!({
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [run],
    })
}

/// A file path as a SARIF artifact URI: forward slashes, no leading `./` (GitHub resolves a
/// relative URI against the repository root), and percent-encoded outside the characters a
/// URI path may hold as they are.
fn artifact_uri(file: &str) -> String {
    let mut path = file.replace('\\', "/");
    while let Some(rest) = path.strip_prefix("./") {
        path = rest.trim_start_matches('/').to_owned();
    }
    let mut uri = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/".contains(&b) {
            uri.push(char::from(b));
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;

    fn finding(
        file: &str,
        line: Option<usize>,
        object: &str,
        (policy, rule): (&str, &str),
        level: Level,
        message: &str,
    ) -> CheckFinding {
        CheckFinding {
            file: file.into(),
            line,
            object: object.into(),
            applied_by: None,
            world: None,
            policy: policy.into(),
            rule: rule.into(),
            level,
            text: format!("{policy}/{rule}: {message}"),
        }
    }

    const DEPENDS: (&str, &str) = ("flux-dependencies", "depends-on");
    const SECRETS: (&str, &str) = ("flux-referenced-secrets", "referenced-secrets");

    /// Findings in the order the engine reports them (document order across files), not the
    /// order the text prints them in.
    fn report() -> Report {
        let mut web = finding(
            "repo/apps/web.yaml",
            Some(1),
            "HelmRelease apps/web",
            DEPENDS,
            Level::Warning,
            "spec.dependsOn[0]: HelmRelease apps/cdn not found",
        );
        web.applied_by = Some("Kustomization flux-system/apps".into());
        Report {
            objects: 4,
            findings: vec![
                web,
                finding(
                    "repo/apps/releases.yaml",
                    Some(9),
                    "HelmRelease apps/worker",
                    SECRETS,
                    Level::Error,
                    "spec.valuesFrom[0]: Secret apps/worker-values not found",
                ),
                finding(
                    "repo/apps/releases.yaml",
                    Some(1),
                    "HelmRelease apps/api",
                    DEPENDS,
                    Level::Error,
                    "spec.dependsOn[0]: dependency cycle: apps/api → apps/worker → apps/api",
                ),
                finding(
                    "./repo/base/built.yaml",
                    None,
                    "Deployment apps/job",
                    ("fluxadmit", "mutate"),
                    Level::Warning,
                    "the mutation patch does not apply",
                ),
            ],
            notes: vec!["no kustomize on PATH: 1 directory not built".into()],
        }
    }

    fn policies() -> PolicySet {
        let text = [
            include_str!("../policies/flux-dependencies.yaml"),
            include_str!("../policies/flux-referenced-secrets.yaml"),
        ]
        .join("\n---\n");
        crate::policy::load::compile_yaml("policies.yaml", &text).unwrap()
    }

    fn render(report: &Report, format: CheckFormat, color: bool) -> String {
        let mut out = Vec::new();
        write_report(&mut out, report, &policies(), format, color).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn text_groups_by_file_in_path_order_and_findings_by_line() {
        let out = render(&report(), CheckFormat::Text, false);
        assert_eq!(
            out,
            "./repo/base/built.yaml\n\
             \x20 Deployment apps/job warning: fluxadmit/mutate: the mutation patch does not apply\n\
             repo/apps/releases.yaml\n\
             \x20 1: HelmRelease apps/api error: flux-dependencies/depends-on: spec.dependsOn[0]: dependency cycle: apps/api → apps/worker → apps/api\n\
             \x20 9: HelmRelease apps/worker error: flux-referenced-secrets/referenced-secrets: spec.valuesFrom[0]: Secret apps/worker-values not found\n\
             repo/apps/web.yaml\n\
             \x20 1: HelmRelease apps/web warning: flux-dependencies/depends-on: spec.dependsOn[0]: HelmRelease apps/cdn not found (applied by Kustomization flux-system/apps)\n\
             note: no kustomize on PATH: 1 directory not built\n\
             checked 4 objects: 2 errors, 2 warnings\n"
        );
        assert!(!out.contains('\x1b'), "{out}");
    }

    #[test]
    fn text_keeps_the_findings_of_one_line_in_engine_order() {
        let mut r = report();
        r.findings.retain(|f| f.file == "repo/apps/releases.yaml");
        let mut second = r.findings[1].clone();
        second.text = "flux-dependencies/depends-on: spec.dependsOn[1]: later".into();
        r.findings.push(second);
        let out = render(&r, CheckFormat::Text, false);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[1].contains("dependsOn[0]"), "{out}");
        assert!(lines[2].contains("dependsOn[1]"), "{out}");
        assert!(lines[3].starts_with("  9: "), "{out}");
    }

    #[test]
    fn text_groups_by_world_first() {
        let mut r = report();
        r.findings.truncate(3);
        r.notes.clear();
        r.findings[0].world = Some("clusters/staging".into());
        r.findings[1].world = Some("clusters/production".into());
        r.findings[2].world = Some("clusters/staging".into());
        let out = render(&r, CheckFormat::Text, false);
        assert_eq!(
            out,
            "# clusters/production\n\
             repo/apps/releases.yaml\n\
             \x20 9: HelmRelease apps/worker error: flux-referenced-secrets/referenced-secrets: spec.valuesFrom[0]: Secret apps/worker-values not found\n\
             \n\
             # clusters/staging\n\
             repo/apps/releases.yaml\n\
             \x20 1: HelmRelease apps/api error: flux-dependencies/depends-on: spec.dependsOn[0]: dependency cycle: apps/api → apps/worker → apps/api\n\
             repo/apps/web.yaml\n\
             \x20 1: HelmRelease apps/web warning: flux-dependencies/depends-on: spec.dependsOn[0]: HelmRelease apps/cdn not found (applied by Kustomization flux-system/apps)\n\
             checked 4 objects: 2 errors, 1 warning\n"
        );
    }

    #[test]
    fn text_summary_counts_in_the_singular() {
        let r = Report {
            objects: 1,
            findings: vec![finding(
                "a.yaml",
                Some(3),
                "HelmRelease apps/a",
                DEPENDS,
                Level::Error,
                "x",
            )],
            notes: Vec::new(),
        };
        let out = render(&r, CheckFormat::Text, false);
        assert!(
            out.ends_with("\nchecked 1 object: 1 error, 0 warnings\n"),
            "{out}"
        );
        let empty = render(&Report::default(), CheckFormat::Text, false);
        assert_eq!(empty, "checked 0 objects: 0 errors, 0 warnings\n");
    }

    #[test]
    fn text_colours_the_level_and_the_file_only_when_asked() {
        let out = render(&report(), CheckFormat::Text, true);
        assert!(out.contains("\x1b[1mrepo/apps/web.yaml\x1b[0m\n"), "{out}");
        assert!(
            out.contains("1: HelmRelease apps/api \x1b[31merror\x1b[0m: flux-dependencies/"),
            "{out}"
        );
        assert!(
            out.contains("HelmRelease apps/web \x1b[33mwarning\x1b[0m: flux-dependencies/"),
            "{out}"
        );
        // The summary and the notes stay plain.
        assert!(
            out.ends_with("note: no kustomize on PATH: 1 directory not built\nchecked 4 objects: 2 errors, 2 warnings\n"),
            "{out}"
        );
    }

    #[test]
    fn colour_needs_a_terminal_and_no_no_color() {
        assert!(color_wanted(true, false));
        assert!(!color_wanted(true, true));
        assert!(!color_wanted(false, false));
    }

    #[test]
    fn json_has_counts_findings_and_notes() {
        let out = render(&report(), CheckFormat::Json, false);
        assert!(out.ends_with('\n'));
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["objects"], 4);
        assert_eq!(v["errors"], 2);
        assert_eq!(v["warnings"], 2);
        assert_eq!(
            v["notes"],
            json!(["no kustomize on PATH: 1 directory not built"])
        );
        let findings = v["findings"].as_array().unwrap();
        assert_eq!(findings.len(), 4);
        assert_eq!(
            findings[0],
            json!({
                "file": "repo/apps/web.yaml",
                "line": 1,
                "object": "HelmRelease apps/web",
                "appliedBy": "Kustomization flux-system/apps",
                "world": null,
                "policy": "flux-dependencies",
                "rule": "depends-on",
                "level": "warning",
                "message": "flux-dependencies/depends-on: spec.dependsOn[0]: HelmRelease apps/cdn not found",
            })
        );
        assert_eq!(findings[1]["level"], "error");
        assert_eq!(findings[3]["line"], Value::Null);
        assert_eq!(findings[3]["appliedBy"], Value::Null);
    }

    #[test]
    fn sarif_has_the_fields_code_scanning_requires() {
        let out = render(&report(), CheckFormat::Sarif, false);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["version"], "2.1.0");
        assert_eq!(v["$schema"], SARIF_SCHEMA);
        let runs = v["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 1);
        let driver = &runs[0]["tool"]["driver"];
        assert_eq!(driver["name"], "fluxadmit");
        assert_eq!(driver["version"], env!("CARGO_PKG_VERSION"));
        let results = runs[0]["results"].as_array().unwrap();
        assert_eq!(results.len(), 4);
        for r in results {
            assert!(r["ruleId"].is_string(), "{r}");
            assert!(["error", "warning"].contains(&r["level"].as_str().unwrap()));
            assert!(r["message"]["text"].is_string(), "{r}");
            let loc = &r["locations"][0]["physicalLocation"];
            assert!(loc["artifactLocation"]["uri"].is_string(), "{r}");
        }
        let api = &results[2];
        assert_eq!(api["ruleId"], "flux-dependencies/depends-on");
        assert_eq!(api["level"], "error");
        assert_eq!(
            api["message"]["text"],
            "HelmRelease apps/api: flux-dependencies/depends-on: spec.dependsOn[0]: dependency cycle: apps/api → apps/worker → apps/api"
        );
        let loc = &api["locations"][0]["physicalLocation"];
        assert_eq!(loc["artifactLocation"]["uri"], "repo/apps/releases.yaml");
        assert_eq!(loc["region"]["startLine"], 1);
        assert_eq!(api["properties"]["object"], "HelmRelease apps/api");
        assert_eq!(
            results[0]["properties"]["appliedBy"],
            "Kustomization flux-system/apps"
        );
        // No line: no region (startLine must be at least 1); the "./" is dropped.
        let built = &results[3]["locations"][0]["physicalLocation"];
        assert_eq!(built["artifactLocation"]["uri"], "repo/base/built.yaml");
        assert!(built.get("region").is_none(), "{built}");
        // The notes are the run's tool notifications.
        assert_eq!(
            runs[0]["invocations"][0]["toolExecutionNotifications"][0]["message"]["text"],
            "no kustomize on PATH: 1 directory not built"
        );
    }

    #[test]
    fn sarif_rules_cover_the_policy_set_and_every_result_points_at_its_rule() {
        let out = render(&report(), CheckFormat::Sarif, false);
        let v: Value = serde_json::from_str(&out).unwrap();
        let rules = v["runs"][0]["tool"]["driver"]["rules"].as_array().unwrap();
        let ids: Vec<&str> = rules.iter().map(|r| r["id"].as_str().unwrap()).collect();
        // Every rule of the set, even one nothing was found for, then the engine's own.
        assert_eq!(
            ids,
            [
                "flux-dependencies/depends-on",
                "flux-referenced-secrets/referenced-secrets",
                "fluxadmit/mutate"
            ]
        );
        for r in rules {
            assert!(r["name"].is_string(), "{r}");
            assert!(r["shortDescription"]["text"].is_string(), "{r}");
        }
        for result in v["runs"][0]["results"].as_array().unwrap() {
            let i = usize::try_from(result["ruleIndex"].as_u64().unwrap()).unwrap();
            assert_eq!(rules[i]["id"], result["ruleId"], "{result}");
        }
    }

    #[test]
    fn sarif_of_a_clean_run_lists_the_rules_and_no_results() {
        let out = render(&Report::default(), CheckFormat::Sarif, false);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["runs"][0]["results"], json!([]));
        assert_eq!(
            v["runs"][0]["tool"]["driver"]["rules"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        assert!(v["runs"][0].get("invocations").is_none());
    }

    #[test]
    fn artifact_uris_are_relative_with_forward_slashes_and_encoded() {
        assert_eq!(artifact_uri("./apps/web.yaml"), "apps/web.yaml");
        assert_eq!(artifact_uri(".\\apps\\web.yaml"), "apps/web.yaml");
        assert_eq!(
            artifact_uri("apps/my app #1.yaml"),
            "apps/my%20app%20%231.yaml"
        );
        assert_eq!(artifact_uri("apps/ü.yaml"), "apps/%C3%BC.yaml");
    }

    #[test]
    fn exit_code_fails_on_errors_and_on_warnings_when_strict() {
        let r = report();
        assert_eq!(exit_code(&r, false), 1);
        let mut warnings_only = report();
        warnings_only.findings.retain(|f| f.level == Level::Warning);
        assert_eq!(exit_code(&warnings_only, false), 0);
        assert_eq!(exit_code(&warnings_only, true), 1);
        assert_eq!(exit_code(&Report::default(), true), 0);
    }
}
