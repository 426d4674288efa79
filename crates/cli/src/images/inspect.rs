//! `image inspect`: an image as Docker's JSON.

use serde_json::json;
use skiff_image::{Image, Reference, Store};

use super::*;

pub(super) fn inspect_json(store: &Store, i: &Image) -> serde_json::Value {
    let c = &i.config_json;
    json!({
        "Id": i.id.as_str(),
        "RepoTags": i.tags.iter().map(familiar).collect::<Vec<_>>(),
        "RepoDigests": i.record.repo_digests.iter().filter_map(|rd| Reference::parse(rd).ok().map(|r| familiar(&r))).collect::<Vec<_>>(),
        "Created": c.get("created").cloned().unwrap_or(serde_json::Value::Null),
        "Author": c.get("author").cloned().unwrap_or(json!("")),
        "Architecture": c.get("architecture").cloned().unwrap_or(json!("")),
        "Os": c.get("os").cloned().unwrap_or(json!("")),
        "Size": image_size(store, i),
        "Config": c.get("config").cloned().unwrap_or(json!({})),
        "RootFS": {"Type": "layers", "Layers": i.layers.iter().map(|l| l.diff_id.as_str()).collect::<Vec<_>>()},
        "Manifest": {"Digest": i.manifest_digest.as_str(), "Layers": i.layers},
        "LayerDisks": i.layers.iter().map(|l| skiff_image::store::layerdisk::disk_path(store, l)).collect::<Vec<_>>(),
    })
}

pub(super) fn inspect(store: &Store, a: InspectArgs) -> anyhow::Result<i32> {
    let mut out = Vec::new();
    let mut code = 0;
    for name in &a.images {
        match store.image(name) {
            Ok(i) => out.push(inspect_json(store, &i)),
            Err(e) => {
                eprintln!("Error: {e}");
                code = 1;
            }
        }
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(code)
}
