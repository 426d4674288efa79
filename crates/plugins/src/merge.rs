//! Merging the adjustments of several plugins. Plugins are applied in configured order;
//! setting the same thing twice to the same value is fine, to different values is a
//! conflict that names both plugins. Mounts conflict on their destination. Hooks are
//! appended in plugin order and never conflict.

use std::collections::BTreeMap;

use crate::model::Adjustments;

/// Accumulates adjustments, remembering which plugin set what.
#[derive(Default)]
pub(crate) struct Merger {
    merged: Adjustments,
    owners: BTreeMap<String, String>,
}

impl Merger {
    /// Add one plugin's adjustments; on conflict, say what and who.
    pub(crate) fn add(&mut self, plugin: &str, adj: &Adjustments) -> Result<(), String> {
        // Check everything first so a conflicting plugin leaves nothing half-merged.
        let mut staged = Vec::new();
        let mut claim = |field: String, new: String, current: Option<String>| {
            if let Some(current) = current {
                if current != new {
                    let owner = self.owners.get(&field).map_or("?", String::as_str);
                    return Err(format!(
                        "plugins '{owner}' and '{plugin}' conflict: {field} set to {current:.80?} and {new:.80?}"
                    ));
                }
            }
            staged.push(field);
            Ok(())
        };
        for (k, v) in &adj.env {
            claim(
                format!("env {k}"),
                v.clone(),
                self.merged.env.get(k).cloned(),
            )?;
        }
        for (k, v) in &adj.annotations {
            claim(
                format!("annotation {k}"),
                v.clone(),
                self.merged.annotations.get(k).cloned(),
            )?;
        }
        for (k, v) in &adj.labels {
            claim(
                format!("label {k}"),
                v.clone(),
                self.merged.labels.get(k).cloned(),
            )?;
        }
        for m in &adj.mounts {
            let current = self
                .merged
                .mounts
                .iter()
                .find(|x| x.destination == m.destination)
                .map(|x| format!("{x:?}"));
            claim(
                format!("mount {}", m.destination),
                format!("{m:?}"),
                current,
            )?;
        }
        let opt = |v: Option<String>| v;
        let scalars = [
            (
                "vm memory-mib",
                adj.vm.memory_mib.map(|v| v.to_string()),
                self.merged.vm.memory_mib.map(|v| v.to_string()),
            ),
            (
                "vm vcpus",
                adj.vm.vcpus.map(|v| v.to_string()),
                self.merged.vm.vcpus.map(|v| v.to_string()),
            ),
            (
                "resources memory-limit-bytes",
                adj.resources.memory_limit_bytes.map(|v| v.to_string()),
                self.merged
                    .resources
                    .memory_limit_bytes
                    .map(|v| v.to_string()),
            ),
            (
                "resources cpu-shares",
                adj.resources.cpu_shares.map(|v| v.to_string()),
                self.merged.resources.cpu_shares.map(|v| v.to_string()),
            ),
            (
                "resources cpu-quota",
                adj.resources.cpu_quota.map(|v| v.to_string()),
                self.merged.resources.cpu_quota.map(|v| v.to_string()),
            ),
            (
                "resources cpu-period",
                adj.resources.cpu_period.map(|v| v.to_string()),
                self.merged.resources.cpu_period.map(|v| v.to_string()),
            ),
            (
                "resources pids-limit",
                adj.resources.pids_limit.map(|v| v.to_string()),
                self.merged.resources.pids_limit.map(|v| v.to_string()),
            ),
        ];
        for (field, new, current) in scalars {
            if let Some(new) = new {
                claim(field.to_string(), new, opt(current))?;
            }
        }

        for field in staged {
            self.owners
                .entry(field)
                .or_insert_with(|| plugin.to_string());
        }
        let m = &mut self.merged;
        m.env.extend(adj.env.clone());
        m.annotations.extend(adj.annotations.clone());
        m.labels.extend(adj.labels.clone());
        for mount in &adj.mounts {
            if !m.mounts.iter().any(|x| x.destination == mount.destination) {
                m.mounts.push(mount.clone());
            }
        }
        m.hooks.extend(adj.hooks.iter().cloned());
        m.vm.memory_mib = m.vm.memory_mib.or(adj.vm.memory_mib);
        m.vm.vcpus = m.vm.vcpus.or(adj.vm.vcpus);
        let (r, a) = (&mut m.resources, &adj.resources);
        r.memory_limit_bytes = r.memory_limit_bytes.or(a.memory_limit_bytes);
        r.cpu_shares = r.cpu_shares.or(a.cpu_shares);
        r.cpu_quota = r.cpu_quota.or(a.cpu_quota);
        r.cpu_period = r.cpu_period.or(a.cpu_period);
        r.pids_limit = r.pids_limit.or(a.pids_limit);
        Ok(())
    }

    pub(crate) fn finish(self) -> Adjustments {
        self.merged
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Hook, HookStage, Mount};

    fn env(k: &str, v: &str) -> Adjustments {
        let mut a = Adjustments::default();
        a.env.insert(k.into(), v.into());
        a
    }

    #[test]
    fn disjoint_and_equal_settings_merge() {
        let mut m = Merger::default();
        m.add("a", &env("X", "1")).unwrap();
        m.add("b", &env("Y", "2")).unwrap();
        m.add("c", &env("X", "1")).unwrap();
        let out = m.finish();
        assert_eq!(out.env.len(), 2);
    }

    #[test]
    fn conflicts_name_both_plugins() {
        let mut m = Merger::default();
        m.add("first", &env("X", "1")).unwrap();
        let err = m.add("second", &env("X", "2")).unwrap_err();
        assert!(err.contains("'first'") && err.contains("'second'"), "{err}");
        assert!(err.contains("env X"), "{err}");

        let mut vm = Adjustments::default();
        vm.vm.memory_mib = Some(512);
        let mut vm2 = Adjustments::default();
        vm2.vm.memory_mib = Some(256);
        let mut m = Merger::default();
        m.add("a", &vm).unwrap();
        let err = m.add("b", &vm2).unwrap_err();
        assert!(
            err.contains("'a' and 'b'") && err.contains("memory"),
            "{err}"
        );
    }

    #[test]
    fn mounts_conflict_on_destination_hooks_append_in_order() {
        let mount = |src: &str| Mount {
            destination: "/d".into(),
            source: src.into(),
            kind: "bind".into(),
            options: vec![],
        };
        let hook = |p: &str| Hook {
            stage: HookStage::Poststop,
            path: p.into(),
            args: vec![],
            env: vec![],
            timeout_secs: None,
        };
        let mut a = Adjustments::default();
        a.mounts.push(mount("/x"));
        a.hooks.push(hook("/a"));
        let mut b = Adjustments::default();
        b.hooks.push(hook("/b"));
        let mut m = Merger::default();
        m.add("a", &a).unwrap();
        m.add("b", &b).unwrap();
        let mut c = Adjustments::default();
        c.mounts.push(mount("/y"));
        assert!(m.add("c", &c).unwrap_err().contains("mount /d"));
        let out = m.finish();
        let paths: Vec<_> = out.hooks.iter().map(|h| h.path.as_str()).collect();
        assert_eq!(paths, ["/a", "/b"]);
        assert_eq!(out.mounts.len(), 1);
    }
}
