//! Image store benchmark: pull from a loopback registry and load from an
//! archive of a generated ~200 MB four-layer image, beside `skopeo copy` of the
//! same image in the same run; layer conversion speed (erofs vs ext4); disk
//! used by two images sharing a 100 MB base. Needs root, docker-registry,
//! skopeo, mkfs.erofs, mkfs.ext4 and gzip.
//!
//! `cargo run --release -p skiff-bench --bin image [-- --base-mb 100 --layer-mb 33 --reps 5 --pull-only]`

use std::fs;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use skiff_image::registry::{self, RegistryOptions};
use skiff_image::store::layerdisk;
use skiff_image::store::Compression;
use skiff_image::{archive, tar, unpack, Digest, Reference, Store};

struct Row(String, String, String, String);

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: u64| -> u64 {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let base_mb = arg("--base-mb", 100);
    let layer_mb = arg("--layer-mb", 33);
    let reps = usize::try_from(arg("--reps", 5)).unwrap_or(5);
    for tool in [
        "docker-registry",
        "skopeo",
        "mkfs.erofs",
        "mkfs.ext4",
        "gzip",
    ] {
        if !Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {tool}"))
            .output()?
            .status
            .success()
        {
            bail!("{tool} is missing (apt-get install docker-registry skopeo erofs-utils e2fsprogs gzip)");
        }
    }
    let work = std::env::temp_dir().join(format!("skiff-bench-image-{}", std::process::id()));
    fs::create_dir_all(&work)?;
    let r = run(&work, base_mb, layer_mb, reps);
    let _ = fs::remove_dir_all(&work);
    r
}

