//! Kubernetes manifests of a project, rendered deterministically: the same project gives the
//! same bytes, so delivery can tell "unchanged" from "changed" by comparing text.
//!
//! The output is YAML written by a small emitter over sorted JSON maps (keys sorted, strings
//! always double-quoted), which keeps it stable across versions of any YAML library.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

/// Everything the manifests depend on.
#[derive(Debug, Clone, PartialEq)]
pub struct ProjectSpec {
    pub project_id: String,
    pub namespace: String,
    pub department: String,
    pub field: String,
    pub site: String,
    pub sla_type: String,
    pub performance_tier: String,
    pub cpu: i64,
    pub ram_gb: i64,
    /// Further ResourceQuota `hard` entries from the catalog, e.g. `pods: "50"`.
    pub extra_quota: BTreeMap<String, String>,
    /// Further namespace labels from the catalog.
    pub labels: BTreeMap<String, String>,
    /// The identity-provider group bound to the `edit` ClusterRole.
    pub group: String,
    /// The project's generation, labelled on every object: what delivered them.
    pub generation: i64,
}

/// The objects of a project: Namespace, ResourceQuota, LimitRange and RoleBinding.
pub fn objects(spec: &ProjectSpec) -> Vec<Value> {
    vec![namespace(spec), resource_quota(spec), limit_range(spec), role_binding(spec)]
}

/// [`objects`] as one multi-document YAML file.
pub fn render(spec: &ProjectSpec) -> String {
    objects(spec).iter().map(to_yaml).collect::<Vec<_>>().join("---\n")
}

fn managed_labels(spec: &ProjectSpec) -> Value {
    json!({
        "app.kubernetes.io/managed-by": "infrahub",
        "infrahub.io/project-id": spec.project_id,
        "infrahub.io/generation": spec.generation.to_string(),
    })
}

fn namespace(spec: &ProjectSpec) -> Value {
    let mut labels: Map<String, Value> =
        spec.labels.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    let generation = spec.generation.to_string();
    for (key, value) in [
        ("app.kubernetes.io/managed-by", "infrahub"),
        ("infrahub.io/project-id", spec.project_id.as_str()),
        ("infrahub.io/generation", generation.as_str()),
        ("infrahub.io/department", spec.department.as_str()),
        ("infrahub.io/field", spec.field.as_str()),
        ("infrahub.io/site", spec.site.as_str()),
        ("infrahub.io/sla", spec.sla_type.as_str()),
        ("infrahub.io/tier", spec.performance_tier.as_str()),
    ] {
        labels.insert(key.to_owned(), Value::String(value.to_owned()));
    }
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": { "name": spec.namespace, "labels": labels },
    })
}

fn resource_quota(spec: &ProjectSpec) -> Value {
    let mut hard: Map<String, Value> =
        spec.extra_quota.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    let cpu = spec.cpu.to_string();
    let memory = format!("{}Gi", spec.ram_gb);
    for (key, value) in [
        ("requests.cpu", &cpu),
        ("limits.cpu", &cpu),
        ("requests.memory", &memory),
        ("limits.memory", &memory),
    ] {
        hard.insert(key.to_owned(), Value::String(value.clone()));
    }
    json!({
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": { "name": "infrahub-quota", "namespace": spec.namespace, "labels": managed_labels(spec) },
        "spec": { "hard": hard },
    })
}

/// Default requests and limits for containers that set none, so the quota admits them.
fn limit_range(spec: &ProjectSpec) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": { "name": "infrahub-defaults", "namespace": spec.namespace, "labels": managed_labels(spec) },
        "spec": { "limits": [{
            "type": "Container",
            "default": { "cpu": "500m", "memory": "512Mi" },
            "defaultRequest": { "cpu": "100m", "memory": "128Mi" },
        }] },
    })
}

fn role_binding(spec: &ProjectSpec) -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": { "name": "infrahub-edit", "namespace": spec.namespace, "labels": managed_labels(spec) },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit" },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": spec.group }],
    })
}

