//! TEMPORARY stub, replaced by the real CEL module.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{line}:{column}: {message}")]
pub struct CelError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}
pub fn compile_ready_expr(_src: &str) -> Result<(), CelError> {
    Ok(())
}
#[derive(Debug)]
pub struct Expression {
    src: String,
}
impl Expression {
    pub fn compile(src: &str, _vars: &[&str], _want_bool: bool) -> Result<Expression, CelError> {
        Ok(Expression { src: src.into() })
    }
    pub fn source(&self) -> &str {
        &self.src
    }
    pub fn eval_bool(&self, _vars: &[(&str, &serde_json::Value)]) -> Result<bool, String> {
        Ok(true)
    }
    pub fn eval_string(&self, _vars: &[(&str, &serde_json::Value)]) -> Result<String, String> {
        Ok(String::new())
    }
}