fn run(work: &Path, base_mb: u64, layer_mb: u64, reps: usize) -> Result<()> {
    let mut rows = Vec::new();
    eprintln!("generating image: {base_mb} MB base + 3 x {layer_mb} MB layers ...");
    let layout = work.join("layout");
    let (img_a, uncompressed, compressed) =
        write_image(&layout, work, base_mb, layer_mb, "a", "bench:a")?;
    let mb = |b: u64| b as f64 / 1e6;
    rows.push(Row(
        "image".into(),
        format!(
            "4 layers, {:.0} MB tar / {:.0} MB gzip",
            mb(uncompressed),
            mb(compressed)
        ),
        String::new(),
        String::new(),
    ));

    // Registry on loopback, seeded by skopeo.
    let reg = start_registry(work)?;
    let host = format!("127.0.0.1:{}", reg.1);
    let t = Instant::now();
    sh(
        "skopeo",
        &[
            "copy",
            "-q",
            "--dest-tls-verify=false",
            &format!("oci:{}:a", layout.display()),
            &format!("docker://{host}/bench/img:a"),
        ],
    )?;
    let push_s = t.elapsed().as_secs_f64();
    rows.push(Row(
        "skopeo copy layout -> registry".into(),
        secs(push_s),
        rate(compressed, push_s),
        String::new(),
    ));

    // Pull: skiff (download + verify + convert to erofs) vs skopeo (download +
    // verify), alternating, each time into a fresh store / directory.
    let r = Reference::parse(&format!("{host}/bench/img:a"))?;
    let opts = RegistryOptions {
        progress: false,
        ..Default::default()
    };
    let mut pulls = Runs::default();
    let mut pulled = None;
    for i in 0..reps {
        let load = loadavg();
        let store = Store::open(work.join(format!("store-pull-{i}")))?;
        let (t, c) = (Instant::now(), cpu(libc::RUSAGE_SELF));
        let p = registry::pull(&store, &r, &opts)?;
        let skiff_s = t.elapsed().as_secs_f64();
        let skiff_cpu = cpu(libc::RUSAGE_SELF) - c;
        if p.image.id != img_a {
            bail!(
                "pulled image {} differs from generated {}",
                p.image.id,
                img_a
            );
        }
        let dest = work.join(format!("skopeo-pull-{i}"));
        let (t, c) = (Instant::now(), cpu(libc::RUSAGE_CHILDREN));
        sh(
            "skopeo",
            &[
                "copy",
                "-q",
                "--src-tls-verify=false",
                &format!("docker://{host}/bench/img:a"),
                &format!("oci:{}:a", dest.display()),
            ],
        )?;
        let skopeo_s = t.elapsed().as_secs_f64();
        let skopeo_cpu = cpu(libc::RUSAGE_CHILDREN) - c;
        pulls.push([skiff_s, skiff_cpu], [skopeo_s, skopeo_cpu], load);
        if i + 1 < reps {
            let _ = fs::remove_dir_all(&dest);
            let _ = fs::remove_dir_all(store.root());
        } else {
            fs::rename(&dest, work.join("skopeo-pull"))?;
            pulled = Some((store, p));
        }
    }
    let Some((store_a, pulled)) = pulled else {
        bail!("--reps must be at least 1");
    };
    pulls.rows(
        &mut rows,
        "skiff pull (incl. erofs conversion)",
        "skopeo copy registry -> oci dir",
        compressed,
    );
    let skiff_pull = pulls.skiff_median();
    let skopeo_pull = pulls.skopeo_median();
    if std::env::args().any(|a| a == "--pull-only") {
        drop(reg);
        print_table(&rows);
        return Ok(());
    }
    // The same work skiff does (download + unpack) with the usual tools.
    if Command::new("sh")
        .arg("-c")
        .arg("command -v umoci")
        .output()?
        .status
        .success()
    {
        let t = Instant::now();
        sh(
            "umoci",
            &[
                "unpack",
                "--image",
                &format!("{}:a", work.join("skopeo-pull").display()),
                work.join("bundle").to_str().unwrap_or("bundle"),
            ],
        )?;
        let umoci = t.elapsed().as_secs_f64() + skopeo_pull;
        rows.push(Row(
            "  skopeo copy + umoci unpack".into(),
            secs(umoci),
            rate(compressed, umoci),
            format!("skiff {:.2}x faster", umoci / skiff_pull),
        ));
    }

    // Load from an archive.
    let tarball = work.join("img.tar");
    sh(
        "skopeo",
        &[
            "copy",
            "-q",
            &format!("oci:{}:a", layout.display()),
            &format!("oci-archive:{}:a", tarball.display()),
        ],
    )?;
    let mut loads = Runs::default();
    for i in 0..reps {
        let load = loadavg();
        let store = Store::open(work.join(format!("store-load-{i}")))?;
        let (t, c) = (Instant::now(), cpu(libc::RUSAGE_SELF));
        let loaded = archive::load(&store, &tarball)?;
        let skiff_s = t.elapsed().as_secs_f64();
        let skiff_cpu = cpu(libc::RUSAGE_SELF) - c;
        if loaded.first().map(|l| &l.image.id) != Some(&img_a) {
            bail!("loaded image differs");
        }
        let dest = work.join(format!("skopeo-load-{i}"));
        let (t, c) = (Instant::now(), cpu(libc::RUSAGE_CHILDREN));
        sh(
            "skopeo",
            &[
                "copy",
                "-q",
                &format!("oci-archive:{}:a", tarball.display()),
                &format!("oci:{}:a", dest.display()),
            ],
        )?;
        let skopeo_s = t.elapsed().as_secs_f64();
        let skopeo_cpu = cpu(libc::RUSAGE_CHILDREN) - c;
        loads.push([skiff_s, skiff_cpu], [skopeo_s, skopeo_cpu], load);
        let _ = fs::remove_dir_all(&dest);
        let _ = fs::remove_dir_all(store.root());
    }
    loads.rows(
        &mut rows,
        "skiff load -i archive (incl. conversion)",
        "skopeo copy oci-archive -> oci dir",
        compressed,
    );

    // Layer conversion alone, and erofs vs ext4 on the same tree.
    let base = &pulled.image.layers[0];
    let scratch = Store::open(work.join("store-conv"))?;
    let out = work.join("base.erofs");
    let t = Instant::now();
    let stats = layerdisk::convert(
        &scratch,
        Box::new(std::io::BufReader::with_capacity(
            1 << 20,
            fs::File::open(store_a.blob_path(&base.digest))?,
        )),
        Compression::Gzip,
        &base.diff_id,
        &out,
    )?;
    let conv = t.elapsed().as_secs_f64();
    let du = |p: &Path| skiff_image::fsutil::disk_bytes(p);
    rows.push(Row(
        "convert base layer (gunzip + native erofs writer)".into(),
        secs(conv),
        rate(stats.bytes, conv),
        format!("{} entries, {:.1} MB image", stats.entries, mb(du(&out))),
    ));
    // The floor: decompressing and hashing alone.
    let mut gz = flate_reader(&store_a.blob_path(&base.digest))?;
    let t = Instant::now();
    layerdisk::hash_stream(&mut gz)?;
    let gunzip_s = t.elapsed().as_secs_f64();
    rows.push(Row(
        "  of which gunzip + sha256 alone".into(),
        secs(gunzip_s),
        rate(stats.bytes, gunzip_s),
        String::new(),
    ));
    // The previous path: unpack to a directory, then mkfs.erofs 1.5.
    let tree = work.join("tree");
    fs::create_dir_all(&tree)?;
    let gz = flate_reader(&store_a.blob_path(&base.digest))?;
    let t = Instant::now();
    unpack::unpack(gz, &tree, &scratch.limits)?;
    let unpack_s = t.elapsed().as_secs_f64();
    let erofs = work.join("cmp.erofs");
    let t = Instant::now();
    mkfs_erofs(&tree, &erofs)?;
    let erofs_s = t.elapsed().as_secs_f64();
    rows.push(Row(
        "old: gunzip+unpack to dir, mkfs.erofs".into(),
        secs(unpack_s + erofs_s),
        rate(stats.bytes, unpack_s + erofs_s),
        format!(
            "unpack {unpack_s:.2} s + mkfs {erofs_s:.2} s, {:.1} MB image",
            mb(du(&erofs))
        ),
    ));
    let ext4 = work.join("cmp.ext4");
    let t = Instant::now();
    mkfs_ext4(&tree, &ext4, stats.bytes * 13 / 10 + (16 << 20))?;
    let ext4_s = t.elapsed().as_secs_f64();
    rows.push(Row(
        "mkfs.ext4 -d (no journal) of that dir".into(),
        secs(ext4_s),
        rate(stats.bytes, ext4_s),
        format!("{:.1} MB image", mb(du(&ext4))),
    ));

    // Two images sharing the base.
    let layout_b = work.join("layout-b");
    let (img_b, _, _) = write_image(&layout_b, work, base_mb, layer_mb, "b", "bench:b")?;
    let store_s = Store::open(work.join("store-shared"))?;
    archive::load(&store_s, &layout)?;
    let one = dir_bytes(&store_s.root().join("blobs")) + dir_bytes(&store_s.root().join("layers"));
    archive::load(&store_s, &layout_b)?;
    let two = dir_bytes(&store_s.root().join("blobs")) + dir_bytes(&store_s.root().join("layers"));
    let imgs = store_s.images()?;
    if !imgs.iter().any(|i| i.id == img_b) {
        bail!("image b missing");
    }
    rows.push(Row(
        "store: image a alone".into(),
        format!("{:.1} MB", mb(one)),
        String::new(),
        "blobs + layer disks".into(),
    ));
    rows.push(Row(
        "store: images a + b (shared base)".into(),
        format!("{:.1} MB", mb(two)),
        String::new(),
        format!(
            "+{:.1} MB for b (base {base_mb} MB stored once)",
            mb(two - one)
        ),
    ));

    drop(reg);
    print_table(&rows);
    Ok(())
}