/// YAML for the JSON subset used here: maps (sorted keys), lists, strings (double-quoted
/// JSON strings, which are valid YAML), numbers, booleans and null.
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    write_block(value, 0, &mut out);
    out
}

fn write_block(value: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, item) in map {
                out.push_str(&format!("{pad}{}:", scalar_key(key)));
                write_after_key(item, indent, out);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                out.push_str(&format!("{pad}-"));
                match item {
                    Value::Object(map) if !map.is_empty() => {
                        // The first key shares the dash's line; the rest align under it.
                        let mut lines = String::new();
                        write_block(item, indent + 2, &mut lines);
                        out.push(' ');
                        out.push_str(lines.trim_start());
                    }
                    other => {
                        out.push(' ');
                        out.push_str(&scalar(other));
                        out.push('\n');
                    }
                }
            }
        }
        other => {
            out.push_str(&pad);
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

fn write_after_key(item: &Value, indent: usize, out: &mut String) {
    match item {
        Value::Object(map) if !map.is_empty() => {
            out.push('\n');
            write_block(item, indent + 2, out);
        }
        Value::Array(items) if !items.is_empty() => {
            out.push('\n');
            write_block(item, indent, out);
        }
        other => {
            out.push(' ');
            out.push_str(&scalar(other));
            out.push('\n');
        }
    }
}

/// Keys that are plain identifiers stay bare; anything else is quoted.
fn scalar_key(key: &str) -> String {
    let plain = !key.is_empty()
        && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | '-' | '_'))
        && key.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    if plain { key.to_owned() } else { Value::String(key.to_owned()).to_string() }
}

fn scalar(value: &Value) -> String {
    match value {
        Value::Object(_) => "{}".to_owned(),
        Value::Array(_) => "[]".to_owned(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn payments() -> ProjectSpec {
        ProjectSpec {
            project_id: "0192f0c4-0000-7000-8000-000000000001".to_owned(),
            namespace: "platform-payments".to_owned(),
            department: "platform".to_owned(),
            field: "berlin".to_owned(),
            site: "berlin".to_owned(),
            sla_type: "silver".to_owned(),
            performance_tier: "regular".to_owned(),
            cpu: 8,
            ram_gb: 32,
            extra_quota: BTreeMap::from([("pods".to_owned(), "100".to_owned())]),
            labels: BTreeMap::from([("infrahub.io/backup".to_owned(), "daily".to_owned())]),
            group: "platform-team".to_owned(),
            generation: 3,
        }
    }

    #[test]
    fn renders_the_golden_file() {
        let golden = include_str!("../../tests/golden/platform-payments.yaml");
        assert_eq!(render(&payments()), golden);
    }

    #[test]
    fn rendering_is_deterministic_and_reflects_every_input() {
        let spec = payments();
        assert_eq!(render(&spec), render(&spec.clone()));
        let mut bigger = spec.clone();
        bigger.cpu = 16;
        assert_ne!(render(&spec), render(&bigger));
        let mut later = spec.clone();
        later.generation += 1;
        assert_ne!(render(&spec), render(&later));
        assert!(
            objects(&later)
                .iter()
                .all(|o| o["metadata"]["labels"]["infrahub.io/generation"] == "4")
        );
        assert!(
            render(&bigger).contains("\"requests.cpu\": \"16\"")
                || render(&bigger).contains("requests.cpu: \"16\"")
        );
    }

    #[test]
    fn yaml_emitter_handles_the_shapes_it_is_given() {
        let value =
            json!({ "a": { "b": [1, "x"], "c": {} }, "list": [{ "k": "v", "n": null }], "e": [] });
        let yaml = to_yaml(&value);
        assert_eq!(
            yaml,
            "a:\n  b:\n  - 1\n  - \"x\"\n  c: {}\ne: []\nlist:\n- k: \"v\"\n  n: null\n"
        );
    }
}
