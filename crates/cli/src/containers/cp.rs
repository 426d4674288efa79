//! `skiff cp`: files between a running container and the host, as a tar stream through
//! an exec of the image's own `tar` (so the image needs `sh` and `tar`, as busybox
//! has). Out of a container, the stream is the guest's and hostile: the host applies it
//! with skiff's own extractor (`skiff_image::extract`: nothing outside DEST, no
//! symlink followed, no device nodes, no set-id bits, owners only with `-a`, capped),
//! never with the host's `tar`. Into a container, the host's `tar` reads host files.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use skiff_image::extract::{extract_untrusted, ExtractOptions};
use skiff_runtime::container::{Containers, MAIN_STREAM};
use skiff_runtime::{Event, StartOutcome};

use super::exec::agent_of;

/// A `CONTAINER:PATH` argument (a host path may not contain ':' before a '/').
fn split(arg: &str) -> Option<(&str, &str)> {
    let (c, p) = arg.split_once(':')?;
    (!c.is_empty() && !c.contains('/')).then_some((c, p))
}

pub fn run(c: &Containers, src: &str, dest: &str, archive: bool) -> Result<u8> {
    match (split(src), split(dest)) {
        (Some((ctr, path)), None) => from_container(c, ctr, path, Path::new(dest), archive),
        (None, Some((ctr, path))) => to_container(c, Path::new(src), ctr, path),
        (Some(_), Some(_)) => bail!("copying between containers is not supported"),
        (None, None) => bail!("one of SRC and DEST must be CONTAINER:PATH"),
    }
}

/// The directory and file name of `p`, as tar -C DIR NAME wants them.
fn parent_and_name(p: &str) -> Result<(String, String)> {
    let trimmed = p.trim_end_matches('/');
    let path = Path::new(if trimmed.is_empty() { "/" } else { trimmed });
    let name = path
        .file_name()
        .with_context(|| format!("cannot copy {p:?}: no file name"))?
        .to_string_lossy()
        .into_owned();
    let parent = path
        .parent()
        .map(|d| d.to_string_lossy().into_owned())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| ".".into());
    Ok((parent, name))
}

fn exec_spec(
    c: &Containers,
    id: &str,
    args: Vec<String>,
    stdin: bool,
) -> Result<skiff_proto::ProcessSpec> {
    let mut p = c.spec(id)?.process;
    p.args = args;
    p.terminal = false;
    p.stdin = stdin;
    p.user = skiff_proto::User::default();
    p.user_name = None;
    Ok(p)
}

fn from_container(c: &Containers, ctr: &str, path: &str, dest: &Path, archive: bool) -> Result<u8> {
    if !path.starts_with('/') {
        bail!("the container path {path:?} must be absolute");
    }
    let id = c.resolve(ctr)?.id;
    let (dir, name) = parent_and_name(path)?;
    // Docker's rule: into an existing directory, else as the new name.
    let (extract_in, rename_to) = if dest.is_dir() {
        (dest.to_path_buf(), None)
    } else {
        let parent = dest
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !parent.is_dir() {
            bail!("{}: no such directory", parent.display());
        }
        let tmp = tempfile::Builder::new()
            .prefix(".skiff-cp")
            .tempdir_in(parent)?
            .keep();
        (tmp, Some(dest.to_path_buf()))
    };
    let opts = ExtractOptions {
        root_name: Some(name.clone().into()),
        keep_owners: archive,
        ..ExtractOptions::default()
    };
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(16);
    let into = extract_in.clone();
    let extractor =
        std::thread::spawn(move || extract_untrusted(ChannelReader::new(rx), &into, &opts));
    let copied = stream_out(c, &id, dir, &name, tx);
    let extracted = extractor
        .join()
        .map_err(|_| anyhow::anyhow!("the extractor thread panicked"))?;
    let result = match (copied, extracted) {
        (Ok(()), Ok(report)) => {
            if !report.skipped.is_empty() {
                eprintln!(
                    "skiff cp: left out {} device node(s) or special file(s): {}",
                    report.skipped.len(),
                    report.skipped.join(", ")
                );
            }
            Ok(())
        }
        // A refused stream explains more than the guest's side of it.
        (
            _,
            Err(e @ (skiff_image::Error::HostileStream(_) | skiff_image::Error::LimitExceeded(_))),
        ) => Err(anyhow::Error::new(e).context("copy from the container refused")),
        (Err(e), _) => Err(e),
        (Ok(()), Err(e)) => Err(anyhow::Error::new(e).context("copy from the container failed")),
    };
    if let Some(to) = rename_to {
        if result.is_ok() {
            std::fs::rename(extract_in.join(&name), &to)
                .with_context(|| format!("create {}", to.display()))?;
        }
        let _ = std::fs::remove_dir_all(&extract_in);
    }
    result.map(|()| 0)
}