/// `mkfs.erofs` 1.5 of an unpacked tree (how layers were built before the
/// native writer), for comparison.
fn mkfs_erofs(tree: &Path, out: &Path) -> Result<()> {
    sh(
        "mkfs.erofs",
        &["--quiet", "-x1", path_str(out)?, path_str(tree)?],
    )?;
    fs::File::open(out)?.sync_all()?;
    Ok(())
}

/// `mkfs.ext4 -d` (no journal) of an unpacked tree, for comparison.
fn mkfs_ext4(tree: &Path, out: &Path, size_bytes: u64) -> Result<()> {
    fs::File::create(out)?.set_len(size_bytes)?;
    sh(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-O",
            "^has_journal",
            "-E",
            "lazy_itable_init=0,root_owner=0:0",
            "-d",
            path_str(tree)?,
            path_str(out)?,
        ],
    )
}

/// Alternating timings of skiff and skopeo doing the same thing, with the
/// 1-minute load average when each pair started.
#[derive(Default)]
struct Runs {
    skiff: Vec<f64>,
    skopeo: Vec<f64>,
    ratio: Vec<f64>,
    load: Vec<f64>,
    /// CPU seconds (user + system) of each side.
    skiff_cpu: Vec<f64>,
    skopeo_cpu: Vec<f64>,
}

