//! `create`: the container's supervisor started (it boots the VM and creates the container from the bundle), the createRuntime hooks, the pid file.

use super::*;

pub(super) fn create(cli: &Cli, store: &Store, a: &CreateArgs) -> Result<Child> {
    records::check_id(&a.id)?;
    let mut bundle = Bundle::load(&a.bundle)?;
    let record = Record {
        id: a.id.clone(),
        bundle: bundle.dir.clone(),
        rootfs: bundle.rootfs.clone(),
        created: rfc3339_ms(now_ms()),
        annotations: bundle
            .spec
            .annotations()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect(),
        ..Record::default()
    };
    store.lock(&a.id)?.create(&record)?;
    let made = admission::admit(&mut bundle, &a.id, &store.dir(&a.id))
        .and_then(|()| create_prepared(cli, store, a, &bundle));
    match made {
        Ok(child) => {
            admission::event(&store.dir(&a.id), &a.id, EventKind::Created);
            Ok(child)
        }
        Err(e) => {
            if let Ok(lock) = store.lock(&a.id) {
                if let Ok(rec) = lock.load() {
                    if let Some(pid) = rec.pid {
                        kill_and_wait(pid);
                    }
                    if let Some(dir) = rec.cgroup {
                        CpuCgroup { dir }.remove();
                    }
                }
                let _ = lock.remove();
            }
            Err(e)
        }
    }
}

pub(super) fn create_prepared(
    cli: &Cli,
    store: &Store,
    a: &CreateArgs,
    bundle: &Bundle,
) -> Result<Child> {
    let pty = if bundle.process.terminal {
        let Some(sock) = &a.console_socket else {
            bail!("process.terminal is set but no --console-socket was given");
        };
        let pty = console::open_pty()?;
        console::send_master(sock, &pty.master)?;
        Some(pty)
    } else {
        None
    };
    let (mut child, ready) = spawn_helper(
        helper_args(cli),
        &["_supervise", &a.id],
        &[],
        pty.as_ref().map(|p| &p.slave),
    )?;
    drop(pty);
    let pid = match await_ready(child.id(), ready) {
        Ok(pid) => pid,
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            return Err(e);
        }
    };
    let rec = store.lock(&a.id)?.load()?;
    let mut st = rec.oci_state();
    st["status"] = "creating".into();
    let mut pre = hook_list(bundle, |h| h.prestart().clone());
    pre.extend(hook_list(bundle, |h| h.create_runtime().clone()));
    hooks::run_all("createRuntime", &pre, &st)?;
    if !hook_list(bundle, |h| h.create_container().clone()).is_empty() {
        control(&rec, ControlRequest::CreateHooks)?;
    }
    if let Some(f) = &a.pid_file {
        skiff_runtime::owner_only::write_atomic(f, pid.to_string().as_bytes())?;
    }
    Ok(child)
}
