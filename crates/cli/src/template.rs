//! The small part of Go templates that `--format` users type: `{{.Field}}`,
//! `{{.A.B}}`, `{{json .}}` / `{{json .A}}`, and a leading `table` for a header row.

use serde_json::Value;

/// Renders `template` against `v`. Strings print raw, other values as JSON.
pub fn render(template: &str, v: &Value) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else {
            out.push_str(&rest[start..]);
            return unescape(&out);
        };
        let action = rest[start + 2..start + end].trim();
        out.push_str(&eval(action, v));
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    unescape(&out)
}

/// The header row of a `table ...` template: each `{{.Field}}` becomes its name in
/// capitals (`ID` stays, `Names` becomes `NAMES`).
pub fn header(template: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else {
            break;
        };
        let action = rest[start + 2..start + end].trim();
        let name = action.rsplit('.').next().unwrap_or(action);
        out.push_str(&name.to_ascii_uppercase());
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    unescape(&out)
}

fn unescape(s: &str) -> String {
    s.replace("\\t", "\t").replace("\\n", "\n")
}

fn eval(action: &str, v: &Value) -> String {
    if let Some(path) = action.strip_prefix("json ") {
        return lookup(path.trim(), v)
            .map(|x| x.to_string())
            .unwrap_or_else(|| "null".into());
    }
    match lookup(action, v) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "<no value>".into(),
        Some(other) => other.to_string(),
    }
}

fn lookup<'a>(path: &str, v: &'a Value) -> Option<&'a Value> {
    if path == "." {
        return Some(v);
    }
    let mut cur = v;
    for part in path.strip_prefix('.')?.split('.') {
        cur = cur.get(part)?;
    }
    Some(cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_paths_and_json() {
        let v = json!({"ID": "abc", "State": {"Status": "running", "Pid": 5}});
        assert_eq!(render("{{.ID}} {{.State.Status}}", &v), "abc running");
        assert_eq!(render("{{.State.Pid}}", &v), "5");
        assert_eq!(
            render("{{json .State}}", &v),
            r#"{"Pid":5,"Status":"running"}"#
        );
        assert_eq!(render("{{.Nope}}", &v), "<no value>");
        assert_eq!(render("{{.ID}}\\t{{.ID", &v), "abc\t{{.ID");
        assert_eq!(header("{{.ID}}\\t{{.Names}}"), "ID\tNAMES");
    }
}
