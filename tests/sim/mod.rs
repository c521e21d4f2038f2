//! A Flux apply simulator for the integration tests: `flux` models what kustomize-controller,
//! helm-controller, external-secrets and the API server send to the webhooks, `generate` generates
//! repositories (valid ones, and ones with one injected defect).
#![allow(dead_code)]

pub mod flux;
pub mod generate;
