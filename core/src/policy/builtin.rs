//! The built-in (default) policy set: `policies/*.yaml`, compiled into the binary so `serve`,
//! `review` and `check` work from any directory. `--policies builtin` names it beside other
//! files; a `--policies` without it replaces it.
//!
//! [`FILES`] is the one list of these files: `tests/builtin_policies.rs` checks it equals the
//! `*.yaml` files of `policies/` (not `policies/examples/`), so a new default cannot be left out.

use super::PolicyError;
use serde_json::Value;
use std::path::Path;

/// The `--policies` value that stands for the built-in set.
pub const KEYWORD: &str = "builtin";

/// Prefix of the source of a built-in policy: `builtin:flux-dependencies.yaml`.
pub const SOURCE_PREFIX: &str = "builtin:";

/// (file name in `policies/`, its text), sorted by file name.
pub const FILES: &[(&str, &str)] = &[
    (
        "flux-dependencies.yaml",
        include_str!("../../../policies/flux-dependencies.yaml"),
    ),
    (
        "flux-referenced-secrets.yaml",
        include_str!("../../../policies/flux-referenced-secrets.yaml"),
    ),
    (
        "restricted-security-context.yaml",
        include_str!("../../../policies/restricted-security-context.yaml"),
    ),
];

/// The source name of a built-in file: `builtin:<file>`.
pub fn source(file: &str) -> String {
    format!("{SOURCE_PREFIX}{file}")
}

/// Whether a `--policies` value names the built-in set (`builtin`, exactly; `./builtin` is a
/// path).
pub fn is_keyword(p: &Path) -> bool {
    p.as_os_str() == KEYWORD
}

/// Every built-in policy document, as (source, document), sources `builtin:<file>`.
pub fn documents() -> Result<Vec<(String, Value)>, PolicyError> {
    documents_of(FILES)
}

fn documents_of(files: &[(&str, &str)]) -> Result<Vec<(String, Value)>, PolicyError> {
    let mut docs = Vec::new();
    for &(file, text) in files {
        docs.extend(super::load::parse_documents(&source(file), text)?);
    }
    Ok(docs)
}

/// The built-in set, compiled.
pub fn load() -> Result<super::PolicySet, PolicyError> {
    super::load::compile_documents(documents()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_in_a_builtin_file_name_it() {
        let e = documents_of(&[("broken.yaml", "apiVersion: [\n")]).unwrap_err();
        assert_eq!(e.file, "builtin:broken.yaml");
        assert!(
            e.to_string()
                .starts_with("builtin:broken.yaml: document 1: "),
            "{e}"
        );

        let bad = FILES[0].1.replace("missing: Warn", "missing: Maybe");
        let docs = documents_of(&[("flux-dependencies.yaml", &bad)]).unwrap();
        let e = crate::policy::load::compile_documents(docs).unwrap_err();
        assert!(
            e.to_string().starts_with(
                "builtin:flux-dependencies.yaml: policy \"flux-dependencies\": spec.rules[0].dependsOn.missing: "
            ),
            "{e}"
        );
    }

    #[test]
    fn only_the_bare_word_is_the_keyword() {
        assert!(is_keyword(Path::new("builtin")));
        assert!(!is_keyword(Path::new("./builtin")));
        assert!(!is_keyword(Path::new("builtin/")));
        assert!(!is_keyword(Path::new("policies")));
    }
}
