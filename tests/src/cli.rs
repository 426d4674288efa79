//! A `skiff` command line with a private `--root` (nothing touches /var/lib/skiff):
//! run commands, insist on exit codes and one-line errors, and on drop remove every
//! container left (detached ones outlive the CLI).

// Test harness: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::{prerequisite, skiff_bin, vm_ready};

pub struct Skiff {
    pub root: tempfile::TempDir,
}

impl Skiff {
    /// A fresh root under /tmp named `prefix...`, or `None` (after saying why) when
    /// this machine cannot boot microVMs or lacks busybox-static.
    pub fn new(test: &str, prefix: &str) -> Option<Self> {
        if !prerequisite(test, vm_ready()) {
            return None;
        }
        let busybox = if Path::new("/bin/busybox").is_file() {
            Ok(())
        } else {
            Err("/bin/busybox missing (apt-get install busybox-static)".to_owned())
        };
        if !prerequisite(test, busybox) {
            return None;
        }
        Some(Self {
            root: tempfile::Builder::new()
                .prefix(prefix)
                .tempdir_in("/tmp")
                .unwrap(),
        })
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(skiff_bin());
        c.arg("--root").arg(self.root.path()).args(args);
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with_input(args, None)
    }

    pub fn run_with_input(&self, args: &[&str], input: Option<&[u8]>) -> Output {
        let mut child = self
            .command(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(bytes) = input {
            let mut w = child.stdin.take().unwrap();
            w.write_all(bytes).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// Runs and insists on exit status `code`; returns stdout.
    pub fn expect(&self, args: &[&str], code: i32) -> String {
        let out = self.run(args);
        assert_eq!(
            out.status.code(),
            Some(code),
            "skiff {args:?}\nstdout: {}\nstderr: {}",
            text(&out.stdout),
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    pub fn ok(&self, args: &[&str]) -> String {
        self.expect(args, 0)
    }

    /// A refused command: exit 125 and exactly one line on stderr.
    pub fn refused(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(125), "skiff {args:?}: {err}");
        let lines: Vec<&str> = err
            .lines()
            .filter(|l| !l.starts_with("Unable to find image"))
            .collect();
        assert_eq!(
            lines.len(),
            1,
            "skiff {args:?}: one error line expected: {err}"
        );
        err
    }

    pub fn inspect(&self, name: &str, format: &str) -> String {
        self.ok(&["inspect", "-f", format, name]).trim().to_owned()
    }

    pub fn ids(&self) -> Vec<String> {
        self.ok(&["ps", "-aq"]).lines().map(str::to_owned).collect()
    }
}

impl Drop for Skiff {
    fn drop(&mut self) {
        // Detached containers outlive the CLI: stop them before the root goes away.
        let _ = self.command(&["ps", "-aq"]).output().map(|o| {
            let ids: Vec<String> = text(&o.stdout).lines().map(str::to_owned).collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids.iter().map(String::as_str));
                let _ = self.command(&args).output();
            }
        });
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
