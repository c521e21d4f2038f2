//! TEMPORARY stub: replaced by the Pod Security Standards module.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level { Privileged, Baseline, Restricted }
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version { Latest, V(u32, u32) }
impl std::str::FromStr for Version { type Err = String; fn from_str(s: &str) -> Result<Self, String> { if s == "latest" { Ok(Version::Latest) } else { Err(format!("bad version {s}")) } } }
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation { pub check: &'static str, pub path: String, pub message: String }
pub fn check_pod(_l: Level, _v: Version, _m: Option<&serde_json::Value>, _s: &serde_json::Value, _p: &str, _e: &dyn Fn(&str) -> bool) -> Vec<Violation> { vec![] }
pub fn summarize(_l: Level, _v: Version, _x: &[Violation]) -> String { String::new() }
