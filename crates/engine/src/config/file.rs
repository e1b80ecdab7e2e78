//! A config file as a layer. The CLI parses YAML (or JSON) into a tree; this checks the tree
//! against the schema, so a misspelt key is an error rather than a setting silently ignored.

use std::collections::BTreeMap;

use serde_json::Value;

use super::settings::{Layer, Origin, Raw};
use super::{ConfigError, REFUSED, SCHEMA};

/// Checks `tree` (the parsed file `name`) and makes it a layer. Every problem is reported at
/// once, one per line.
pub fn file_layer(name: &str, tree: &Value) -> Result<Layer, ConfigError> {
    let mut values = BTreeMap::new();
    let mut problems = Vec::new();
    match tree {
        Value::Object(_) => walk(tree, "", &mut values, &mut problems),
        Value::Null => {} // an empty file sets nothing
        _ => problems.push("the file must be a mapping of sections (source, vault, ...)".into()),
    }
    if !problems.is_empty() {
        return Err(ConfigError(format!("{name}:\n  {}", problems.join("\n  "))));
    }
    Ok(Layer::new(Origin::File(name.to_owned()), move |k| {
        k.path.and_then(|p| values.get(p).cloned())
    }))
}

fn walk(v: &Value, path: &str, out: &mut BTreeMap<&'static str, Raw>, problems: &mut Vec<String>) {
    if let Some((_, why)) = REFUSED.iter().find(|(p, _)| *p == path) {
        problems.push(format!("{path}: {why}"));
        return;
    }
    let key = SCHEMA.iter().find(|k| k.path == Some(path));
    match (v, key) {
        (Value::Object(m), None) => {
            for (k, child) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                walk(child, &p, out, problems);
            }
        }
        (_, None) => problems.push(format!("{path}: not a setting{}", hint(path))),
        (Value::Null, Some(_)) => {}
        (Value::Array(items), Some(k)) => {
            let mut list = Vec::new();
            for i in items {
                match scalar(i) {
                    Some(s) => list.push(s),
                    None => problems.push(format!("{path}: list items must be plain values")),
                }
            }
            if k.list {
                out.insert(k.path.unwrap_or_default(), Raw::Many(list));
            } else {
                problems.push(format!("{path}: must be one value, not a list"));
            }
        }
        (v, Some(k)) => match scalar(v) {
            Some(s) => {
                out.insert(k.path.unwrap_or_default(), Raw::One(s));
            }
            None => problems.push(format!("{path}: must be a plain value")),
        },
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The settings of the section `path` is in, so a typo shows its neighbours.
fn hint(path: &str) -> String {
    let section = path.rsplit_once('.').map_or("", |(s, _)| s);
    let known: Vec<&str> = SCHEMA
        .iter()
        .filter_map(|k| k.path)
        .filter(|p| p.rsplit_once('.').map_or("", |(s, _)| s) == section)
        .collect();
    if known.is_empty() {
        let sections: std::collections::BTreeSet<&str> = SCHEMA
            .iter()
            .filter_map(|k| k.path?.split('.').next())
            .collect();
        let sections: Vec<&str> = sections.into_iter().collect();
        return format!(" (sections: {})", sections.join(", "));
    }
    format!(" (known here: {})", known.join(", "))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::config::{Layer as L, Settings};
    use crate::defaults;
    use serde_json::json;

    fn file(v: Value) -> Result<Layer, ConfigError> {
        file_layer("ecr-vault.yaml", &v)
    }

    #[test]
    fn a_file_sets_what_flags_and_environment_leave_unset() {
        let f = file(json!({
            "source": {"registry": "ecr", "repositories": ["team/**"], "exclude_tags": "*-rc*"},
            "vault": {"uri": "s3://my-vault/prod", "retention_days": 90},
            "keep": {"last": 7},
        }))
        .unwrap();
        let env = L::env_from(|k| (k == "ECR_VAULT_RETENTION_DAYS").then(|| "40".into()));
        let flags = L::flags(vec![("ECR_VAULT_GC_KEEP_LAST", Raw::One("3".into()))]);
        let s = Settings::new(vec![flags, env, f]);
        let v = s.vault(defaults::PARTS_IN_FLIGHT).unwrap();
        assert_eq!(v.uri, "s3://my-vault/prod");
        assert_eq!(v.lock.retention_days, 40, "the environment beats the file");
        assert_eq!(s.gc_options().unwrap().keep_last, 3, "a flag beats both");
        let f = s.filters().unwrap();
        assert!(f.repository("team/a/b") && !f.repository("other"));
        assert!(f.tag("v1") && !f.tag("v1-rc1"));
        assert_eq!(s.var("ECR_VAULT_REGISTRY").as_deref(), Some("ecr"));
    }

    #[test]
    fn errors_name_the_key_in_the_file() {
        let s = Settings::new(vec![
            file(json!({"vault": {"uri": "s3://my-vault", "retention_days": 0}})).unwrap(),
        ]);
        let e = s.vault(4).unwrap_err().to_string();
        assert!(e.contains("vault.retention_days in ecr-vault.yaml"), "{e}");
        let s = Settings::new(vec![file(json!({"vault": {"uri": "https://v"}})).unwrap()]);
        assert!(s.vault_uri().unwrap_err().to_string().contains("vault.uri"));
    }

    #[test]
    fn unknown_refused_and_misshapen_keys_are_all_reported() {
        let e = file(json!({
            "source": {"registy": "ecr", "platforms": ["linux/amd64"],
                       "credentials": {"password": "hunter2"}},
            "vault": {"uri": ["a", "b"]},
            "valt": {},
        }))
        .err()
        .unwrap()
        .to_string();
        for want in [
            "source.registy: not a setting (known here: source.registry",
            "source.platforms: ecr-vault keeps every platform",
            "source.credentials.password: a secret does not belong",
            "vault.uri: must be one value",
        ] {
            assert!(e.contains(want), "{want} missing from {e}");
        }
        assert!(!e.contains("hunter2"), "a secret is never echoed: {e}");
        assert!(file(json!(["a"])).is_err());
        assert!(file(Value::Null).is_ok());
    }
}
