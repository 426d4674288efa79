//! `wait`: until each container has exited; its exit code.

use anyhow::Result;
use skiff_engine::lifecycle;

use super::*;

pub(super) fn wait(ctx: &Ctx, a: &NamesArgs) -> Result<u8> {
    let c = ctx.containers()?;
    for name in &a.containers {
        let id = c.resolve(name)?.id;
        let st = lifecycle::wait_exited(&c, &id, None)?;
        println!("{}", st.exit_code.unwrap_or(0));
    }
    Ok(0)
}
