//! `list`: the containers in the state directory, as a table or JSON.

use super::*;

pub(super) fn list(store: &Store, format: &str, quiet: bool) -> Result<i32> {
    let mut states = Vec::new();
    for id in store.list()? {
        if let Ok(rec) = store.lock(&id)?.load() {
            states.push(rec.oci_state());
        }
    }
    match format {
        "json" => println!("{}", serde_json::to_string(&states)?),
        "table" if quiet => {
            for s in &states {
                println!("{}", s["id"].as_str().unwrap_or_default());
            }
        }
        "table" => {
            println!(
                "{:<24} {:<8} {:<10} {:<40} {:<30} OWNER",
                "ID", "PID", "STATUS", "BUNDLE", "CREATED"
            );
            for s in &states {
                println!(
                    "{:<24} {:<8} {:<10} {:<40} {:<30} root",
                    s["id"].as_str().unwrap_or_default(),
                    s["pid"],
                    s["status"].as_str().unwrap_or_default(),
                    s["bundle"].as_str().unwrap_or_default(),
                    s["created"].as_str().unwrap_or_default()
                );
            }
        }
        f => bail!("invalid format {f:?}"),
    }
    Ok(0)
}
