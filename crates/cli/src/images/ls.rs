//! `images` / `image ls`: the images as Docker lists them.

use std::io::Write;

use anyhow::bail;
use serde_json::json;
use skiff_image::fsutil::{human_ago, human_size, now_unix};
use skiff_image::{store, Image, Reference, Store};

use super::*;

pub(super) fn familiar(r: &Reference) -> String {
    let mut s = r.familiar_name();
    if let Some(t) = &r.tag {
        s = format!("{s}:{t}");
    }
    if let Some(d) = &r.digest {
        s = format!("{s}@{d}");
    }
    s
}

pub(super) fn image_size(store: &Store, i: &Image) -> u64 {
    i.layers
        .iter()
        .map(|l| {
            std::fs::metadata(skiff_image::store::layerdisk::disk_path(store, l))
                .map_or(0, |m| m.len())
        })
        .sum()
}

pub(super) fn images(store: &Store, a: ImagesArgs) -> anyhow::Result<i32> {
    let json = match a.format.as_deref() {
        None | Some("table") => false,
        Some("json") => true,
        Some(f) => bail!("unsupported --format {f:?} (table or json)"),
    };
    let filter = a.repository.as_deref().map(Reference::parse).transpose()?;
    let now = now_unix();
    let mut rows: Vec<[String; 7]> = Vec::new();
    let mut ids_seen = std::collections::BTreeSet::new();
    for i in store.images()? {
        let id = if a.no_trunc {
            i.id.to_string()
        } else {
            i.id.short().to_owned()
        };
        let created = store::created_unix(&i);
        let size = image_size(store, &i);
        let names: Vec<(String, String, String)> = if i.tags.is_empty() {
            vec![("<none>".into(), "<none>".into(), String::new())]
        } else {
            i.tags
                .iter()
                .filter(|t| {
                    filter.as_ref().is_none_or(|f| {
                        f.name() == t.name()
                            && (a.repository.as_deref().is_some_and(|r| !r.contains(':'))
                                || f.tag == t.tag)
                    })
                })
                .map(|t| {
                    (
                        t.familiar_name(),
                        t.tag.clone().unwrap_or_default(),
                        t.name(),
                    )
                })
                .collect()
        };
        if filter.is_some() && i.tags.is_empty() {
            continue;
        }
        for (repo, tag, full) in names {
            let digest = i
                .record
                .repo_digests
                .iter()
                .find(|rd| rd.split('@').next() == Some(full.as_str()))
                .and_then(|rd| rd.split('@').nth(1))
                .unwrap_or("<none>")
                .to_owned();
            if a.quiet {
                if ids_seen.insert(id.clone()) {
                    println!("{id}");
                }
                continue;
            }
            rows.push([
                repo,
                tag,
                digest,
                id.clone(),
                human_ago(created, now),
                human_size(size),
                fsutil_rfc(created),
            ]);
        }
    }
    if a.quiet {
        return Ok(0);
    }
    let mut out = std::io::stdout().lock();
    if json {
        for r in rows {
            let v = json!({"Repository": r[0], "Tag": r[1], "Digest": r[2], "ID": r[3], "CreatedSince": r[4], "Size": r[5], "CreatedAt": r[6]});
            writeln!(out, "{v}")?;
        }
        return Ok(0);
    }
    let mut table: Vec<Vec<String>> = Vec::new();
    let mut head = vec!["REPOSITORY", "TAG"];
    if a.digests {
        head.push("DIGEST");
    }
    head.extend(["IMAGE ID", "CREATED", "SIZE"]);
    table.push(head.iter().map(|s| s.to_string()).collect());
    for r in rows {
        let mut row = vec![r[0].clone(), r[1].clone()];
        if a.digests {
            row.push(r[2].clone());
        }
        row.extend([r[3].clone(), r[4].clone(), r[5].clone()]);
        table.push(row);
    }
    print_table(&mut out, &table)?;
    Ok(0)
}

pub(super) fn fsutil_rfc(t: u64) -> String {
    skiff_image::fsutil::rfc3339(t)
}

pub(super) fn print_table(out: &mut dyn Write, rows: &[Vec<String>]) -> anyhow::Result<()> {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == cols {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   ", w = widths[c]));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}
