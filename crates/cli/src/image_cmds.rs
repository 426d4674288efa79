//! The image commands of `skiff`: pull, push, images, tag, rmi, load, save,
//! import, `image ...` and `system df`. They parse and print; skiff-image acts.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::json;
use skiff_image::fsutil::{human_ago, human_size, now_unix};
use skiff_image::registry::{self, RegistryOptions};
use skiff_image::{archive, busybox, store, usage, Image, Reference, Store};

#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Download an image from a registry
    Pull(PullArgs),
    /// Upload an image to a registry
    Push(PushArgs),
    /// List images
    Images(ImagesArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(TagArgs),
    /// Remove one or more images
    Rmi(RmiArgs),
    /// Load images from an OCI layout or docker-archive (tar file or directory)
    Load(LoadArgs),
    /// Save images to a tar archive (OCI layout + docker-archive)
    Save(SaveArgs),
    /// Import a root filesystem tarball as a one-layer image
    Import(ImportArgs),
    /// Manage images
    #[command(subcommand)]
    Image(ImageSubcommand),
    /// Manage skiff
    #[command(subcommand)]
    System(SystemSubcommand),
}

#[derive(Subcommand, Debug)]
pub enum ImageSubcommand {
    /// List images
    #[command(alias = "list")]
    Ls(ImagesArgs),
    /// Display detailed information on one or more images (JSON)
    Inspect(InspectArgs),
    /// Show the history of an image
    History(HistoryArgs),
    /// Remove unused images (dangling ones; all unused with -a)
    Prune(PruneArgs),
    /// Remove one or more images
    #[command(alias = "remove")]
    Rm(RmiArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE
    Tag(TagArgs),
    /// Build the offline starter image `busybox:latest` from Debian's busybox-static
    BuildBusybox(BuildBusyboxArgs),
}

#[derive(Subcommand, Debug)]
pub enum SystemSubcommand {
    /// Show disk usage of images (shared vs unique bytes)
    Df(DfArgs),
}

#[derive(Args, Debug)]
pub struct RegistryArgs {
    /// Allow plain HTTP to this registry (loopback registries always may)
    #[arg(long = "insecure-registry", value_name = "HOST[:PORT]")]
    insecure: Vec<String>,
    /// Blobs transferred at once
    #[arg(long, default_value_t = 3)]
    parallel: usize,
}

impl RegistryArgs {
    fn options(&self, quiet: bool) -> RegistryOptions {
        let mut o = RegistryOptions::default();
        o.insecure.extend(self.insecure.iter().cloned());
        o.parallel = self.parallel.max(1);
        o.progress = !quiet;
        o
    }
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// Suppress verbose output
    #[arg(short, long)]
    quiet: bool,
    /// Platform (only linux/amd64 is supported)
    #[arg(long, default_value = "linux/amd64")]
    platform: String,
    #[command(flatten)]
    registry: RegistryArgs,
    /// NAME[:TAG|@DIGEST]
    name: String,
}

#[derive(Args, Debug)]
pub struct PushArgs {
    #[arg(short, long)]
    quiet: bool,
    #[command(flatten)]
    registry: RegistryArgs,
    /// NAME[:TAG] of a stored image (its registry part says where to push)
    name: String,
}

#[derive(Args, Debug, Default)]
pub struct ImagesArgs {
    /// Only show image IDs
    #[arg(short, long)]
    quiet: bool,
    /// Show digests
    #[arg(long)]
    digests: bool,
    /// Output format: table (default) or json (one object per line)
    #[arg(long)]
    format: Option<String>,
    /// Don't truncate IDs
    #[arg(long)]
    no_trunc: bool,
    /// Show all images (accepted for Docker compatibility)
    #[arg(short, long)]
    all: bool,
    /// Only images of this repository
    repository: Option<String>,
}

#[derive(Args, Debug)]
pub struct TagArgs {
    source: String,
    target: String,
}

#[derive(Args, Debug)]
pub struct RmiArgs {
    /// Remove even if tagged several times or used by containers
    #[arg(short, long)]
    force: bool,
    #[arg(required = true)]
    images: Vec<String>,
}

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Read from this tar archive or OCI layout directory instead of stdin
    #[arg(short, long)]
    input: Option<PathBuf>,
    #[arg(short, long)]
    quiet: bool,
}

