//! A client for the OCI distribution API: pull and push by tag or digest,
//! token and basic auth, plain HTTP only for loopback or explicitly insecure
//! registries, parallel resumable blob downloads with progress bars.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Deserialize;

use crate::auth::{self, Credentials};
use crate::chunks::ChunkSender;
use crate::digest::{Digest, Hashing};
use crate::error::{malformed, Error, IoContext, Result};
use crate::lock::{FileLock, LockKind};
use crate::manifest::{self, Kind};
use crate::reference::Reference;
use crate::store::{layers_of, parse_config, Image, Layer, Store};

/// How to reach registries.
#[derive(Clone, Debug)]
pub struct RegistryOptions {
    /// Registries (host[:port]) that may be spoken to over plain HTTP.
    pub insecure: Vec<String>,
    /// Blobs downloaded at once.
    pub parallel: usize,
    /// Draw progress bars (only when stderr is a terminal).
    pub progress: bool,
    /// Retries of a failed blob transfer (each resumes where it stopped).
    pub retries: u32,
    /// Use only this credentials file (default: see `auth::auth_files`).
    pub auth_file: Option<std::path::PathBuf>,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        let insecure = std::env::var("SKIFF_INSECURE_REGISTRIES")
            .map(|v| {
                v.split(',')
                    .map(|s| s.trim().to_owned())
                    .filter(|s| !s.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        Self {
            insecure,
            parallel: 3,
            progress: true,
            retries: 3,
            auth_file: None,
        }
    }
}

/// What a pull did.
#[derive(Debug)]
pub struct Pulled {
    pub image: Image,
    /// Digest the registry resolved the reference to (index or manifest).
    pub digest: Digest,
    pub downloaded_bytes: u64,
    pub layers_fetched: usize,
    pub layers_present: usize,
}

fn is_loopback(host: &str) -> bool {
    let h = host.rsplit_once(':').map_or(host, |(h, p)| {
        if p.chars().all(|c| c.is_ascii_digit()) {
            h
        } else {
            host
        }
    });
    let h = h.trim_start_matches('[').trim_end_matches(']');
    h == "localhost"
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// One registry, one repository, with its auth state.
pub struct Client {
    agent: ureq::Agent,
    registry: String,
    base: String,
    repository: String,
    creds: Option<Credentials>,
    /// The `Authorization` header that last worked.
    auth: Mutex<Option<String>>,
    push: bool,
}

type Resp = ureq::http::Response<ureq::Body>;

/// A response header as text (absent or not valid text: `None`).
fn header<'a>(resp: &'a Resp, name: &str) -> Option<&'a str> {
    resp.headers().get(name).and_then(|v| v.to_str().ok())
}

/// Up to 4 KiB of a response body, for an error message.
fn error_text(resp: Resp) -> String {
    let mut text = String::new();
    let _ = resp
        .into_body()
        .into_reader()
        .take(4096)
        .read_to_string(&mut text);
    text.trim().to_owned()
}

enum Body<'a> {
    None,
    Bytes(&'a [u8]),
    /// A file upload; the bar advances as bytes go out.
    File(&'a Path, Option<&'a ProgressBar>),
}

impl Client {
    pub fn new(reference: &Reference, opts: &RegistryOptions, push: bool) -> Result<Self> {
        let registry = reference.registry.clone();
        let host = if registry == crate::reference::DEFAULT_REGISTRY {
            "registry-1.docker.io".to_owned()
        } else {
            registry.clone()
        };
        let plain =
            is_loopback(&host) || opts.insecure.iter().any(|i| *i == registry || *i == host);
        let base = format!("{}://{host}", if plain { "http" } else { "https" });
        let agent = ureq::Agent::config_builder()
            // Error statuses come back as responses so their bodies can be
            // quoted and 401 challenges answered.
            .http_status_as_error(false)
            // Redirects (registries send blob GETs to storage) are followed;
            // the Authorization header is never sent along (ureq's default,
            // stated here because it matters).
            .redirect_auth_headers(ureq::config::RedirectAuthHeaders::Never)
            .proxy(None)
            .timeout_connect(Some(Duration::from_secs(15)))
            // An idle limit, not a total: a large blob may take long.
            .timeout_per_read(Some(Duration::from_secs(60)))
            // Large socket reads: a blob body arrives in few recv calls.
            .input_buffer_size(INPUT_BUFFER)
            .user_agent(concat!("skiff/", env!("CARGO_PKG_VERSION")))
            .build()
            .new_agent();
        Ok(Self {
            agent,
            creds: match &opts.auth_file {
                Some(f) => auth::lookup_in(std::slice::from_ref(f), &registry),
                None => auth::lookup_in(&auth::auth_files(), &registry),
            },
            registry,
            base,
            repository: reference.repository.clone(),
            auth: Mutex::new(None),
            push,
        })
    }

