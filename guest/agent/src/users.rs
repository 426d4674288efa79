//! `-u USER[:GROUP]` by name, as Docker resolves it: against the container's own
//! /etc/passwd and /etc/group. A numeric user not in passwd gets group 0; a user's
//! supplementary groups are the groups that list it as a member.

use std::io;
use std::path::Path;

use skiff_proto::User;

/// Caps how much of a passwd or group file is read (they come from the image).
const MAX_FILE: u64 = 4 << 20;

fn read_db(rootfs: &Path, name: &str) -> Vec<Vec<String>> {
    use std::io::Read;
    let mut text = String::new();
    if let Ok(f) = std::fs::File::open(rootfs.join("etc").join(name)) {
        let _ = f.take(MAX_FILE).read_to_string(&mut text);
    }
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(':').map(str::to_owned).collect::<Vec<_>>())
        .filter(|f| f.len() >= 4)
        .collect()
}

fn not_found(what: &str, name: &str, file: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("unable to find {what} {name}: no matching entries in {file} file"),
    )
}

pub fn resolve(rootfs: &Path, spec: &str, umask: Option<u32>) -> io::Result<User> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read_db(rootfs, "passwd");
    let groups = read_db(rootfs, "group");
    let entry = passwd
        .iter()
        .find(|f| f[0] == user || (user.parse::<u32>().is_ok() && f[2] == user));
    let (uid, mut gid, name) = match (user.parse::<u32>(), entry) {
        (Ok(uid), Some(e)) => (uid, e[3].parse().unwrap_or(0), Some(e[0].clone())),
        (Ok(uid), None) => (uid, 0, None),
        (Err(_), Some(e)) => (
            e[2].parse()
                .map_err(|_| not_found("user", user, "passwd"))?,
            e[3].parse().unwrap_or(0),
            Some(e[0].clone()),
        ),
        (Err(_), None) => return Err(not_found("user", user, "passwd")),
    };
    if let Some(g) = group {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| not_found("group", g, "group"))?,
        };
    }
    let additional_gids = match (&name, group) {
        (Some(n), None) => groups
            .iter()
            .filter(|f| f[3].split(',').any(|m| m == n))
            .filter_map(|f| f[2].parse().ok())
            .filter(|g| *g != gid)
            .collect(),
        _ => Vec::new(),
    };
    Ok(User {
        uid,
        gid,
        additional_gids,
        umask,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_numbers_and_groups() {
        let dir = std::env::temp_dir().join(format!("skiff-users-test-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("etc")).unwrap();
        std::fs::write(
            dir.join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nweb:x:33:34::/:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("etc/group"),
            "root:x:0:\nwww:x:34:\nextra:x:50:web,x\n",
        )
        .unwrap();
        let r = |s: &str| resolve(&dir, s, None);
        let u = r("web").unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids), (33, 34, vec![50]));
        assert_eq!(r("33").unwrap().gid, 34);
        assert_eq!((r("1000").unwrap().uid, r("1000").unwrap().gid), (1000, 0));
        assert_eq!(r("web:extra").unwrap().gid, 50);
        assert_eq!(r("web:7").unwrap().gid, 7);
        assert!(r("nobody")
            .unwrap_err()
            .to_string()
            .contains("no matching entries in passwd"));
        assert!(r("web:nogroup").is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
