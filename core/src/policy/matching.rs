//! Compiled match/exclude filters: globs and label selectors are built once at load.

use super::model::{Labels, Match, OperationName};
use crate::policy::FieldError;
use globset::{Glob, GlobSet, GlobSetBuilder};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

/// What a filter looks at, taken from the admission request once.
pub struct MatchInput<'a> {
    pub group: &'a str,
    pub kind: &'a str,
    pub namespace: &'a str,
    pub name: &'a str,
    pub operation: OperationName,
    pub labels: Option<&'a serde_json::Map<String, serde_json::Value>>,
    pub namespace_labels: Option<&'a Labels>,
    pub chart: Option<&'a str>,
}

#[derive(Debug)]
pub struct Matcher {
    resources: Vec<(Vec<String>, Vec<String>)>,
    namespaces: Option<GlobSet>,
    names: Option<GlobSet>,
    charts: Option<GlobSet>,
    namespace_selector: Option<Selector>,
    object_selector: Option<Selector>,
    operations: Vec<OperationName>,
}

/// A compiled Kubernetes label selector.
#[derive(Debug)]
pub struct Selector {
    match_labels: Vec<(String, String)>,
    exprs: Vec<(String, SelOp, Vec<String>)>,
}

#[derive(Debug, Clone, Copy)]
enum SelOp {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// Builds a glob set; `field` names the place in the policy for the error.
pub fn globs(patterns: &[String], field: &str) -> Result<Option<GlobSet>, FieldError> {
    if patterns.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for (i, p) in patterns.iter().enumerate() {
        let g = Glob::new(p).map_err(|e| {
            FieldError::new(format!("{field}[{i}]"), format!("bad glob {p:?}: {e}"))
        })?;
        b.add(g);
    }
    b.build()
        .map(Some)
        .map_err(|e| FieldError::new(field.to_owned(), e.to_string()))
}

impl Selector {
    pub fn compile(sel: &LabelSelector, field: &str) -> Result<Selector, FieldError> {
        let match_labels = sel
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut exprs = Vec::new();
        for (i, e) in sel.match_expressions.iter().flatten().enumerate() {
            let op = match e.operator.as_str() {
                "In" => SelOp::In,
                "NotIn" => SelOp::NotIn,
                "Exists" => SelOp::Exists,
                "DoesNotExist" => SelOp::DoesNotExist,
                other => {
                    return Err(FieldError::new(
                        format!("{field}.matchExpressions[{i}].operator"),
                        format!(
                            "unknown operator {other:?}; use In, NotIn, Exists or DoesNotExist"
                        ),
                    ));
                }
            };
            let values = e.values.clone().unwrap_or_default();
            if matches!(op, SelOp::In | SelOp::NotIn) && values.is_empty() {
                return Err(FieldError::new(
                    format!("{field}.matchExpressions[{i}].values"),
                    "In and NotIn need at least one value",
                ));
            }
            exprs.push((e.key.clone(), op, values));
        }
        Ok(Selector {
            match_labels,
            exprs,
        })
    }

    pub fn matches<'v>(&self, get: impl Fn(&str) -> Option<&'v str>) -> bool {
        self.match_labels
            .iter()
            .all(|(k, v)| get(k) == Some(v.as_str()))
            && self.exprs.iter().all(|(k, op, vals)| {
                let got = get(k);
                match op {
                    SelOp::In => got.is_some_and(|g| vals.iter().any(|v| v == g)),
                    SelOp::NotIn => got.is_none_or(|g| vals.iter().all(|v| v != g)),
                    SelOp::Exists => got.is_some(),
                    SelOp::DoesNotExist => got.is_none(),
                }
            })
    }
}

impl Matcher {
    pub fn compile(m: &Match, field: &str) -> Result<Matcher, FieldError> {
        Ok(Matcher {
            resources: m
                .resources
                .iter()
                .map(|r| (r.api_groups.clone(), r.kinds.clone()))
                .collect(),
            namespaces: globs(&m.namespaces, &format!("{field}.namespaces"))?,
            names: globs(&m.names, &format!("{field}.names"))?,
            charts: globs(&m.charts, &format!("{field}.charts"))?,
            namespace_selector: m
                .namespace_selector
                .as_ref()
                .map(|s| Selector::compile(s, &format!("{field}.namespaceSelector")))
                .transpose()?,
            object_selector: m
                .object_selector
                .as_ref()
                .map(|s| Selector::compile(s, &format!("{field}.objectSelector")))
                .transpose()?,
            operations: m.operations.clone(),
        })
    }

    /// Whether this request is selected. `default_ops` applies when `operations` is empty.
    pub fn matches(&self, input: &MatchInput<'_>, default_ops: &[OperationName]) -> bool {
        let ops = if self.operations.is_empty() {
            default_ops
        } else {
            &self.operations
        };
        if !ops.is_empty() && !ops.contains(&input.operation) {
            return false;
        }
        if !self.resources.is_empty()
            && !self.resources.iter().any(|(groups, kinds)| {
                (groups.is_empty() || groups.iter().any(|g| g == "*" || g == input.group))
                    && (kinds.is_empty() || kinds.iter().any(|k| k == "*" || k == input.kind))
            })
        {
            return false;
        }
        if let Some(ns) = &self.namespaces
            && (input.namespace.is_empty() || !ns.is_match(input.namespace))
        {
            return false;
        }
        if let Some(names) = &self.names
            && !names.is_match(input.name)
        {
            return false;
        }
        if let Some(charts) = &self.charts
            && !input.chart.is_some_and(|c| charts.is_match(c))
        {
            return false;
        }
        if let Some(sel) = &self.namespace_selector {
            let labels = input.namespace_labels;
            if !sel.matches(|k| labels.and_then(|l| l.get(k)).map(String::as_str)) {
                return false;
            }
        }
        if let Some(sel) = &self.object_selector {
            let labels = input.labels;
            if !sel.matches(|k| labels.and_then(|l| l.get(k)).and_then(|v| v.as_str())) {
                return false;
            }
        }
        true
    }
}