    fn err(&self, detail: impl Into<String>) -> Error {
        Error::Registry {
            registry: self.registry.clone(),
            detail: detail.into(),
        }
    }

    fn url(&self, tail: &str) -> String {
        format!("{}/v2/{}/{tail}", self.base, self.repository)
    }

    /// Send a request, answering one auth challenge if the registry asks.
    fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, String)],
        body: &Body,
    ) -> Result<Resp> {
        for attempt in 0..2 {
            let mut req = ureq::http::Request::builder().method(method).uri(url);
            for (k, v) in headers {
                req = req.header(*k, v.as_str());
            }
            if let Some(a) = self
                .auth
                .lock()
                .map_err(|_| self.err("auth state poisoned"))?
                .clone()
            {
                req = req.header("Authorization", a);
            }
            let bad = |e: ureq::http::Error| self.err(format!("{method} {url}: {e}"));
            let r = match body {
                Body::None => self.agent.run(req.body(()).map_err(bad)?),
                Body::Bytes(b) => self.agent.run(req.body(*b).map_err(bad)?),
                Body::File(p, bar) => {
                    let f = File::open(p).ctx(|| format!("open {}", p.display()))?;
                    let len = f.metadata().ctx(|| "stat blob".to_owned())?.len();
                    let r = io::BufReader::with_capacity(1 << 20, f);
                    let req = req.header("Content-Length", len);
                    match bar {
                        Some(b) => {
                            b.set_position(0);
                            let mut r = b.wrap_read(r);
                            let body = ureq::SendBody::from_reader(&mut r);
                            self.agent.run(req.body(body).map_err(bad)?)
                        }
                        None => {
                            let mut r = r;
                            let body = ureq::SendBody::from_reader(&mut r);
                            self.agent.run(req.body(body).map_err(bad)?)
                        }
                    }
                }
            };
            let resp = r.map_err(|e| self.err(format!("{method} {url}: {e}")))?;
            let code = resp.status().as_u16();
            if code == 401 && attempt == 0 {
                let challenge = header(&resp, "www-authenticate").unwrap_or("").to_owned();
                self.authenticate(&challenge)?;
                continue;
            }
            if code >= 400 {
                let hint = if code == 401 {
                    " (check credentials in ~/.docker/config.json)"
                } else {
                    ""
                };
                let text = error_text(resp);
                return Err(self.err(format!("{method} {url}: HTTP {code}: {text}{hint}")));
            }
            return Ok(resp);
        }
        Err(self.err("authentication failed"))
    }

    fn authenticate(&self, challenge: &str) -> Result<()> {
        let c = auth::parse_challenge(challenge)
            .ok_or_else(|| self.err(format!("bad WWW-Authenticate {challenge:?}")))?;
        let header = match c.scheme.as_str() {
            "basic" => self
                .creds
                .as_ref()
                .map(Credentials::basic_header)
                .ok_or_else(|| self.err("authentication required and no credentials found"))?,
            "bearer" => {
                let realm = c
                    .params
                    .get("realm")
                    .ok_or_else(|| self.err("bearer challenge without realm"))?;
                if !(realm.starts_with("https://")
                    || realm.starts_with("http://") && self.base.starts_with("http://"))
                {
                    return Err(self.err(format!("refusing token realm {realm}")));
                }
                let actions = if self.push { "pull,push" } else { "pull" };
                let scope = c
                    .params
                    .get("scope")
                    .cloned()
                    .unwrap_or_else(|| format!("repository:{}:{actions}", self.repository));
                let mut req = self.agent.get(realm.as_str()).query("scope", &scope);
                if let Some(s) = c.params.get("service") {
                    req = req.query("service", s);
                }
                if let Some(cr) = &self.creds {
                    req = req.header("Authorization", cr.basic_header());
                }
                let resp = req
                    .call()
                    .map_err(|e| self.err(format!("token from {realm}: {e}")))?;
                let code = resp.status().as_u16();
                if code >= 400 {
                    let text = error_text(resp);
                    return Err(self.err(format!("token from {realm}: HTTP {code}: {text}")));
                }
                #[derive(Deserialize)]
                struct Token {
                    token: Option<String>,
                    access_token: Option<String>,
                }
                let mut buf = Vec::new();
                resp.into_body()
                    .into_reader()
                    .take(1 << 20)
                    .read_to_end(&mut buf)
                    .ctx(|| "read token".to_owned())?;
                let t: Token =
                    serde_json::from_slice(&buf).map_err(|e| malformed("token response", e))?;
                let t = t
                    .token
                    .or(t.access_token)
                    .ok_or_else(|| self.err("token response without token"))?;
                format!("Bearer {t}")
            }
            other => return Err(self.err(format!("unsupported auth scheme {other:?}"))),
        };
        *self
            .auth
            .lock()
            .map_err(|_| self.err("auth state poisoned"))? = Some(header);
        Ok(())
    }

    /// Fetch a manifest or index; returns bytes, digest and media type.
    pub fn get_manifest(
        &self,
        reference: &str,
        limit: u64,
    ) -> Result<(Vec<u8>, Digest, Option<String>)> {
        let resp = self.send(
            "GET",
            &self.url(&format!("manifests/{reference}")),
            &[("Accept", manifest::ACCEPT.join(", "))],
            &Body::None,
        )?;
        let mt = header(&resp, "content-type")
            .map(|s| s.split(';').next().unwrap_or(s).trim().to_owned());
        let mut buf = Vec::new();
        resp.into_body()
            .into_reader()
            .take(limit + 1)
            .read_to_end(&mut buf)
            .ctx(|| "read manifest".to_owned())?;
        if buf.len() as u64 > limit {
            return Err(Error::LimitExceeded(format!(
                "manifest larger than {limit} bytes"
            )));
        }
        let d = Digest::of(&buf);
        if let Ok(expected) = Digest::parse(reference) {
            if expected != d {
                return Err(Error::DigestMismatch {
                    expected: expected.to_string(),
                    actual: d.to_string(),
                });
            }
        }
        Ok((buf, d, mt))
    }

    /// Download a blob into the store, resuming a partial download and
    /// verifying the digest. Another process fetching the same blob makes
    /// this one wait and then reuse its result.
    fn fetch_blob(
        &self,
        store: &Store,
        d: &Digest,
        size: u64,
        bar: &ProgressBar,
        retries: u32,
        mut tee: Option<ChunkSender>,
    ) -> Result<u64> {
        if store.has_blob(d) {
            return Ok(0);
        }
        let ingest = store.root().join("ingest");
        let _lock = FileLock::acquire(
            &ingest.join(format!("{}.lock", d.hex())),
            LockKind::Exclusive,
        )?;
        if store.has_blob(d) {
            return Ok(0);
        }
        let partial = ingest.join(format!("{}.partial", d.hex()));
        let mut fetched = 0;
        let mut last_err = None;
        for attempt in 0..=retries {
            // Only a download from the first byte can feed the converter.
            let fresh = fs::metadata(&partial).map_or(true, |m| m.len() == 0);
            let t = if fresh { tee.take() } else { None };
            match self.fetch_once(d, size, &partial, bar, store.limits.max_blob, t) {
                Ok(n) => {
                    fetched += n;
                    last_err = None;
                    break;
                }
                Err(e @ (Error::DigestMismatch { .. } | Error::LimitExceeded(_))) => {
                    let _ = fs::remove_file(&partial);
                    return Err(e);
                }
                Err(e) => {
                    tracing::warn!("blob {} attempt {}: {e}; resuming", d.short(), attempt + 1);
                    last_err = Some(e);
                    std::thread::sleep(Duration::from_millis(200 << attempt.min(4)));
                }
            }
        }
        if let Some(e) = last_err {
            return Err(e);
        }
        // fetch_once verified the digest while downloading.
        store.adopt_verified(&partial, d)?;
        let _ = fs::remove_file(ingest.join(format!("{}.lock", d.hex())));
        Ok(fetched)
    }

    fn fetch_once(
        &self,
        d: &Digest,
        size: u64,
        partial: &Path,
        bar: &ProgressBar,
        max: u64,
        tee: Option<ChunkSender>,
    ) -> Result<u64> {
        let mut f = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(partial)
            .ctx(|| format!("open {}", partial.display()))?;
        let mut have = f.metadata().ctx(|| "stat partial".to_owned())?.len();
        // A download killed after its last byte leaves a complete partial: asking for
        // `bytes=<size>-` would only get 416. Use it if it is the blob, else start over.
        if have > 0 && size > 0 && have >= size {
            if have == size {
                let mut hasher = Hashing::new(io::sink());
                f.seek(SeekFrom::Start(0)).ctx(|| "rewind".to_owned())?;
                io::copy(&mut (&mut f).take(have), &mut hasher)
                    .ctx(|| "rehash partial".to_owned())?;
                if hasher.finish().1 == *d {
                    bar.set_position(have);
                    return Ok(0);
                }
            }
            f.set_len(0).ctx(|| "truncate partial".to_owned())?;
            have = 0;
        }
        let mut headers = Vec::new();
        if have > 0 {
            headers.push(("Range", format!("bytes={have}-")));
        }
        let resp = self.send(
            "GET",
            &self.url(&format!("blobs/{d}")),
            &headers,
            &Body::None,
        )?;
        let mut hasher = Hashing::new(io::sink());
        if have > 0 && resp.status().as_u16() == 206 {
            f.seek(SeekFrom::Start(0)).ctx(|| "rewind".to_owned())?;
            io::copy(&mut (&mut f).take(have), &mut hasher).ctx(|| "rehash partial".to_owned())?;
        } else {
            f.set_len(0).ctx(|| "truncate partial".to_owned())?;
        }
        f.seek(SeekFrom::End(0)).ctx(|| "seek".to_owned())?;
        bar.set_position(hasher.count());
        let mut r = resp.into_body().into_reader();
        // Each buffer read from the socket is written to the partial file,
        // hashed, and then (when converting as we download) moved to the
        // converter without another copy.
        let mut own = Vec::new();
        let mut tee = tee;
        let mut n_total = 0;
        let mut kicked = hasher.count();
        loop {
            let mut buf = match &tee {
                Some(t) => t.buffer(),
                None if own.is_empty() => vec![0u8; DOWNLOAD_CHUNK],
                None => std::mem::take(&mut own),
            };
            let (n, failed) = fill(&mut r, &mut buf);
            if n == 0 {
                if let Some(e) = failed {
                    return Err(self.err(format!("download {}: {e}", d.short())));
                }
                break;
            }
            if hasher.count() + n as u64 > max || (size > 0 && hasher.count() + n as u64 > size) {
                return Err(Error::LimitExceeded(format!(
                    "blob {} larger than announced {size} bytes",
                    d.short()
                )));
            }
            f.write_all(&buf[..n]).ctx(|| "write partial".to_owned())?;
            hasher.write_all(&buf[..n]).ctx(|| "hash".to_owned())?;
            n_total += n as u64;
            let count = hasher.count();
            if count - kicked >= crate::fsutil::WRITEBACK_STEP {
                crate::fsutil::start_writeback(&f, kicked, count - kicked);
                kicked = count;
            }
            bar.inc(n as u64);
            if let Some(t) = &tee {
                if !t.send(buf, n) {
                    // The converter stopped (it will report why); keep downloading.
                    tee = None;
                }
            } else {
                own = buf;
            }
            if let Some(e) = failed {
                return Err(self.err(format!("download {}: {e}", d.short())));
            }
        }
        // Only a complete, verified download ends the converter's stream
        // cleanly; on any error above the dropped sender makes it fail.
        let (_, actual, count) = hasher.finish();
        if size > 0 && count < size {
            return Err(self.err(format!(
                "blob {} ended after {count} of {size} bytes",
                d.short()
            )));
        }
        if actual != *d {
            return Err(Error::DigestMismatch {
                expected: d.to_string(),
                actual: actual.to_string(),
            });
        }
        if let Some(t) = tee {
            t.finish();
        }
        Ok(n_total)
    }

    fn blob_exists(&self, d: &Digest) -> Result<bool> {
        match self.send("HEAD", &self.url(&format!("blobs/{d}")), &[], &Body::None) {
            Ok(_) => Ok(true),
            Err(Error::Registry { detail, .. }) if detail.contains("HTTP 404") => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn upload_blob(&self, store: &Store, d: &Digest, bar: &ProgressBar) -> Result<()> {
        let resp = self.send("POST", &self.url("blobs/uploads/"), &[], &Body::Bytes(&[]))?;
        let loc = header(&resp, "location")
            .ok_or_else(|| self.err("upload without Location"))?
            .to_owned();
        let loc = if loc.starts_with('/') {
            format!("{}{loc}", self.base)
        } else {
            loc
        };
        let sep = if loc.contains('?') { '&' } else { '?' };
        let url = format!("{loc}{sep}digest={d}");
        self.send(
            "PUT",
            &url,
            &[("Content-Type", "application/octet-stream".into())],
            &Body::File(&store.blob_path(d), Some(bar)),
        )?;
        Ok(())
    }
}

/// Blob bytes read from the socket (and handed to the converter) at a time.
const DOWNLOAD_CHUNK: usize = 256 << 10;

/// ureq's per-connection receive buffer: one recv call fills up to this.
const INPUT_BUFFER: usize = 256 << 10;

/// Read until `buf` is full or the stream ends; returns the bytes read and,
/// if reading failed, why (the bytes before the failure still count: a
/// resumed download starts after them).
fn fill(r: &mut impl Read, buf: &mut [u8]) -> (usize, Option<io::Error>) {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return (filled, Some(e)),
        }
    }
    (filled, None)
}

