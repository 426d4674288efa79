//! `logs`: the container log, `--tail`, `-f`, timestamps.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, Result};
use skiff_runtime::container::{self, read_log, LogStream, Status};

use super::*;

pub(super) fn logs(ctx: &Ctx, a: &LogsArgs) -> Result<u8> {
    let c = ctx.containers()?;
    let id = c.resolve(&a.container)?.id;
    let path = c.log_path(&id);
    let tail: Option<usize> = match a.tail.as_str() {
        "all" | "-1" => None,
        n => Some(n.parse().with_context(|| format!("invalid --tail {n:?}"))?),
    };
    let (entries, mut offset) = read_log(&path)?;
    let skip = tail.map_or(0, |n| entries.len().saturating_sub(n));
    let print = |e: &container::LogEntry| {
        let text = if a.timestamps {
            format!("{} {}", e.time, e.log)
        } else {
            e.log.clone()
        };
        let _ = match e.stream {
            LogStream::Stdout => {
                let mut o = std::io::stdout();
                o.write_all(text.as_bytes()).and_then(|()| o.flush())
            }
            LogStream::Stderr => {
                let mut o = std::io::stderr();
                o.write_all(text.as_bytes()).and_then(|()| o.flush())
            }
        };
    };
    for e in &entries[skip..] {
        print(e);
    }
    if !a.follow {
        return Ok(0);
    }
    loop {
        let done = {
            let st = c.state(&id)?;
            st.status == Status::Exited || (st.status == Status::Created && st.pid.is_none())
        };
        let mut more = Vec::new();
        offset = container::read_log_from(&path, offset, &mut more)?;
        for e in &more {
            print(e);
        }
        if done {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