impl Runs {
    fn push(&mut self, [skiff, skiff_cpu]: [f64; 2], [skopeo, skopeo_cpu]: [f64; 2], load: f64) {
        self.skiff.push(skiff);
        self.skopeo.push(skopeo);
        self.skiff_cpu.push(skiff_cpu);
        self.skopeo_cpu.push(skopeo_cpu);
        self.ratio.push(skopeo / skiff.max(1e-9));
        self.load.push(load);
    }

    fn skiff_median(&self) -> f64 {
        median(&self.skiff)
    }

    fn skopeo_median(&self) -> f64 {
        median(&self.skopeo)
    }

    /// Median rows for both, then the speed ratio of each pair.
    fn rows(&self, rows: &mut Vec<Row>, skiff: &str, skopeo: &str, bytes: u64) {
        let n = self.skiff.len();
        let (a, b) = (self.skiff_median(), self.skopeo_median());
        rows.push(Row(
            format!("{skiff}, median of {n}"),
            secs(a),
            rate(bytes, a),
            format!(
                "speed {:.2}x skopeo's (median of per-run ratios; range {})",
                median(&self.ratio),
                range(&self.ratio, "x")
            ),
        ));
        rows.push(Row(
            format!("{skopeo}, median of {n}"),
            secs(b),
            rate(bytes, b),
            format!("load avg {}", range(&self.load, "")),
        ));
        rows.push(Row(
            "  CPU time (user + sys), median: skiff / skopeo".into(),
            format!(
                "{:.2} / {:.2} s",
                median(&self.skiff_cpu),
                median(&self.skopeo_cpu)
            ),
            String::new(),
            String::new(),
        ));
        let per_run: Vec<String> = self
            .skiff
            .iter()
            .zip(&self.skopeo)
            .zip(&self.load)
            .map(|((a, b), l)| format!("{a:.2}/{b:.2}@{l:.1}"))
            .collect();
        rows.push(Row(
            "  runs: skiff/skopeo s @ load".into(),
            String::new(),
            String::new(),
            per_run.join(" "),
        ));
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(0.0)
}

fn range(v: &[f64], unit: &str) -> String {
    let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!("{lo:.2}-{hi:.2}{unit}")
}

/// User + system CPU seconds of this process or of its waited-for children.
fn cpu(who: libc::c_int) -> f64 {
    // SAFETY: rusage is plain integers; all-zero is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage only writes the struct it is given.
    if unsafe { libc::getrusage(who, &mut ru) } != 0 {
        return f64::NAN;
    }
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn loadavg() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(f64::NAN)
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str().context("non-UTF-8 path")
}

fn secs(s: f64) -> String {
    format!("{s:.2} s")
}

fn rate(bytes: u64, s: f64) -> String {
    format!("{:.0} MB/s", bytes as f64 / 1e6 / s.max(1e-9))
}

fn print_table(rows: &[Row]) {
    let head = Row(
        "measurement".into(),
        "value".into(),
        "rate".into(),
        "note".into(),
    );
    let all: Vec<&Row> = std::iter::once(&head).chain(rows).collect();
    let w = |f: fn(&Row) -> &String| all.iter().map(|r| f(r).chars().count()).max().unwrap_or(0);
    let (w0, w1, w2) = (w(|r| &r.0), w(|r| &r.1), w(|r| &r.2));
    let mut out = std::io::stdout().lock();
    for r in all {
        let _ = writeln!(out, "{:<w0$}  {:>w1$}  {:>w2$}  {}", r.0, r.1, r.2, r.3);
    }
}

fn sh(cmd: &str, args: &[&str]) -> Result<()> {
    let o = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("run {cmd}"))?;
    if !o.status.success() {
        bail!("{cmd} {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    }
    Ok(())
}

fn flate_reader(p: &Path) -> Result<Box<dyn std::io::Read>> {
    Ok(skiff_image::compression::decompress(
        Box::new(fs::File::open(p)?),
        Compression::Gzip,
    )?)
}

fn dir_bytes(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            total += if path.is_dir() {
                dir_bytes(&path)
            } else {
                skiff_image::fsutil::disk_bytes(&path)
            };
        }
    }
    total
}