fn bars(opts: &RegistryOptions) -> MultiProgress {
    use std::io::IsTerminal;
    if opts.progress && io::stderr().is_terminal() {
        MultiProgress::new()
    } else {
        MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
    }
}

fn bar(mp: &MultiProgress, label: &str, len: u64) -> ProgressBar {
    let b = mp.add(ProgressBar::new(len));
    if let Ok(s) =
        ProgressStyle::with_template("{prefix}: [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}")
    {
        b.set_style(s.progress_chars("=> "));
    }
    b.set_prefix(label.to_owned());
    b
}

/// Pull `reference` into the store: layers already present are not fetched;
/// missing ones download in parallel and are converted as they arrive.
pub fn pull(store: &Store, reference: &Reference, opts: &RegistryOptions) -> Result<Pulled> {
    let client = Client::new(reference, opts, false)?;
    let _ingest = store.ingest_guard()?;
    let (bytes, top_digest, mt) =
        client.get_manifest(&reference.manifest_ref(), store.limits.max_document)?;
    let (bytes, _) = match manifest::kind_of(&bytes, mt.as_deref())? {
        Kind::Index => {
            let d = manifest::select_platform(&manifest::parse_index(&bytes)?)?;
            let d = Digest::try_from(d.digest())?;
            let (b, d2, _) = client.get_manifest(d.as_str(), store.limits.max_document)?;
            (b, d2)
        }
        Kind::Manifest => (bytes, top_digest.clone()),
    };
    let m = store.parse_manifest(&bytes)?;
    let config_digest = Digest::try_from(m.config().digest())?;
    let mp = bars(opts);
    let mut written = Vec::new();
    if !store.has_blob(&config_digest) {
        let b = bar(&mp, config_digest.short(), m.config().size());
        client.fetch_blob(
            store,
            &config_digest,
            m.config().size(),
            &b,
            opts.retries,
            None,
        )?;
        b.finish_and_clear();
        written.push(config_digest.clone());
    }
    let (config, _) = parse_config(&store.read_blob(&config_digest)?)?;
    let layers = layers_of(&m, &config)?;
    let present = layers.iter().filter(|l| store.has_blob(&l.digest)).count();
    let result = fetch_layers(store, &client, &layers, opts, &mp);
    written.extend(layers.iter().map(|l| l.digest.clone()));
    let downloaded = match result {
        Ok(n) => n,
        Err(e) => {
            store.discard_unreferenced(&written)?;
            return Err(e);
        }
    };
    let md = store.put_blob(&bytes)?;
    let tags: Vec<Reference> = reference
        .tag
        .as_ref()
        .filter(|_| reference.digest.is_none())
        .map(|t| reference.with_tag(t))
        .into_iter()
        .collect();
    let image = store.commit_image(
        &md,
        &tags,
        Some(format!("{}@{top_digest}", reference.name())),
    )?;
    Ok(Pulled {
        image,
        digest: top_digest,
        downloaded_bytes: downloaded,
        layers_fetched: layers.len() - present,
        layers_present: present,
    })
}

