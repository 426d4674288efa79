//! `system df`: what images, layers and containers take on disk.

use std::io::Write;

use serde_json::json;
use skiff_image::fsutil::human_size;
use skiff_image::{usage, Store};

use super::*;

pub(super) fn df(store: &Store, a: DfArgs) -> anyhow::Result<i32> {
    let u = usage::disk_usage(store)?;
    let active = u.images.iter().filter(|i| i.containers > 0).count();
    if a.format.as_deref() == Some("json") {
        let images: Vec<_> = u
            .images
            .iter()
            .map(|i| json!({"ID": i.image.id.as_str(), "RepoTags": i.image.tags.iter().map(familiar).collect::<Vec<_>>(), "Size": i.size, "SharedSize": i.shared, "UniqueSize": i.unique, "Containers": i.containers}))
            .collect();
        println!(
            "{}",
            json!({"Images": images, "TotalSize": u.total, "Reclaimable": u.reclaimable, "Active": active})
        );
        return Ok(0);
    }
    let pct = (u.reclaimable * 100).checked_div(u.total).unwrap_or(0);
    let table = vec![
        ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
            .map(String::from)
            .to_vec(),
        vec![
            "Images".into(),
            u.images.len().to_string(),
            active.to_string(),
            human_size(u.total),
            format!("{} ({pct}%)", human_size(u.reclaimable)),
        ],
    ];
    let mut out = std::io::stdout().lock();
    print_table(&mut out, &table)?;
    if a.verbose {
        writeln!(out, "\nImages space usage:\n")?;
        let mut t = vec![[
            "REPOSITORY",
            "TAG",
            "IMAGE ID",
            "SIZE",
            "SHARED SIZE",
            "UNIQUE SIZE",
            "CONTAINERS",
        ]
        .map(String::from)
        .to_vec()];
        for i in &u.images {
            let (repo, tag) = i
                .image
                .tags
                .first()
                .map_or(("<none>".into(), "<none>".into()), |t| {
                    (t.familiar_name(), t.tag.clone().unwrap_or_default())
                });
            t.push(vec![
                repo,
                tag,
                i.image.id.short().to_owned(),
                human_size(i.size),
                human_size(i.shared),
                human_size(i.unique),
                i.containers.to_string(),
            ]);
        }
        print_table(&mut out, &t)?;
    }
    Ok(0)
}
