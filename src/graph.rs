//! Temporary: replaced by the full graph module.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjKey {
    pub namespace: String,
    pub name: String,
}
impl std::fmt::Display for ObjKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}
pub fn find_cycle_through<'a, F>(_s: &ObjKey, _d: &[ObjKey], _e: F) -> Option<Vec<ObjKey>>
where
    F: Fn(&ObjKey) -> Option<&'a [ObjKey]>,
{
    None
}
pub fn longest_chain<'a, F>(_s: &ObjKey, _d: &[ObjKey], _e: F) -> usize
where
    F: Fn(&ObjKey) -> Option<&'a [ObjKey]>,
{
    0
}