/// Download one layer; when neither blob nor disk exists yet, convert it
/// while it downloads (gunzip + unpack overlap the transfer).
fn fetch_and_convert(
    store: &Store,
    client: &Client,
    l: &Layer,
    b: &ProgressBar,
    retries: u32,
) -> Result<u64> {
    let disk = crate::store::layerdisk::disk_path(store, l);
    if store.has_blob(&l.digest) || disk.is_file() {
        let n = client.fetch_blob(store, &l.digest, l.size, b, retries, None)?;
        crate::store::layerdisk::ensure(store, l)?;
        return Ok(n);
    }
    let (writer, reader) = crate::chunks::channel(DOWNLOAD_CHUNK);
    let (fetched, streamed) = std::thread::scope(|s| {
        let conv =
            s.spawn(move || crate::store::layerdisk::ensure_from(store, l, Some(Box::new(reader))));
        let fetched = client.fetch_blob(store, &l.digest, l.size, b, retries, Some(writer));
        (fetched, conv.join())
    });
    let n = fetched?;
    match streamed {
        Ok(Ok(_)) => {}
        // A hostile or corrupt layer: the stored blob would fail the same way.
        Ok(Err(e @ (Error::HostileLayer(_) | Error::LimitExceeded(_)))) => return Err(e),
        // Interrupted stream, or a diff_id mismatch on a partial stream:
        // convert from the verified blob instead.
        Ok(Err(e)) => {
            tracing::debug!(
                "streamed conversion of {} failed ({e}); converting from the blob",
                l.digest.short()
            );
            crate::store::layerdisk::ensure(store, l)?;
        }
        Err(_) => return Err(client.err("layer converter panicked")),
    }
    Ok(n)
}