#[derive(Args, Debug)]
pub struct SaveArgs {
    /// Write to this file instead of stdout
    #[arg(short, long)]
    output: Option<PathBuf>,
    #[arg(required = true)]
    images: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Rootfs tarball (plain, gzip or zstd), or - for stdin
    file: String,
    /// REPOSITORY[:TAG]
    name: Option<String>,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    #[arg(required = true)]
    images: Vec<String>,
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    #[arg(short, long)]
    quiet: bool,
    #[arg(long)]
    no_trunc: bool,
    image: String,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Remove all images not used by containers, not just dangling ones
    #[arg(short, long)]
    all: bool,
    /// Do not prompt (skiff never prompts; accepted for Docker compatibility)
    #[arg(short, long)]
    force: bool,
}

#[derive(Args, Debug)]
pub struct BuildBusyboxArgs {
    /// The static busybox binary to use
    #[arg(long, default_value = busybox::DEFAULT_BUSYBOX)]
    from: PathBuf,
    /// Name to tag the image with
    #[arg(short, long, default_value = busybox::DEFAULT_NAME)]
    tag: String,
}

#[derive(Args, Debug)]
pub struct DfArgs {
    /// Show per-image usage
    #[arg(short, long)]
    verbose: bool,
    /// Output format: table (default) or json
    #[arg(long)]
    format: Option<String>,
}

/// Run an image command against the store at `root` (default: see
/// `Store::default_root`). Returns the process exit code.
pub fn run(cmd: ImageCommand, root: Option<PathBuf>) -> anyhow::Result<i32> {
    let root = root.unwrap_or_else(Store::default_root);
    let store =
        Store::open(&root).with_context(|| format!("open image store {}", root.display()))?;
    match cmd {
        ImageCommand::Pull(a) => pull(&store, a),
        ImageCommand::Push(a) => push(&store, a),
        ImageCommand::Images(a) | ImageCommand::Image(ImageSubcommand::Ls(a)) => images(&store, a),
        ImageCommand::Tag(a) | ImageCommand::Image(ImageSubcommand::Tag(a)) => {
            store.tag(&a.source, &a.target)?;
            Ok(0)
        }
        ImageCommand::Rmi(a) | ImageCommand::Image(ImageSubcommand::Rm(a)) => rmi(&store, a),
        ImageCommand::Load(a) => load(&store, a),
        ImageCommand::Save(a) => save(&store, a),
        ImageCommand::Import(a) => import(&store, a),
        ImageCommand::Image(ImageSubcommand::Inspect(a)) => inspect(&store, a),
        ImageCommand::Image(ImageSubcommand::History(a)) => history(&store, a),
        ImageCommand::Image(ImageSubcommand::Prune(a)) => {
            let (deleted, freed) = store.prune(a.all)?;
            if !deleted.is_empty() {
                println!("Deleted Images:");
                for d in deleted {
                    println!("deleted: {d}");
                }
                println!();
            }
            println!("Total reclaimed space: {}", human_size(freed));
            Ok(0)
        }
        ImageCommand::Image(ImageSubcommand::BuildBusybox(a)) => {
            let img = busybox::build(&store, &a.from, &a.tag)?;
            println!("{}", img.id);
            Ok(0)
        }
        ImageCommand::System(SystemSubcommand::Df(a)) => df(&store, a),
    }
}

