//! A small Swagger 2.0 schema checker, enough for Firecracker's spec:
//! `type`, `properties`, `required`, `enum`, `items`, `$ref`,
//! `additionalProperties`, `minimum`/`maximum`, integer `format`s, and
//! string `format`s that are patterns (MMDS address).
//!
//! Objects are closed unless the schema sets `additionalProperties`:
//! Firecracker parses bodies with unknown fields denied, so an undeclared
//! property is an error even though Swagger would allow it.

use serde_json::Value as Json;
use serde_norway::Value as Yaml;

pub struct Spec {
    root: Yaml,
}

impl Spec {
    pub fn load(path: &std::path::Path) -> Self {
        let text = std::fs::read_to_string(path).expect("read spec");
        let root: Yaml = serde_norway::from_str(&text).expect("parse spec YAML");
        assert_eq!(
            root["swagger"].as_str(),
            Some("2.0"),
            "not a Swagger 2.0 document"
        );
        Self { root }
    }

    /// The operation for `method` on a concrete `path` (`/drives/rootfs`
    /// matches `/drives/{drive_id}`).
    fn operation(&self, method: &str, path: &str) -> Option<&Yaml> {
        let paths = self.root["paths"].as_mapping()?;
        let want: Vec<&str> = path.split('/').collect();
        for (template, item) in paths {
            let template = template.as_str()?;
            let have: Vec<&str> = template.split('/').collect();
            let matches = have.len() == want.len()
                && have.iter().zip(&want).all(|(t, w)| {
                    (t.starts_with('{') && t.ends_with('}') && !w.is_empty()) || t == w
                });
            if matches {
                return item.get(method.to_ascii_lowercase());
            }
        }
        None
    }

    /// Errors of sending `body` as `method path`; empty when it conforms.
    pub fn check_request(&self, method: &str, path: &str, body: Option<&Json>) -> Vec<String> {
        let Some(op) = self.operation(method, path) else {
            return vec![format!("{method} {path}: no such operation in the spec")];
        };
        let body_param = op["parameters"]
            .as_sequence()
            .and_then(|ps| ps.iter().find(|p| p["in"].as_str() == Some("body")));
        let mut errors = Vec::new();
        match (body_param, body) {
            (None, None) => {}
            (None, Some(_)) => errors.push(format!("{method} {path}: takes no body")),
            (Some(p), None) => {
                if p["required"].as_bool() == Some(true) {
                    errors.push(format!("{method} {path}: body required"));
                }
            }
            (Some(p), Some(b)) => self.check(&p["schema"], b, "body", &mut errors),
        }
        errors
    }

    /// Errors of `value` against the 200 response schema of `method path`.
    pub fn check_response(&self, method: &str, path: &str, value: &Json) -> Vec<String> {
        let Some(op) = self.operation(method, path) else {
            return vec![format!("{method} {path}: no such operation in the spec")];
        };
        let schema = op["responses"]
            .as_mapping()
            .and_then(|m| {
                m.iter()
                    .find(|(k, _)| k.as_u64() == Some(200) || k.as_str() == Some("200"))
            })
            .map(|(_, r)| &r["schema"]);
        let mut errors = Vec::new();
        match schema {
            Some(s) => self.check(s, value, "response", &mut errors),
            None => errors.push(format!("{method} {path}: no 200 response")),
        }
        errors
    }

    /// Errors of `value` against the named definition.
    pub fn check_definition(&self, name: &str, value: &Json) -> Vec<String> {
        let mut errors = Vec::new();
        self.check(&self.root["definitions"][name], value, name, &mut errors);
        errors
    }

    fn resolve<'a>(&'a self, schema: &'a Yaml) -> &'a Yaml {
        match schema["$ref"].as_str() {
            Some(r) => {
                let name = r
                    .strip_prefix("#/definitions/")
                    .unwrap_or_else(|| panic!("unsupported $ref {r}"));
                let def = &self.root["definitions"][name];
                assert!(!def.is_null(), "dangling $ref {r}");
                self.resolve(def)
            }
            None => schema,
        }
    }

