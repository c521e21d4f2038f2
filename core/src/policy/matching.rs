//! Compiled match/exclude filters: globs and label selectors are built once at load.

use super::model::{Labels, Match, OperationName};
use crate::policy::FieldError;
use globset::{Glob, GlobSet, GlobSetBuilder};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::{Expression, SelectorExt};

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

/// A compiled Kubernetes label selector: kube-rs's own expressions, parsed once at load.
#[derive(Debug)]
pub struct Selector(Vec<Expression>);

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
        let mut exprs: Vec<Expression> = sel
            .match_labels
            .iter()
            .flatten()
            .map(|(k, v)| Expression::Equal(k.clone(), v.clone()))
            .collect();
        for (i, e) in sel.match_expressions.iter().flatten().enumerate() {
            let at = format!("{field}.matchExpressions[{i}]");
            if matches!(e.operator.as_str(), "In" | "NotIn")
                && e.values.as_ref().is_none_or(Vec::is_empty)
            {
                // The API server refuses these too; kube-rs accepts an empty list.
                return Err(FieldError::new(
                    format!("{at}.values"),
                    "In and NotIn need at least one value",
                ));
            }
            let expr = Expression::try_from(e.clone()).map_err(|_| {
                FieldError::new(
                    format!("{at}.operator"),
                    format!(
                        "unknown operator {:?}; use In, NotIn, Exists or DoesNotExist",
                        e.operator
                    ),
                )
            })?;
            exprs.push(expr);
        }
        Ok(Selector(exprs))
    }

    /// Matches a label map held as such (a namespace's labels in the view); a namespace
    /// that is not in the view has no labels.
    pub fn matches_map(&self, labels: Option<&Labels>) -> bool {
        static NONE: Labels = Labels::new();
        let labels = labels.unwrap_or(&NONE);
        self.0.iter().all(|e| e.matches(labels))
    }

    /// Matches the labels of the object under review where they are, in its JSON (no copy
    /// into a map per request). Same semantics as kube-rs's [`SelectorExt::matches`].
    pub fn matches_json(
        &self,
        labels: Option<&serde_json::Map<String, serde_json::Value>>,
    ) -> bool {
        let get = |k: &str| labels.and_then(|l| l.get(k)).and_then(|v| v.as_str());
        self.0.iter().all(|e| match e {
            Expression::In(k, vals) => get(k).is_some_and(|g| vals.contains(g)),
            Expression::NotIn(k, vals) => get(k).is_none_or(|g| !vals.contains(g)),
            Expression::Equal(k, v) => get(k) == Some(v.as_str()),
            Expression::NotEqual(k, v) => get(k) != Some(v.as_str()),
            Expression::Exists(k) => get(k).is_some(),
            Expression::DoesNotExist(k) => get(k).is_none(),
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
        if let Some(sel) = &self.namespace_selector
            && !sel.matches_map(input.namespace_labels)
        {
            return false;
        }
        if let Some(sel) = &self.object_selector
            && !sel.matches_json(input.labels)
        {
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;
    use proptest::prelude::*;

    fn requirement(key: &str, op: &str, values: &[&str]) -> LabelSelectorRequirement {
        LabelSelectorRequirement {
            key: key.into(),
            operator: op.into(),
            values: Some(values.iter().map(|v| v.to_string()).collect()),
        }
    }

    proptest! {
        /// The object's labels are matched in place; a namespace's through kube-rs. Both
        /// must give kube-rs's answer for any selector and any labels.
        #[test]
        fn in_place_matching_is_kube_rs_matching(
            labels in proptest::collection::btree_map("[abc]", "[xyz]", 0..3),
            equal in proptest::collection::btree_map("[abc]", "[xyz]", 0..2),
            reqs in proptest::collection::vec(
                ("[abc]", prop_oneof![Just("In"), Just("NotIn"), Just("Exists"), Just("DoesNotExist")],
                 proptest::collection::vec("[xyz]", 1..3)),
                0..3),
        ) {
            let sel = LabelSelector {
                match_labels: Some(equal),
                match_expressions: Some(reqs.iter().map(|(k, op, vals)| {
                    let vals: Vec<&str> = vals.iter().map(String::as_str).collect();
                    requirement(k, op, &vals)
                }).collect()),
            };
            let kube_rs: kube::core::Selector = sel.clone().try_into().unwrap();
            let want = kube_rs.matches(&labels);
            let compiled = Selector::compile(&sel, "spec.match.objectSelector").unwrap();
            let json: serde_json::Map<String, serde_json::Value> =
                labels.iter().map(|(k, v)| (k.clone(), v.clone().into())).collect();
            prop_assert_eq!(compiled.matches_json(Some(&json)), want);
            prop_assert_eq!(compiled.matches_map(Some(&labels)), want);
        }
    }

    #[test]
    fn bad_requirements_name_their_field() {
        let sel = LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![
                requirement("a", "Exists", &[]),
                requirement("b", "Equals", &["x"]),
            ]),
        };
        let e = Selector::compile(&sel, "spec.match.objectSelector").unwrap_err();
        assert_eq!(
            e.field,
            "spec.match.objectSelector.matchExpressions[1].operator"
        );
        assert!(e.reason.contains("\"Equals\""), "{}", e.reason);
        let sel = LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![requirement("a", "NotIn", &[])]),
        };
        let e = Selector::compile(&sel, "f").unwrap_err();
        assert_eq!(e.field, "f.matchExpressions[0].values");
    }

    #[test]
    fn an_unknown_namespace_has_no_labels() {
        let sel = LabelSelector {
            match_labels: None,
            match_expressions: Some(vec![requirement("team", "DoesNotExist", &[])]),
        };
        let compiled = Selector::compile(&sel, "f").unwrap();
        assert!(compiled.matches_map(None));
        assert!(compiled.matches_json(None));
    }
}
