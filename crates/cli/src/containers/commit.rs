//! `commit`: the container's changes, streamed by its guest and checked on the host, become a new image.

use anyhow::{bail, Context, Result};
use skiff_image::commit::ConfigChange;
use skiff_runtime::container::Status;

use super::*;

pub(super) fn parse_change(change: &str, out: &mut ConfigChange) -> Result<()> {
    let (instr, rest) = change
        .trim()
        .split_once(char::is_whitespace)
        .unwrap_or((change.trim(), ""));
    let rest = rest.trim();
    let list = |s: &str| -> Vec<String> {
        match serde_json::from_str::<Vec<String>>(s) {
            Ok(v) => v,
            // Shell form, as Docker runs it.
            Err(_) => vec!["/bin/sh".into(), "-c".into(), s.to_owned()],
        }
    };
    match instr.to_ascii_uppercase().as_str() {
        "CMD" => out.cmd = Some(list(rest)),
        "ENTRYPOINT" => out.entrypoint = Some(list(rest)),
        "ENV" => {
            let kv = match rest.split_once('=') {
                Some(_) => rest.to_owned(),
                None => match rest.split_once(char::is_whitespace) {
                    Some((k, v)) => format!("{k}={}", v.trim()),
                    None => bail!("invalid ENV change {change:?}"),
                },
            };
            out.env.push(kv);
        }
        "WORKDIR" => out.working_dir = Some(rest.to_owned()),
        "USER" => out.user = Some(rest.to_owned()),
        "STOPSIGNAL" => out.stop_signal = Some(rest.to_owned()),
        "LABEL" => {
            let (k, v) = rest.split_once('=').context("LABEL needs KEY=VALUE")?;
            out.labels.push((k.to_owned(), v.trim_matches('"').to_owned()));
        }
        "EXPOSE" => out.exposed_ports.extend(rest.split_whitespace().map(|p| {
            if p.contains('/') { p.to_owned() } else { format!("{p}/tcp") }
        })),
        other => bail!("unsupported --change instruction {other:?} (CMD, ENTRYPOINT, ENV, WORKDIR, USER, LABEL, EXPOSE, STOPSIGNAL)"),
    }
    Ok(())
}

pub(super) fn commit(ctx: &Ctx, a: &CommitArgs) -> Result<u8> {
    let c = ctx.containers()?;
    let spec = c.resolve(&a.container)?;
    let mut change = ConfigChange {
        created_by: format!("skiff commit {}", command_text(&spec)),
        comment: a.message.clone(),
        author: a.author.clone(),
        ..Default::default()
    };
    for ch in &a.change {
        parse_change(ch, &mut change)?;
    }
    let store = ctx.store()?;
    let lock = c.lock(&spec.id)?;
    let st = lock.refreshed_state()?;
    if st.is_running() || (st.status == Status::Created && st.pid.is_some()) {
        bail!(
            "container {} is running; stop it before commit",
            &spec.id[..12]
        );
    }
    // The guest streams its own changes; the host never mounts the disk it wrote.
    let image = if c.writable_disk(&spec.id).exists() {
        let mut changes = skiff_runtime::container::export_changes(&c, &spec)?;
        let image = skiff_image::commit::commit(
            &store,
            &spec.image_id,
            &mut changes,
            &change,
            a.repository.as_deref(),
        )?;
        changes.finish()?;
        image
    } else {
        skiff_image::commit::commit(
            &store,
            &spec.image_id,
            &mut &skiff_image::commit::empty_layer()[..],
            &change,
            a.repository.as_deref(),
        )?
    };
    println!("{}", image.id);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_parse() {
        let mut c = ConfigChange::default();
        parse_change(r#"CMD ["sh", "-c", "x"]"#, &mut c).unwrap();
        parse_change("ENTRYPOINT echo hi", &mut c).unwrap();
        parse_change("ENV A=1", &mut c).unwrap();
        parse_change("ENV B 2", &mut c).unwrap();
        parse_change("WORKDIR /w", &mut c).unwrap();
        parse_change("LABEL a=b", &mut c).unwrap();
        parse_change("EXPOSE 80", &mut c).unwrap();
        assert_eq!(c.cmd.unwrap(), ["sh", "-c", "x"]);
        assert_eq!(c.entrypoint.unwrap(), ["/bin/sh", "-c", "echo hi"]);
        assert_eq!(c.env, ["A=1", "B=2"]);
        assert_eq!(c.exposed_ports, ["80/tcp"]);
        assert!(parse_change("RUN x", &mut ConfigChange::default()).is_err());
    }
}