/// Fetch and convert layers with `opts.parallel` workers.
fn fetch_layers(
    store: &Store,
    client: &Client,
    layers: &[Layer],
    opts: &RegistryOptions,
    mp: &MultiProgress,
) -> Result<u64> {
    // Largest first: the biggest layer is the longest job, so it starts at
    // once and the small ones fill the other workers around it.
    let mut order: Vec<&Layer> = layers.iter().collect();
    order.sort_by_key(|l| std::cmp::Reverse(l.size));
    let queue = Mutex::new(order);
    let total = Mutex::new(0u64);
    let errors: Mutex<Vec<Error>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..opts.parallel.max(1) {
            s.spawn(|| loop {
                let next = queue.lock().ok().and_then(|mut q| {
                    if q.is_empty() {
                        None
                    } else {
                        Some(q.remove(0))
                    }
                });
                let Some(l) = next else { break };
                if errors.lock().map(|e| !e.is_empty()).unwrap_or(true) {
                    break;
                }
                let b = bar(mp, l.digest.short(), l.size);
                let r = fetch_and_convert(store, client, l, &b, opts.retries);
                b.finish_and_clear();
                match r {
                    Ok(n) => {
                        if let Ok(mut t) = total.lock() {
                            *t += n;
                        }
                    }
                    Err(e) => {
                        if let Ok(mut es) = errors.lock() {
                            es.push(e);
                        }
                    }
                }
            });
        }
    });
    let mut errors = errors.into_inner().unwrap_or_default();
    if let Some(e) = errors.pop() {
        return Err(e);
    }
    Ok(total.into_inner().unwrap_or(0))
}

