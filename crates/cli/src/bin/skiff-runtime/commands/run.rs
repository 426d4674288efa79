//! `run`: `create` then `start`, in the foreground unless `--detach`.

use super::*;

pub(super) fn run(cli: &Cli, store: &Store, a: &CreateArgs, detach: bool) -> Result<i32> {
    let mut child = create(cli, store, a)?;
    if let Err(e) = start(store, &a.id) {
        let _ = delete(store, &a.id, true);
        return Err(e);
    }
    if detach {
        return Ok(0);
    }
    let status = child.wait()?;
    let _ = delete(store, &a.id, true);
    Ok(status.code().unwrap_or(137))
}
