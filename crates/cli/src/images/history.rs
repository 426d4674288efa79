//! `image history`: the layers and the steps that made them.

use skiff_image::fsutil::{human_ago, human_size, now_unix};
use skiff_image::Store;

use super::*;

pub(super) fn history(store: &Store, a: HistoryArgs) -> anyhow::Result<i32> {
    let i = store.image(&a.image)?;
    let hist = i.config.history().clone().unwrap_or_default();
    let now = now_unix();
    let mut layer_sizes = i.layers.iter().map(|l| l.size);
    let mut rows = Vec::new();
    for h in &hist {
        let size = if h.empty_layer().unwrap_or(false) {
            0
        } else {
            layer_sizes.next().unwrap_or(0)
        };
        rows.push((h, size));
    }
    rows.reverse();
    let mut table = vec![["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]
        .map(String::from)
        .to_vec()];
    for (n, (h, size)) in rows.iter().enumerate() {
        let id = if n == 0 {
            if a.no_trunc {
                i.id.to_string()
            } else {
                i.id.short().to_owned()
            }
        } else {
            "<missing>".to_owned()
        };
        if a.quiet {
            println!("{id}");
            continue;
        }
        let created = h
            .created()
            .as_deref()
            .and_then(skiff_image::fsutil::parse_rfc3339)
            .map_or_else(String::new, |t| human_ago(t, now));
        let mut by = h.created_by().clone().unwrap_or_default();
        if !a.no_trunc && by.chars().count() > 45 {
            by = by.chars().take(44).collect::<String>() + "…";
        }
        table.push(vec![
            id,
            created,
            by,
            human_size(*size),
            h.comment().clone().unwrap_or_default(),
        ]);
    }
    if !a.quiet {
        print_table(&mut std::io::stdout().lock(), &table)?;
    }
    Ok(0)
}
