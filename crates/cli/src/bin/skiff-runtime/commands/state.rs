//! `state`: the container's OCI state as JSON.

use super::*;

pub(super) fn state(store: &Store, id: &str) -> Result<i32> {
    let rec = store.lock(id)?.load()?;
    println!("{}", serde_json::to_string_pretty(&rec.oci_state())?);
    Ok(0)
}