/// Deterministic filler: half pseudo-random (incompressible), half text.
fn filler(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(len);
    while v.len() < len {
        if (v.len() / 65536) % 2 == 0 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            v.extend_from_slice(&x.to_le_bytes());
        } else {
            v.extend_from_slice(
                format!("line {} of some configuration text\n", v.len()).as_bytes(),
            );
        }
    }
    v.truncate(len);
    v
}

/// A layer tar of `mb` megabytes in files of 4 KB .. 4 MB.
fn layer_tar(path: &Path, seed: u64, mb: u64) -> Result<()> {
    let f = fs::File::create(path)?;
    let mut b = tar::Builder::new(std::io::BufWriter::new(f));
    let mut left = (mb << 20) as usize;
    let mut i = 0u64;
    while left > 0 {
        let size = [4096usize, 65536, 1 << 20, 4 << 20][(i % 4) as usize].min(left);
        let data = filler(seed.wrapping_mul(1_000_003).wrapping_add(i), size);
        let mut h = tar::Header::new_gnu();
        h.set_size(size as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        b.append_data(&mut h, format!("data/{seed}/d{}/f{i}", i % 16), &data[..])?;
        left -= size;
        i += 1;
    }
    b.into_inner()?.flush()?;
    Ok(())
}

/// Write an OCI layout with a shared base (seed 1) and three layers unique
/// to `variant`; returns the image ID and total uncompressed/compressed bytes.
fn write_image(
    layout: &Path,
    work: &Path,
    base_mb: u64,
    layer_mb: u64,
    variant: &str,
    _name: &str,
) -> Result<(Digest, u64, u64)> {
    use std::io::Read;
    let blobs = layout.join("blobs/sha256");
    fs::create_dir_all(&blobs)?;
    let vseed = u64::from(variant.as_bytes()[0]) * 100;
    let mut diff_ids = Vec::new();
    let mut descs = Vec::new();
    let (mut unc, mut comp) = (0, 0);
    for (i, (seed, mb)) in [
        (1, base_mb),
        (vseed + 2, layer_mb),
        (vseed + 3, layer_mb),
        (vseed + 4, layer_mb),
    ]
    .into_iter()
    .enumerate()
    {
        let tarp = work.join(format!("layer-{variant}-{i}.tar"));
        let gzp = work.join(format!("layer-{variant}-{i}.tar.gz"));
        if !gzp.exists() {
            layer_tar(&tarp, seed, mb)?;
            let out = fs::File::create(&gzp)?;
            let st = Command::new("gzip")
                .arg("-1")
                .arg("-n")
                .arg("-c")
                .arg(&tarp)
                .stdout(out)
                .status()?;
            if !st.success() {
                bail!("gzip failed");
            }
        }
        let mut tar_bytes = Vec::new();
        if tarp.exists() {
            fs::File::open(&tarp)?.read_to_end(&mut tar_bytes)?;
        } else {
            flate_reader(&gzp)?.read_to_end(&mut tar_bytes)?;
        }
        let diff = Digest::of(&tar_bytes);
        let gz = fs::read(&gzp)?;
        let d = Digest::of(&gz);
        fs::write(blobs.join(d.hex()), &gz)?;
        unc += tar_bytes.len() as u64;
        comp += gz.len() as u64;
        diff_ids.push(diff.to_string());
        descs.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d.as_str(), "size": gz.len()}));
        let _ = fs::remove_file(&tarp);
    }
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "created": "2024-01-01T00:00:00Z",
        "config": {"Cmd": ["sh"]}, "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))?;
    let cd = Digest::of(&config);
    fs::write(blobs.join(cd.hex()), &config)?;
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd.as_str(), "size": config.len()},
        "layers": descs,
    }))?;
    let md = Digest::of(&manifest);
    fs::write(blobs.join(md.hex()), &manifest)?;
    fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )?;
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md.as_str(), "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": variant}}]}))?,
    )?;
    Ok((cd, unc, comp))
}

struct RegistryProc(Child, u16, PathBuf);

impl Drop for RegistryProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = fs::remove_dir_all(&self.2);
    }
}

fn start_registry(work: &Path) -> Result<RegistryProc> {
    let dir = work.join("registry");
    fs::create_dir_all(&dir)?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let cfg = dir.join("config.yml");
    fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("data").display()
        ),
    )?;
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let proc = RegistryProc(child, port, dir);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("registry did not start");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(proc)
}