fn pull(store: &Store, a: PullArgs) -> anyhow::Result<i32> {
    if a.platform != "linux/amd64" {
        bail!("only --platform linux/amd64 is supported");
    }
    let r = Reference::parse(&a.name)?;
    let shown = familiar(&r);
    if !a.quiet {
        println!(
            "{}: Pulling from {}",
            r.tag.as_deref().unwrap_or(&r.manifest_ref()),
            r.familiar_name()
        );
    }
    let pulled = match registry::pull(store, &r, &a.registry.options(a.quiet)) {
        Ok(p) => p,
        Err(e @ skiff_image::Error::Registry { .. }) if r.familiar_name() == "busybox" => {
            return Err(anyhow::Error::new(e).context(
                "no registry reachable for busybox; build the offline starter image with `skiff image build-busybox`",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    // Admission by the plugins: a denied image does not stay in the store.
    if let Err(e) = skiff_engine::policy::get()?.admit_image(&r.to_string(), &pulled.image) {
        let _ = store.remove(&r.to_string(), true);
        return Err(e.into());
    }
    if a.quiet {
        println!("{shown}");
    } else {
        println!("Digest: {}", pulled.digest);
        if pulled.layers_fetched == 0 {
            println!("Status: Image is up to date for {shown}");
        } else {
            println!("Status: Downloaded newer image for {shown}");
        }
        println!("{r}");
    }
    Ok(0)
}

fn push(store: &Store, a: PushArgs) -> anyhow::Result<i32> {
    let r = Reference::parse(&a.name)?;
    let d = registry::push(store, &a.name, &r, &a.registry.options(a.quiet))?;
    let size = store.blob_size(&d).unwrap_or(0);
    println!(
        "{}: digest: {d} size: {size}",
        r.tag.as_deref().unwrap_or("latest")
    );
    Ok(0)
}

fn familiar(r: &Reference) -> String {
    let mut s = r.familiar_name();
    if let Some(t) = &r.tag {
        s = format!("{s}:{t}");
    }
    if let Some(d) = &r.digest {
        s = format!("{s}@{d}");
    }
    s
}

fn image_size(store: &Store, i: &Image) -> u64 {
    i.layers
        .iter()
        .map(|l| {
            std::fs::metadata(skiff_image::layerdisk::disk_path(store, l)).map_or(0, |m| m.len())
        })
        .sum()
}

fn images(store: &Store, a: ImagesArgs) -> anyhow::Result<i32> {
    let json = match a.format.as_deref() {
        None | Some("table") => false,
        Some("json") => true,
        Some(f) => bail!("unsupported --format {f:?} (table or json)"),
    };
    let filter = a.repository.as_deref().map(Reference::parse).transpose()?;
    let now = now_unix();
    let mut rows: Vec<[String; 7]> = Vec::new();
    let mut ids_seen = std::collections::BTreeSet::new();
    for i in store.images()? {
        let id = if a.no_trunc {
            i.id.to_string()
        } else {
            i.id.short().to_owned()
        };
        let created = store::created_unix(&i);
        let size = image_size(store, &i);
        let names: Vec<(String, String, String)> = if i.tags.is_empty() {
            vec![("<none>".into(), "<none>".into(), String::new())]
        } else {
            i.tags
                .iter()
                .filter(|t| {
                    filter.as_ref().is_none_or(|f| {
                        f.name() == t.name()
                            && (a.repository.as_deref().is_some_and(|r| !r.contains(':'))
                                || f.tag == t.tag)
                    })
                })
                .map(|t| {
                    (
                        t.familiar_name(),
                        t.tag.clone().unwrap_or_default(),
                        t.name(),
                    )
                })
                .collect()
        };
        if filter.is_some() && i.tags.is_empty() {
            continue;
        }
        for (repo, tag, full) in names {
            let digest = i
                .record
                .repo_digests
                .iter()
                .find(|rd| rd.split('@').next() == Some(full.as_str()))
                .and_then(|rd| rd.split('@').nth(1))
                .unwrap_or("<none>")
                .to_owned();
            if a.quiet {
                if ids_seen.insert(id.clone()) {
                    println!("{id}");
                }
                continue;
            }
            rows.push([
                repo,
                tag,
                digest,
                id.clone(),
                human_ago(created, now),
                human_size(size),
                fsutil_rfc(created),
            ]);
        }
    }
    if a.quiet {
        return Ok(0);
    }
    let mut out = std::io::stdout().lock();
    if json {
        for r in rows {
            let v = json!({"Repository": r[0], "Tag": r[1], "Digest": r[2], "ID": r[3], "CreatedSince": r[4], "Size": r[5], "CreatedAt": r[6]});
            writeln!(out, "{v}")?;
        }
        return Ok(0);
    }
    let mut table: Vec<Vec<String>> = Vec::new();
    let mut head = vec!["REPOSITORY", "TAG"];
    if a.digests {
        head.push("DIGEST");
    }
    head.extend(["IMAGE ID", "CREATED", "SIZE"]);
    table.push(head.iter().map(|s| s.to_string()).collect());
    for r in rows {
        let mut row = vec![r[0].clone(), r[1].clone()];
        if a.digests {
            row.push(r[2].clone());
        }
        row.extend([r[3].clone(), r[4].clone(), r[5].clone()]);
        table.push(row);
    }
    print_table(&mut out, &table)?;
    Ok(0)
}

fn fsutil_rfc(t: u64) -> String {
    skiff_image::fsutil::rfc3339(t)
}

fn print_table(out: &mut dyn Write, rows: &[Vec<String>]) -> anyhow::Result<()> {
    let cols = rows.first().map_or(0, Vec::len);
    let widths: Vec<usize> = (0..cols)
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let mut line = String::new();
        for (c, cell) in r.iter().enumerate() {
            if c + 1 == cols {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<w$}   ", w = widths[c]));
            }
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

fn rmi(store: &Store, a: RmiArgs) -> anyhow::Result<i32> {
    let mut code = 0;
    for i in &a.images {
        match store.remove(i, a.force) {
            Ok(lines) => lines.iter().for_each(|l| println!("{l}")),
            Err(e) => {
                eprintln!("Error response from daemon: {e}");
                code = 1;
            }
        }
    }
    Ok(code)
}

fn load(store: &Store, a: LoadArgs) -> anyhow::Result<i32> {
    let loaded = match &a.input {
        Some(p) => archive::load(store, p)?,
        None => {
            use std::io::IsTerminal;
            if std::io::stdin().is_terminal() {
                bail!("requested load from stdin, but stdin is empty (use -i FILE)");
            }
            archive::load_stream(store, Box::new(std::io::stdin()))?
        }
    };
    let policy = skiff_engine::policy::get()?;
    for l in &loaded {
        let reference = l
            .names
            .first()
            .map_or_else(|| l.image.id.to_string(), ToString::to_string);
        if let Err(e) = policy.admit_image(&reference, &l.image) {
            for other in &loaded {
                for n in &other.names {
                    let _ = store.remove(&n.to_string(), true);
                }
                let _ = store.remove(&other.image.id.to_string(), true);
            }
            return Err(e.into());
        }
    }
    for l in loaded {
        if l.names.is_empty() {
            println!("Loaded image ID: {}", l.image.id);
        }
        for n in l.names {
            println!("Loaded image: {}", familiar(&n));
        }
    }
    Ok(0)
}

fn save(store: &Store, a: SaveArgs) -> anyhow::Result<i32> {
    match &a.output {
        Some(p) => {
            // Write beside the target and rename: no half-written archive on failure.
            let dir = p
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(std::path::Path::new("."));
            let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
            {
                let mut w = std::io::BufWriter::with_capacity(1 << 20, tmp.as_file_mut());
                archive::save(store, &a.images, &mut w)?;
                w.flush()?;
            }
            use std::os::unix::fs::PermissionsExt;
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))?;
            tmp.persist(p)
                .with_context(|| format!("write {}", p.display()))?;
        }
        None => {
            use std::io::IsTerminal;
            if std::io::stdout().is_terminal() {
                bail!("refusing to write an archive to a terminal (use -o FILE or redirect)");
            }
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            archive::save(store, &a.images, &mut out)?;
            out.flush()?;
        }
    }
    Ok(0)
}

fn import(store: &Store, a: ImportArgs) -> anyhow::Result<i32> {
    let tags: Vec<Reference> = a
        .name
        .as_deref()
        .map(Reference::parse)
        .transpose()?
        .into_iter()
        .collect();
    let input: Box<dyn std::io::Read> = if a.file == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(&a.file).with_context(|| format!("open {}", a.file))?)
    };
    let img = archive::import(store, input, &tags)?;
    println!("{}", img.id);
    Ok(0)
}

fn inspect_json(store: &Store, i: &Image) -> serde_json::Value {
    let c = &i.config_json;
    json!({
        "Id": i.id.as_str(),
        "RepoTags": i.tags.iter().map(familiar).collect::<Vec<_>>(),
        "RepoDigests": i.record.repo_digests.iter().filter_map(|rd| Reference::parse(rd).ok().map(|r| familiar(&r))).collect::<Vec<_>>(),
        "Created": c.get("created").cloned().unwrap_or(serde_json::Value::Null),
        "Author": c.get("author").cloned().unwrap_or(json!("")),
        "Architecture": c.get("architecture").cloned().unwrap_or(json!("")),
        "Os": c.get("os").cloned().unwrap_or(json!("")),
        "Size": image_size(store, i),
        "Config": c.get("config").cloned().unwrap_or(json!({})),
        "RootFS": {"Type": "layers", "Layers": i.layers.iter().map(|l| l.diff_id.as_str()).collect::<Vec<_>>()},
        "Manifest": {"Digest": i.manifest_digest.as_str(), "Layers": i.layers},
        "LayerDisks": i.layers.iter().map(|l| skiff_image::layerdisk::disk_path(store, l)).collect::<Vec<_>>(),
    })
}

fn inspect(store: &Store, a: InspectArgs) -> anyhow::Result<i32> {
    let mut out = Vec::new();
    let mut code = 0;
    for name in &a.images {
        match store.image(name) {
            Ok(i) => out.push(inspect_json(store, &i)),
            Err(e) => {
                eprintln!("Error: {e}");
                code = 1;
            }
        }
    }
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(code)
}

fn history(store: &Store, a: HistoryArgs) -> anyhow::Result<i32> {
    let i = store.image(&a.image)?;
    let hist = i.config.history().clone().unwrap_or_default();
    let now = now_unix();
    let mut layer_sizes = i.layers.iter().map(|l| l.size);
    let mut rows = Vec::new();
    for h in &hist {
        let size = if h.empty_layer().unwrap_or(false) {
            0
        } else {
            layer_sizes.next().unwrap_or(0)
        };
        rows.push((h, size));
    }
    rows.reverse();
    let mut table = vec![["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"]
        .map(String::from)
        .to_vec()];
    for (n, (h, size)) in rows.iter().enumerate() {
        let id = if n == 0 {
            if a.no_trunc {
                i.id.to_string()
            } else {
                i.id.short().to_owned()
            }
        } else {
            "<missing>".to_owned()
        };
        if a.quiet {
            println!("{id}");
            continue;
        }
        let created = h
            .created()
            .as_deref()
            .and_then(skiff_image::fsutil::parse_rfc3339)
            .map_or_else(String::new, |t| human_ago(t, now));
        let mut by = h.created_by().clone().unwrap_or_default();
        if !a.no_trunc && by.chars().count() > 45 {
            by = by.chars().take(44).collect::<String>() + "…";
        }
        table.push(vec![
            id,
            created,
            by,
            human_size(*size),
            h.comment().clone().unwrap_or_default(),
        ]);
    }
    if !a.quiet {
        print_table(&mut std::io::stdout().lock(), &table)?;
    }
    Ok(0)
}

fn df(store: &Store, a: DfArgs) -> anyhow::Result<i32> {
    let u = usage::disk_usage(store)?;
    let active = u.images.iter().filter(|i| i.containers > 0).count();
    if a.format.as_deref() == Some("json") {
        let images: Vec<_> = u
            .images
            .iter()
            .map(|i| json!({"ID": i.image.id.as_str(), "RepoTags": i.image.tags.iter().map(familiar).collect::<Vec<_>>(), "Size": i.size, "SharedSize": i.shared, "UniqueSize": i.unique, "Containers": i.containers}))
            .collect();
        println!(
            "{}",
            json!({"Images": images, "TotalSize": u.total, "Reclaimable": u.reclaimable, "Active": active})
        );
        return Ok(0);
    }
    let pct = (u.reclaimable * 100).checked_div(u.total).unwrap_or(0);
    let table = vec![
        ["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"]
            .map(String::from)
            .to_vec(),
        vec![
            "Images".into(),
            u.images.len().to_string(),
            active.to_string(),
            human_size(u.total),
            format!("{} ({pct}%)", human_size(u.reclaimable)),
        ],
    ];
    let mut out = std::io::stdout().lock();
    print_table(&mut out, &table)?;
    if a.verbose {
        writeln!(out, "\nImages space usage:\n")?;
        let mut t = vec![[
            "REPOSITORY",
            "TAG",
            "IMAGE ID",
            "SIZE",
            "SHARED SIZE",
            "UNIQUE SIZE",
            "CONTAINERS",
        ]
        .map(String::from)
        .to_vec()];
        for i in &u.images {
            let (repo, tag) = i
                .image
                .tags
                .first()
                .map_or(("<none>".into(), "<none>".into()), |t| {
                    (t.familiar_name(), t.tag.clone().unwrap_or_default())
                });
            t.push(vec![
                repo,
                tag,
                i.image.id.short().to_owned(),
                human_size(i.size),
                human_size(i.shared),
                human_size(i.unique),
                i.containers.to_string(),
            ]);
        }
        print_table(&mut out, &t)?;
    }
    Ok(0)
}
