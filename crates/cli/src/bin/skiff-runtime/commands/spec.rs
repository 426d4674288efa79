//! `spec`: a default config.json for a new bundle.

use super::*;

pub(super) fn spec(bundle: Option<&std::path::Path>) -> Result<i32> {
    let dir = bundle.unwrap_or(std::path::Path::new("."));
    let path = dir.join("config.json");
    if path.exists() {
        bail!("File {} exists. Remove it first", path.display());
    }
    let mut s = oci_spec::runtime::Spec::default();
    if let Some(p) = s.process_mut() {
        p.set_args(Some(vec!["sh".into()]));
        p.set_terminal(Some(true));
    }
    s.set_hostname(Some("skiff".into()));
    let json = serde_json::to_string_pretty(&s)?;
    std::fs::write(&path, json).with_context(|| format!("write {}", path.display()))?;
    Ok(0)
}
