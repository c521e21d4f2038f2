//! TEMPORARY stub: replaced by the overlay module.
#[derive(Clone, Debug)]
pub struct Overlay;
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{path}: {message}")]
pub struct OverlayError { pub path: String, pub message: String }
impl Overlay {
    pub fn compile(_o: &serde_json::Value) -> Result<Overlay, OverlayError> { Ok(Overlay) }
    pub fn apply(&self, _t: &mut serde_json::Value) -> bool { false }
}
