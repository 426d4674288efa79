//! `top`: the container's processes as its guest sees them.

use std::io::Write;

use anyhow::{bail, Result};

use super::*;

pub(super) fn top(ctx: &Ctx, a: &TopArgs) -> Result<u8> {
    let c = ctx.containers()?;
    let id = c.resolve(&a.container)?.id;
    let mut args = vec!["ps".to_owned()];
    args.extend(a.ps_args.iter().cloned());
    let (code, out) = exec_capture(&c, &id, args)?;
    if code != 0 {
        bail!("ps in the container failed with status {code} (does the image have ps?)");
    }
    // The guest's own PID 1 (the agent), kernel threads and our ps are not the
    // container's processes.
    let text = String::from_utf8_lossy(&out);
    let mut lines = text.lines();
    let mut stdout = std::io::stdout().lock();
    if let Some(header) = lines.next() {
        writeln!(stdout, "{header}")?;
    }
    let cmd_col = text
        .lines()
        .next()
        .and_then(|h| h.find("COMMAND").or_else(|| h.find("CMD")));
    for line in lines {
        let command = cmd_col.and_then(|c| line.get(c..)).unwrap_or(line).trim();
        let hidden = command.starts_with('[') || command == "/init" || command.starts_with("ps");
        if !hidden {
            writeln!(stdout, "{line}")?;
        }
    }
    Ok(0)
}