/// Push a stored image to `dest`; returns the manifest digest.
pub fn push(
    store: &Store,
    image: &str,
    dest: &Reference,
    opts: &RegistryOptions,
) -> Result<Digest> {
    let img = store.image(image)?;
    let client = Client::new(dest, opts, true)?;
    let mut blobs: Vec<(Digest, u64)> = img
        .layers
        .iter()
        .map(|l| (l.digest.clone(), l.size))
        .collect();
    blobs.push((img.id.clone(), store.blob_size(&img.id).unwrap_or(0)));
    let mp = bars(opts);
    for (d, size) in &blobs {
        if client.blob_exists(d)? {
            continue;
        }
        let b = bar(&mp, d.short(), *size);
        client.upload_blob(store, d, &b)?;
        b.finish_and_clear();
    }
    let bytes =
        fs::read(store.blob_path(&img.manifest_digest)).ctx(|| "read manifest".to_owned())?;
    let mt = img
        .manifest
        .media_type()
        .as_ref()
        .map_or_else(|| manifest::OCI_MANIFEST.to_owned(), |m| m.to_string());
    let r = dest.manifest_ref();
    let resp = client.send(
        "PUT",
        &client.url(&format!("manifests/{r}")),
        &[("Content-Type", mt)],
        &Body::Bytes(&bytes),
    )?;
    if let Some(d) = header(&resp, "docker-content-digest").and_then(|d| Digest::parse(d).ok()) {
        if d != img.manifest_digest {
            return Err(client.err(format!(
                "registry stored manifest as {d}, expected {}",
                img.manifest_digest
            )));
        }
    }
    let mut g = store.lock_state()?;
    if let Some(rec) = g.state.images.get_mut(&img.manifest_digest) {
        rec.repo_digests
            .insert(format!("{}@{}", dest.name(), img.manifest_digest));
        g.save()?;
    }
    Ok(img.manifest_digest.clone())
}

/// Tags of a repository (`GET /v2/<name>/tags/list`).
pub fn list_tags(reference: &Reference, opts: &RegistryOptions) -> Result<Vec<String>> {
    let client = Client::new(reference, opts, false)?;
    let resp = client.send("GET", &client.url("tags/list"), &[], &Body::None)?;
    #[derive(Deserialize)]
    struct Tags {
        tags: Option<Vec<String>>,
    }
    let mut buf = Vec::new();
    resp.into_body()
        .into_reader()
        .take(4 << 20)
        .read_to_end(&mut buf)
        .ctx(|| "read tags".to_owned())?;
    let t: Tags = serde_json::from_slice(&buf).map_err(|e| malformed("tag list", e))?;
    Ok(t.tags.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_detection() {
        assert!(is_loopback("localhost:5000"));
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("registry-1.docker.io"));
        assert!(!is_loopback("127.example.com"));
    }
}
