//! Step R1 of the spec (§6.2, items 0-3): the verbatim safetensors header
//! must describe exactly the tensors and metadata of the directory, so the
//! reconstruction is the original file and nothing else.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// What one tensor must look like in the header.
#[derive(Debug, Clone)]
pub struct Expected<'a> {
    /// Name.
    pub name: &'a str,
    /// safetensors dtype name.
    pub dtype: &'a str,
    /// Dimensions.
    pub shape: &'a [u64],
    /// Decoded size in bytes.
    pub decoded_len: u64,
}

/// Walks any JSON value and fails on an object with a repeated key, which
/// `serde_json::Value` would silently collapse.
struct NoDuplicateKeys;

impl<'de> de::Deserialize<'de> for NoDuplicateKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NoDuplicateKeys)
    }
}

impl<'de> Visitor<'de> for NoDuplicateKeys {
    type Value = NoDuplicateKeys;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format!("repeated key {key:?}")));
            }
            map.next_value::<NoDuplicateKeys>()?;
        }
        Ok(NoDuplicateKeys)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<NoDuplicateKeys>()?.is_some() {}
        Ok(NoDuplicateKeys)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(NoDuplicateKeys)
    }
}

fn u64s(v: &Value) -> Option<Vec<u64>> {
    v.as_array()?.iter().map(Value::as_u64).collect()
}

/// Checks `header` against the directory's `tensors` (in directory order)
/// and `metadata`; the error says which item of spec §6.2 fails.
pub fn check(
    header: &str,
    tensors: &[Expected<'_>],
    metadata: &[(&str, &str)],
) -> Result<(), String> {
    serde_json::from_str::<NoDuplicateKeys>(header)
        .map_err(|e| format!("not JSON with unique keys: {e}"))?;
    let root: serde_json::Map<String, Value> =
        serde_json::from_str(header).map_err(|e| format!("top level is not a JSON object: {e}"))?;
    let mut entries: BTreeMap<&str, &Value> = root.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let json_meta = entries.remove("__metadata__");
    let mut offset = 0u64;
    for t in tensors {
        let entry = entries
            .remove(t.name)
            .ok_or_else(|| format!("tensor {:?} is not in the header", t.name))?;
        let dtype = entry.get("dtype").and_then(Value::as_str);
        let shape = entry.get("shape").and_then(u64s);
        let offsets = entry.get("data_offsets").and_then(u64s);
        if dtype != Some(t.dtype) {
            return Err(format!(
                "tensor {:?}: header dtype {dtype:?}, directory {}",
                t.name, t.dtype
            ));
        }
        if shape.as_deref() != Some(t.shape) {
            return Err(format!(
                "tensor {:?}: header shape {shape:?}, directory {:?}",
                t.name, t.shape
            ));
        }
        let end = offset + t.decoded_len;
        if offsets.as_deref() != Some(&[offset, end][..]) {
            return Err(format!(
                "tensor {:?}: header data_offsets {offsets:?}, directory [{offset}, {end}]",
                t.name
            ));
        }
        offset = end;
    }
    if let Some(extra) = entries.keys().next() {
        return Err(format!(
            "the header has tensor {extra:?}, which the directory does not"
        ));
    }
    let mut expected: Vec<(&str, &str)> = metadata.to_vec();
    expected.sort_unstable();
    let mut found: Vec<(&str, &str)> = match json_meta {
        None => Vec::new(),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| {
                v.as_str()
                    .map(|s| (k.as_str(), s))
                    .ok_or_else(|| format!("__metadata__ {k:?} is not a string"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("__metadata__ is not an object".into()),
    };
    found.sort_unstable();
    if found != expected {
        return Err("__metadata__ differs from the metadata map".into());
    }
    Ok(())
}

/// Step R1 for an open file: `Ok` when it has no source header.
pub fn check_file(file: &uw_format::UwFile<'_>) -> Result<(), String> {
    let Some(header) = file.source_header() else {
        return Ok(());
    };
    let tensors: Vec<_> = file.tensors().collect();
    let expected: Vec<Expected<'_>> = tensors
        .iter()
        .map(|t| Expected {
            name: t.name(),
            dtype: t.dtype().name(),
            shape: t.shape(),
            decoded_len: t.decoded_len(),
        })
        .collect();
    let metadata: Vec<(&str, &str)> = file.metadata().collect();
    check(header, &expected, &metadata)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one() -> Vec<Expected<'static>> {
        vec![Expected {
            name: "w",
            dtype: "BF16",
            shape: &[2],
            decoded_len: 4,
        }]
    }

    #[test]
    fn accepts_a_matching_header() {
        let h =
            r#"{"__metadata__":{"a":"b"},"w":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}}  "#;
        assert_eq!(check(h, &one(), &[("a", "b")]), Ok(()));
    }

    #[test]
    fn rejects_each_mismatch() {
        let ok = r#"{"w":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}}"#;
        assert!(check(ok, &one(), &[("a", "b")]).is_err()); // metadata differs
        for bad in [
            r#"{"w":{"dtype":"F16","shape":[2],"data_offsets":[0,4]}}"#,
            r#"{"w":{"dtype":"BF16","shape":[1,2],"data_offsets":[0,4]}}"#,
            r#"{"w":{"dtype":"BF16","shape":[2],"data_offsets":[0,6]}}"#,
            r#"{"w":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]},"x":{"dtype":"U8","shape":[0],"data_offsets":[4,4]}}"#,
            r#"{"w":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]},"w":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}}"#,
            r#"[1]"#,
            r#"{"#,
        ] {
            assert!(check(bad, &one(), &[]).is_err(), "{bad}");
        }
    }
}
