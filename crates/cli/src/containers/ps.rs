//! `ps`: the containers as Docker lists them (table, `-q`, `--format`).

use std::io::Write;

use anyhow::Result;
use serde_json::{json, Value};
use skiff_runtime::container::{self, ContainerSpec, ContainerState, Status};

use crate::template;

use super::*;

pub(super) fn human_duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => "Less than a second".into(),
        1 => "1 second".into(),
        2..=59 => format!("{s} seconds"),
        60..=119 => "About a minute".into(),
        120..=3599 => format!("{} minutes", s / 60),
        3600..=7199 => "About an hour".into(),
        7200..=172_799 => format!("{} hours", s / 3600),
        _ => format!("{} days", s / 86_400),
    }
}

pub(super) fn status_text(st: &ContainerState) -> String {
    let now = container::now_ms();
    match st.status {
        Status::Created if st.pid.is_some() => "Starting".into(),
        Status::Created => "Created".into(),
        Status::Running => format!(
            "Up {}",
            human_duration(now.saturating_sub(st.started_ms.unwrap_or(now)))
        ),
        Status::Exited => format!(
            "Exited ({}) {} ago",
            st.exit_code.unwrap_or(0),
            human_duration(now.saturating_sub(st.finished_ms.unwrap_or(now)))
        ),
    }
}

pub(super) fn command_text(spec: &ContainerSpec) -> String {
    spec.process.args.join(" ")
}

pub(super) fn ps_row(
    spec: &ContainerSpec,
    st: &ContainerState,
    no_trunc: bool,
    ports: &str,
) -> Value {
    let id = if no_trunc {
        spec.id.clone()
    } else {
        spec.id[..12].to_owned()
    };
    let mut command = command_text(spec);
    if !no_trunc && command.chars().count() > 20 {
        command = command.chars().take(19).collect::<String>() + "…";
    }
    let now = container::now_ms();
    json!({
        "ID": id,
        "Image": spec.image,
        "Command": format!("\"{command}\""),
        "CreatedAt": container::rfc3339_ms(spec.created_ms),
        "RunningFor": format!("{} ago", human_duration(now.saturating_sub(spec.created_ms))),
        "Status": status_text(st),
        "State": st.status.as_str(),
        "Names": spec.name,
        "Labels": spec.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
        "Ports": ports,
    })
}

pub(super) fn ps(ctx: &Ctx, a: &PsArgs) -> Result<u8> {
    let c = ctx.containers()?;
    let listed: Vec<(ContainerSpec, ContainerState)> = c
        .list()?
        .into_iter()
        .filter(|(_, st)| a.all || st.is_running())
        .collect();
    let ports = crate::networks::ports_by_container(&listed);
    let rows: Vec<Value> = listed
        .iter()
        .map(|(spec, st)| {
            let p = ports.get(&spec.id).map(String::as_str).unwrap_or_default();
            ps_row(spec, st, a.no_trunc, p)
        })
        .collect();
    let mut out = std::io::stdout().lock();
    if a.quiet {
        for r in &rows {
            writeln!(out, "{}", r["ID"].as_str().unwrap_or_default())?;
        }
        return Ok(0);
    }
    match a.format.as_deref() {
        None | Some("table") => {
            let cols = [
                "ID",
                "Image",
                "Command",
                "RunningFor",
                "Status",
                "Ports",
                "Names",
            ];
            let heads = [
                "CONTAINER ID",
                "IMAGE",
                "COMMAND",
                "CREATED",
                "STATUS",
                "PORTS",
                "NAMES",
            ];
            let cell = |r: &Value, k: &str| r[k].as_str().unwrap_or_default().to_owned();
            let widths: Vec<usize> = cols
                .iter()
                .zip(heads)
                .map(|(k, h)| {
                    rows.iter()
                        .map(|r| cell(r, k).chars().count())
                        .chain([h.len()])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            let line = |cells: Vec<String>| {
                let mut s = String::new();
                for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
                    if i + 1 == cells.len() {
                        s.push_str(c);
                    } else {
                        s.push_str(&format!("{c:<w$}   ", w = *w));
                    }
                }
                s
            };
            writeln!(
                out,
                "{}",
                line(heads.iter().map(|h| (*h).to_owned()).collect())
            )?;
            for r in &rows {
                writeln!(out, "{}", line(cols.iter().map(|k| cell(r, k)).collect()))?;
            }
        }
        Some("json") => {
            for r in &rows {
                writeln!(out, "{r}")?;
            }
        }
        Some(t) => {
            let (t, table) = match t.strip_prefix("table") {
                Some(rest) => (rest.trim_start(), true),
                None => (t, false),
            };
            if table {
                writeln!(out, "{}", template::header(t))?;
            }
            for r in &rows {
                writeln!(out, "{}", template::render(t, r))?;
            }
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_docker() {
        assert_eq!(human_duration(500), "Less than a second");
        assert_eq!(human_duration(5_000), "5 seconds");
        assert_eq!(human_duration(90_000), "About a minute");
        assert_eq!(human_duration(600_000), "10 minutes");
    }
}