/// Runs the container's `tar -c` of `dir/name` and sends its output to `tx`.
fn stream_out(
    c: &Containers,
    id: &str,
    dir: String,
    name: &str,
    tx: std::sync::mpsc::SyncSender<Vec<u8>>,
) -> Result<()> {
    let mut agent = agent_of(c, id)?;
    let spec = exec_spec(
        c,
        id,
        vec![
            "tar".into(),
            "-C".into(),
            dir,
            "-cf".into(),
            "-".into(),
            name.to_owned(),
        ],
        false,
    )?;
    let mut status = match agent.start(MAIN_STREAM, false, &spec)? {
        StartOutcome::Failed { status } => Some(status),
        StartOutcome::Running { .. } => None,
    };
    let mut errors = Vec::new();
    let mut refused = false;
    while status.is_none() {
        match agent.next_event()? {
            // A full errors buffer stays bounded; a refused stream is drained.
            Some(Event::Stdout { bytes, .. }) if !refused => refused = tx.send(bytes).is_err(),
            Some(Event::Stderr { bytes, .. }) if errors.len() < 64 << 10 => {
                errors.extend_from_slice(&bytes)
            }
            Some(Event::Exited { status: s, .. }) => status = Some(s),
            Some(_) => {}
            None => break,
        }
    }
    agent.sender().hang_up();
    drop(tx);
    match status.map(|s| s.code()) {
        Some(0) => Ok(()),
        _ => bail!(
            "copy from the container failed: {}",
            String::from_utf8_lossy(&errors).trim()
        ),
    }
}

/// The receiving end of the guest's stream, as a reader for the extractor.
struct ChannelReader {
    rx: std::sync::mpsc::Receiver<Vec<u8>>,
    buf: Vec<u8>,
    pos: usize,
}

impl ChannelReader {
    fn new(rx: std::sync::mpsc::Receiver<Vec<u8>>) -> Self {
        Self {
            rx,
            buf: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.buf.len() {
            match self.rx.recv() {
                Ok(b) => {
                    self.buf = b;
                    self.pos = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn to_container(c: &Containers, src: &Path, ctr: &str, path: &str) -> Result<u8> {
    if !path.starts_with('/') {
        bail!("the container path {path:?} must be absolute");
    }
    let id = c.resolve(ctr)?.id;
    let (dir, name) = parent_and_name(&src.to_string_lossy())?;
    if !src.exists() {
        bail!("{}: no such file or directory", src.display());
    }
    // Into an existing directory; otherwise the copy takes the name DEST.
    let script = r#"d="$1"; n="$2"
if [ -d "$d" ]; then exec tar -C "$d" -xf -; fi
p=$(dirname "$d"); [ -d "$p" ] || { echo "$p: no such directory" >&2; exit 1; }
t=$(mktemp -d "$p/.skiff-cp.XXXXXX") && tar -C "$t" -xf - && mv "$t/$n" "$d"; r=$?; rm -rf "$t"; exit $r"#;
    let spec = exec_spec(
        c,
        &id,
        vec![
            "sh".into(),
            "-c".into(),
            script.into(),
            "sh".into(),
            path.into(),
            name.clone(),
        ],
        true,
    )?;
    let mut agent = agent_of(c, &id)?;
    let mut status = match agent.start(MAIN_STREAM, false, &spec)? {
        StartOutcome::Failed { status } => Some(status),
        StartOutcome::Running { .. } => None,
    };
    let mut tar = Command::new("tar")
        .arg("-C")
        .arg(&dir)
        .args(["-cf", "-"])
        .arg(&name)
        .stdout(Stdio::piped())
        .spawn()
        .context("run tar on the host")?;
    let mut tar_out = tar.stdout.take().context("tar stdout")?;
    let sender = agent.sender();
    let pump = std::thread::spawn(move || -> std::io::Result<()> {
        let mut buf = vec![0u8; 32 << 10];
        loop {
            let n = tar_out.read(&mut buf)?;
            if n == 0 {
                let _ = sender.stdin(MAIN_STREAM, Vec::new());
                return Ok(());
            }
            if sender.stdin(MAIN_STREAM, buf[..n].to_vec()).is_err() {
                return Ok(());
            }
        }
    });
    let mut errors = Vec::new();
    while status.is_none() {
        match agent.next_event()? {
            Some(Event::Stderr { bytes, .. }) => errors.extend_from_slice(&bytes),
            Some(Event::Exited { status: s, .. }) => status = Some(s),
            Some(_) => {}
            None => break,
        }
    }
    agent.sender().hang_up();
    let _ = pump.join();
    let host_ok = tar.wait()?.success();
    match status.map(|s| s.code()) {
        Some(0) if host_ok => Ok(0),
        _ => bail!(
            "copy into the container failed: {}",
            String::from_utf8_lossy(&errors).trim()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_split_like_docker() {
        assert_eq!(split("web:/etc/x"), Some(("web", "/etc/x")));
        assert_eq!(split("./a:b"), None);
        assert_eq!(split("/tmp/file"), None);
        assert_eq!(split(":x"), None);
        assert_eq!(
            parent_and_name("/etc/passwd").unwrap(),
            ("/etc".into(), "passwd".into())
        );
        assert_eq!(
            parent_and_name("file").unwrap(),
            (".".into(), "file".into())
        );
        assert_eq!(
            parent_and_name("/etc/").unwrap(),
            ("/".into(), "etc".into())
        );
        assert!(parent_and_name("/").is_err());
    }
}