    fn check(&self, schema: &Yaml, value: &Json, at: &str, errors: &mut Vec<String>) {
        let schema = self.resolve(schema);
        if let Some(allowed) = schema["enum"].as_sequence() {
            let ok = allowed.iter().any(|a| yaml_scalar_eq(a, value));
            if !ok {
                errors.push(format!("{at}: {value} is not one of {allowed:?}"));
                return;
            }
        }
        let ty = schema["type"]
            .as_str()
            .or_else(|| schema.get("properties").map(|_| "object"));
        match ty {
            Some("object") => self.check_object(schema, value, at, errors),
            Some("array") => match value.as_array() {
                Some(items) => {
                    for (i, item) in items.iter().enumerate() {
                        self.check(&schema["items"], item, &format!("{at}[{i}]"), errors);
                    }
                }
                None => errors.push(format!("{at}: expected an array, got {value}")),
            },
            Some("string") => match value.as_str() {
                Some(s) => check_string_format(schema, s, at, errors),
                None => errors.push(format!("{at}: expected a string, got {value}")),
            },
            Some("integer") => check_integer(schema, value, at, errors),
            Some("number") if !value.is_number() => {
                errors.push(format!("{at}: expected a number, got {value}"))
            }
            Some("boolean") if !value.is_boolean() => {
                errors.push(format!("{at}: expected a boolean, got {value}"))
            }
            Some("number" | "boolean") => {}
            Some(other) => errors.push(format!("{at}: unsupported schema type {other}")),
            // No type: anything goes.
            None => {}
        }
    }

    fn check_object(&self, schema: &Yaml, value: &Json, at: &str, errors: &mut Vec<String>) {
        let Some(obj) = value.as_object() else {
            errors.push(format!("{at}: expected an object, got {value}"));
            return;
        };
        for req in schema["required"].as_sequence().into_iter().flatten() {
            let name = req.as_str().unwrap_or_default();
            if !obj.contains_key(name) {
                errors.push(format!("{at}: required property {name:?} is missing"));
            }
        }
        let props = &schema["properties"];
        let additional = schema.get("additionalProperties");
        for (key, v) in obj {
            let here = format!("{at}.{key}");
            if let Some(prop) = props.get(key.as_str()) {
                self.check(prop, v, &here, errors);
                continue;
            }
            match additional {
                Some(Yaml::Bool(true)) => {}
                Some(s @ Yaml::Mapping(_)) => self.check(s, v, &here, errors),
                _ => errors.push(format!("{here}: unknown property (Firecracker rejects it)")),
            }
        }
    }
}

fn yaml_scalar_eq(a: &Yaml, v: &Json) -> bool {
    match (a, v) {
        (Yaml::String(s), Json::String(t)) => s == t,
        (Yaml::Bool(b), Json::Bool(c)) => b == c,
        (Yaml::Number(n), Json::Number(m)) => n.as_f64() == m.as_f64(),
        _ => false,
    }
}

fn check_integer(schema: &Yaml, value: &Json, at: &str, errors: &mut Vec<String>) {
    let n: Option<i128> = value
        .as_i64()
        .map(i128::from)
        .or_else(|| value.as_u64().map(i128::from));
    let Some(n) = n else {
        errors.push(format!("{at}: expected an integer, got {value}"));
        return;
    };
    let (lo, hi) = match schema["format"].as_str() {
        Some("int32") => (i32::MIN as i128, i32::MAX as i128),
        Some("int64") => (i64::MIN as i128, i64::MAX as i128),
        _ => (i128::MIN, i128::MAX),
    };
    if n < lo || n > hi {
        errors.push(format!(
            "{at}: {n} does not fit {:?}",
            schema["format"].as_str()
        ));
    }
    let bound = |k: &str| {
        schema[k]
            .as_i64()
            .map(i128::from)
            .or_else(|| schema[k].as_u64().map(i128::from))
    };
    if let Some(min) = bound("minimum")
        && n < min
    {
        errors.push(format!("{at}: {n} is below the minimum {min}"));
    }
    if let Some(max) = bound("maximum")
        && n > max
    {
        errors.push(format!("{at}: {n} is above the maximum {max}"));
    }
}

/// Firecracker uses `format` on strings as a regular expression (MMDS
/// address); well-known format names are not patterns.
fn check_string_format(schema: &Yaml, s: &str, at: &str, errors: &mut Vec<String>) {
    let Some(format) = schema["format"].as_str() else {
        return;
    };
    if matches!(
        format,
        "date" | "date-time" | "password" | "byte" | "binary" | "uri"
    ) {
        return;
    }
    let re = regex::Regex::new(&format!("^(?:{format})$")).expect("format is a regex");
    if !re.is_match(s) {
        errors.push(format!("{at}: {s:?} does not match {format:?}"));
    }
}
