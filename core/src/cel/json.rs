//! JSON values as CEL values, converted directly (no JSON text round trip)
//! and borrowing every string, key included, from the JSON.

use std::collections::HashMap;

use ::cel::common::types::{
    CelBool, CelDouble, CelInt, CelList, CelMap, CelMapKey, CelNull, CelString, CelUInt,
};
use ::cel::common::value::Val;
use serde_json::Value as JsonValue;

/// Deepest JSON accepted; serde_json's parser stops at 128 anyway.
const MAX_JSON_DEPTH: usize = 128;

/// `value` as a CEL value: objects are maps with string keys, integers `int`
/// (or `uint` above `i64::MAX`), other numbers `double`.
pub(super) fn to_val(value: &JsonValue) -> Result<Box<dyn Val + '_>, String> {
    convert(value, 0)
}

fn convert(value: &JsonValue, depth: usize) -> Result<Box<dyn Val + '_>, String> {
    Ok(match value {
        JsonValue::Null => Box::new(CelNull),
        JsonValue::Bool(b) => Box::new(CelBool::from(*b)),
        JsonValue::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Box::new(CelInt::from(i)),
            (None, Some(u)) => Box::new(CelUInt::from(u)),
            (None, None) => Box::new(CelDouble::from(n.as_f64().unwrap_or(f64::NAN))),
        },
        JsonValue::String(s) => Box::new(CelString::from(s.as_str())),
        JsonValue::Array(items) => {
            check_depth(depth)?;
            let items = items
                .iter()
                .map(|item| convert(item, depth + 1))
                .collect::<Result<Vec<_>, _>>()?;
            Box::new(CelList::from(items))
        }
        JsonValue::Object(fields) => {
            check_depth(depth)?;
            let mut map = HashMap::with_capacity(fields.len());
            for (key, field) in fields {
                map.insert(CelMapKey::from(key.as_str()), convert(field, depth + 1)?);
            }
            Box::new(CelMap::from(map))
        }
    })
}

fn check_depth(depth: usize) -> Result<(), String> {
    if depth >= MAX_JSON_DEPTH {
        return Err(format!(
            "JSON value nested deeper than {MAX_JSON_DEPTH} levels"
        ));
    }
    Ok(())
}
