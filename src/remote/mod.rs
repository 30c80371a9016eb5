//! Offsite copies of backups: S3 and S3-compatible stores, GCS, Azure (through the
//! `object_store` crate) and plain directories. A copy is the data object
//! (`<id>.dump.zst`, `.age` when encrypted) and its manifest (`<id>.manifest.json`),
//! uploaded last: a data object without its manifest is an incomplete upload and never
//! counts. Manifests are self-describing, so a restore needs nothing but the bucket.

pub mod commands;

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use futures::TryStreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectStore, RetryConfig, WriteMultipart};

use crate::backup::manifest::{Manifest, Origin, MANIFEST_SUFFIX};
use crate::config::{Loaded, RemoteConfig};

/// Parts of a multipart upload (S3's minimum is 5 MiB).
const PART_SIZE: usize = 8 << 20;
/// Parts in flight at once: memory stays under PART_SIZE x (this + 1) + the channel.
const PARTS_IN_FLIGHT: usize = 3;
/// Chunks queued between the backup pipeline and the uploader.
const QUEUED_CHUNKS: usize = 4;
const CHUNK: usize = 1 << 20;

pub use crate::config::Location;

impl Location {
    /// The key prefix inside the bucket (none for a directory).
    fn prefix(&self) -> ObjectPath {
        match self {
            Location::S3 { url } | Location::Gcs { url } | Location::Azure { url } => {
                let path = url::Url::parse(url)
                    .map(|u| u.path().trim_matches('/').to_string())
                    .unwrap_or_default();
                ObjectPath::from(path)
            }
            Location::Dir { .. } => ObjectPath::default(),
        }
    }
}

/// One configured remote, connected.
pub struct Remote {
    pub name: String,
    pub config: RemoteConfig,
    location: Location,
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    rt: Arc<tokio::runtime::Runtime>,
}

impl Remote {
    pub fn open(config: &RemoteConfig) -> anyhow::Result<Remote> {
        let location = Location::parse(&config.url).map_err(anyhow::Error::msg)?;
        let options = ClientOptions::new()
            .with_timeout(config.timeout)
            .with_connect_timeout(Duration::from_secs(10))
            .with_allow_http(config.allow_http);
        let retry = RetryConfig {
            max_retries: 3,
            retry_timeout: config.timeout * 2,
            ..Default::default()
        };
        let env = |var: &Option<String>| -> anyhow::Result<Option<String>> {
            match var {
                None => Ok(None),
                Some(v) => std::env::var(v).map(Some).map_err(|_| {
                    anyhow!("the environment variable {v} (named in the remote's config) is not set: export it where stablehand runs")
                }),
            }
        };
        let store: Arc<dyn ObjectStore> = match &location {
            Location::S3 { url } => {
                let mut b = object_store::aws::AmazonS3Builder::from_env()
                    .with_url(url)
                    .with_client_options(options)
                    .with_retry(retry)
                    .with_allow_http(config.allow_http)
                    .with_virtual_hosted_style_request(config.virtual_hosted_style);
                if let Some(e) = &config.endpoint {
                    b = b.with_endpoint(e);
                }
                if let Some(r) = &config.region {
                    b = b.with_region(r);
                }
                if let Some(k) = env(&config.access_key_id_env)? {
                    b = b.with_access_key_id(k);
                }
                if let Some(k) = env(&config.secret_access_key_env)? {
                    b = b.with_secret_access_key(k);
                }
                Arc::new(
                    b.build()
                        .map_err(|e| anyhow!("cannot set up access to {}: {e}", config.url))?,
                )
            }
            Location::Gcs { url } => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::from_env()
                    .with_url(url)
                    .with_client_options(options)
                    .with_retry(retry)
                    .build()
                    .map_err(|e| anyhow!("cannot set up access to {}: {e}", config.url))?,
            ),
            Location::Azure { url } => Arc::new(
                object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(url)
                    .with_client_options(options)
                    .with_retry(retry)
                    .build()
                    .map_err(|e| anyhow!("cannot set up access to {}: {e}", config.url))?,
            ),
            Location::Dir { path } => {
                // Never created here: an unmounted NAS would silently become a local copy.
                if !path.is_dir() {
                    bail!(
                        "the directory {} does not exist (is the NAS mounted?); create it, or mount the share, first",
                        path.display()
                    );
                }
                Arc::new(
                    object_store::local::LocalFileSystem::new_with_prefix(path)
                        .map_err(|e| anyhow!("cannot set up access to {}: {e}", config.url))?,
                )
            }
        };
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("stablehand-upload")
            .enable_all()
            .build()
            .context("starting the upload runtime")?;
        Ok(Remote {
            name: config.name.clone(),
            config: config.clone(),
            prefix: location.prefix(),
            location,
            store,
            rt: Arc::new(rt),
        })
    }

    /// Every configured remote.
    pub fn all(loaded: &Loaded) -> anyhow::Result<Vec<Remote>> {
        loaded
            .config
            .backup
            .remote
            .iter()
            .map(Remote::open)
            .collect()
    }

    /// The remote called `name`, or an error listing the configured ones.
    pub fn named(loaded: &Loaded, name: &str) -> anyhow::Result<Remote> {
        let remotes = &loaded.config.backup.remote;
        match remotes.iter().find(|r| r.name == name) {
            Some(r) => Remote::open(r).with_context(|| format!("remote {}", r.name)),
            None => Err(crate::UsageError(format!(
                "no remote named {name:?} in [[backup.remote]]; configured: {}",
                if remotes.is_empty() {
                    "none".to_string()
                } else {
                    remotes
                        .iter()
                        .map(|r| r.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ))
            .into()),
        }
    }

    /// `name (url)`, for messages.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.name, self.config.url)
    }

    fn object(&self, file: &str) -> ObjectPath {
        let mut parts: Vec<_> = self.prefix.parts().collect();
        parts.push(file.into());
        ObjectPath::from_iter(parts)
    }

    /// Runs a future to completion on the remote's runtime, from a thread of its own
    /// (so callers inside another runtime, like `serve`'s scheduler, are fine).
    fn run<T: Send>(&self, fut: impl std::future::Future<Output = T> + Send) -> T {
        let rt = &self.rt;
        std::thread::scope(|s| {
            s.spawn(|| rt.block_on(fut))
                .join()
                .expect("remote operation thread")
        })
    }

    /// Manifests of the complete copies, newest first, and the data objects that have no
    /// manifest (incomplete uploads, ignored).
    pub fn list(&self) -> anyhow::Result<(Vec<Manifest>, Vec<String>)> {
        let store = self.store.clone();
        let prefix = self.prefix.clone();
        let objects = self
            .run(async move { store.list(Some(&prefix)).try_collect::<Vec<_>>().await })
            .map_err(flat)
            .with_context(|| format!("listing remote {}", self.describe()))?;
        let depth = self.prefix.parts().count() + 1;
        let names: Vec<String> = objects
            .iter()
            .filter(|o| o.location.parts().count() == depth)
            .filter_map(|o| o.location.filename().map(str::to_string))
            .collect();
        let mut manifests = Vec::new();
        let mut incomplete = Vec::new();
        // Every manifest in one round of concurrent requests, not one after another.
        let wanted: Vec<&String> = names
            .iter()
            .filter(|n| n.ends_with(MANIFEST_SUFFIX))
            .collect();
        let store = self.store.clone();
        let paths: Vec<ObjectPath> = wanted.iter().map(|n| self.object(n)).collect();
        let fetched = self
            .run(async move {
                futures::future::try_join_all(paths.iter().map(|p| {
                    let store = store.clone();
                    async move { store.get(p).await?.bytes().await }
                }))
                .await
            })
            .map_err(flat)
            .with_context(|| format!("reading the manifests on remote {}", self.describe()))?;
        for (name, bytes) in wanted.into_iter().zip(fetched) {
            match serde_json::from_slice::<Manifest>(&bytes) {
                Ok(m) => match m.check_names() {
                    Ok(()) => manifests.push(m),
                    Err(e) => incomplete.push(format!("{name}: {REFUSED} ({e})")),
                },
                Err(e) => incomplete.push(format!("{name}: unreadable manifest ({e})")),
            }
        }
        for name in names.iter().filter(|n| !n.ends_with(MANIFEST_SUFFIX)) {
            if !manifests.iter().any(|m| &m.file == name) {
                incomplete.push(format!(
                    "{name}: no manifest (an incomplete upload; ignored)"
                ));
            }
        }
        manifests.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| b.id.cmp(&a.id))
        });
        Ok((manifests, incomplete))
    }

    /// The copy of backup `id` (or a unique prefix), or with "latest" the newest copy
    /// of this server's own backups of its database (a remote may be shared by several
    /// servers: see `ownership`).
    pub fn find(&self, loaded: &Loaded, id: &str) -> anyhow::Result<Manifest> {
        use crate::backup::catalog::{pick, NotPicked};
        let (mut copies, incomplete) = self.list()?;
        if id == "latest" {
            let own = ownership(loaded, &copies)?;
            let database = crate::db::Database::from_config(loaded)?.name;
            let foreign = copies.len();
            copies = copies
                .into_iter()
                .zip(own)
                .filter(|(m, own)| *own && m.database.name == database)
                .map(|(m, _)| m)
                .collect();
            if copies.is_empty() && foreign > 0 {
                bail!(
                    "remote {} holds {foreign} backup(s), but none of this server's database {database:?} (they were made by other servers or of other databases); name one by its id (`stablehand backup list --remote {}` shows them)",
                    self.describe(),
                    self.name
                );
            }
        }
        match pick(copies, id) {
            Ok(m) => Ok(m),
            Err(NotPicked::Empty) => bail!("remote {} holds no backups", self.describe()),
            Err(NotPicked::NoMatch) => {
                if let Some(refused) = incomplete
                    .iter()
                    .find(|i| i.starts_with(id) && i.contains(REFUSED))
                {
                    bail!(
                        "the copy {id:?} on remote {} was refused as unsafe: {refused}",
                        self.describe()
                    );
                }
                bail!(
                    "remote {} has no backup {id:?}; `stablehand backup list --remote {}` shows what it holds",
                    self.describe(),
                    self.name
                )
            }
            Err(NotPicked::Ambiguous(ids)) => bail!(
                "{id:?} matches {} backups on remote {}; give more of the id",
                ids.len(),
                self.name
            ),
        }
    }

    fn put(&self, file: &str, bytes: Vec<u8>) -> anyhow::Result<()> {
        let store = self.store.clone();
        let path = self.object(file);
        self.run(async move { store.put(&path, bytes.into()).await })
            .map_err(flat)
            .with_context(|| format!("writing {file} to remote {}", self.describe()))?;
        self.make_private(file);
        Ok(())
    }

    /// Files in a directory remote are created by object_store with the default mode:
    /// backups are private.
    fn make_private(&self, file: &str) {
        if let Location::Dir { path } = &self.location {
            use std::os::unix::fs::PermissionsExt;
            let _ =
                std::fs::set_permissions(path.join(file), std::fs::Permissions::from_mode(0o600));
        }
    }

    /// Whether the remote already holds any file of backup `id` (its manifest, or its
    /// data, plain or encrypted, perhaps still being written by another server that
    /// shares the remote). A remote that cannot be asked counts as not holding it: the
    /// upload will then report why.
    pub fn holds(&self, id: &str) -> bool {
        use crate::backup::crypt::AGE_SUFFIX;
        use crate::backup::manifest::DATA_SUFFIX;
        [
            format!("{id}{MANIFEST_SUFFIX}"),
            format!("{id}{DATA_SUFFIX}"),
            format!("{id}{DATA_SUFFIX}{AGE_SUFFIX}"),
        ]
        .into_iter()
        .any(|file| {
            let store = self.store.clone();
            let path = self.object(&file);
            self.run(async move { store.head(&path).await }).is_ok()
        })
    }

    /// Uploads a manifest (the last step of a copy: from now on it counts).
    pub fn put_manifest(&self, m: &Manifest) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec_pretty(m)?;
        self.put(&format!("{}{MANIFEST_SUFFIX}", m.id), bytes)
    }

    /// Deletes a copy: the manifest first (so it stops counting), then the data.
    pub fn delete(&self, m: &Manifest) -> anyhow::Result<()> {
        for file in [format!("{}{MANIFEST_SUFFIX}", m.id), m.file.clone()] {
            let store = self.store.clone();
            let path = self.object(&file);
            self.run(async move {
                match store.delete(&path).await {
                    Err(object_store::Error::NotFound { .. }) => Ok(()),
                    other => other,
                }
            })
            .map_err(flat)
            .with_context(|| format!("deleting {file} from remote {}", self.describe()))?;
        }
        Ok(())
    }

    /// Streams a data object into `out` (bounded memory); returns the bytes read.
    pub fn download(&self, file: &str, out: &mut (dyn Write + Send)) -> anyhow::Result<u64> {
        let store = self.store.clone();
        let path = self.object(file);
        self.run(async move {
            let mut stream = store.get(&path).await?.into_stream();
            let mut n = 0u64;
            while let Some(chunk) = stream.try_next().await? {
                n += chunk.len() as u64;
                out.write_all(&chunk)
                    .map_err(|e| object_store::Error::Generic {
                        store: "local",
                        source: Box::new(e),
                    })?;
            }
            Ok::<u64, object_store::Error>(n)
        })
        .map_err(flat)
        .with_context(|| format!("downloading {file} from remote {}", self.describe()))
    }

    /// Starts a streaming multipart upload of `file`: write to it, then `finish`.
    pub fn upload(&self, file: &str) -> Upload {
        let (tx, rx) = sync_channel::<Msg>(QUEUED_CHUNKS);
        let store = self.store.clone();
        let path = self.object(file);
        let rt = self.rt.clone();
        let status = Arc::new(std::sync::Mutex::new(None));
        let seen = status.clone();
        let thread = std::thread::Builder::new()
            .name(format!("upload-{}", self.name))
            .spawn(move || {
                let result = rt.block_on(upload_from(store, path, rx));
                if let Err(e) = &result {
                    *seen.lock().unwrap() = Some(format!("{e:#}"));
                }
                result
            })
            .expect("spawning the upload thread");
        Upload {
            status,
            remote: self.name.clone(),
            file: file.to_string(),
            private: match &self.location {
                Location::Dir { path } => Some(path.join(file)),
                _ => None,
            },
            tx: Some(tx),
            buf: Vec::with_capacity(CHUNK),
            thread: Some(thread),
        }
    }
}

/// How `list` describes a manifest it refused (see `Manifest::check_names`).
const REFUSED: &str = "refused: its id or file is not a plain file name";

/// Which of `copies` (one remote's manifests) are this server's own backups, in order.
/// A copy records the server and app directory that made it (`Manifest::origin`): it is
/// ours when that is this one. A copy without an origin (written before it was
/// recorded) is ours when this server's backup directory holds the same backup, or else
/// when it is of this app's database and no copy on the remote recorded as another
/// server's is of a database of that name (then nothing says it is not ours).
pub fn ownership(loaded: &Loaded, copies: &[Manifest]) -> anyhow::Result<Vec<bool>> {
    let here = Origin::here(&loaded.app_dir);
    let mut local: Option<std::collections::HashSet<String>> = None;
    let mut database: Option<String> = None;
    let mut own = Vec::with_capacity(copies.len());
    for m in copies {
        let mine = match &m.origin {
            Some(o) => *o == here,
            None => {
                let local = local.get_or_insert_with(|| {
                    crate::backup::catalog::Catalog::new(loaded.backup_dir())
                        .list()
                        .map(|l| l.backups.into_iter().map(|b| b.id).collect())
                        .unwrap_or_default()
                });
                if local.contains(&m.id) {
                    true
                } else {
                    let name = match &database {
                        Some(n) => n.clone(),
                        None => {
                            let n = crate::db::Database::from_config(loaded)?.name;
                            database = Some(n.clone());
                            n
                        }
                    };
                    m.database.name == name
                        && !copies.iter().any(|c| {
                            c.database.name == name && c.origin.as_ref().is_some_and(|o| *o != here)
                        })
                }
            }
        };
        own.push(mine);
    }
    Ok(own)
}

/// An object_store error as one message: its Display already includes its causes, so
/// the chain would print them twice.
fn flat(e: object_store::Error) -> anyhow::Error {
    anyhow!("{e}")
}

enum Msg {
    Data(Vec<u8>),
    Finish,
}

/// The uploader: parts go out while the pipeline keeps producing; without `Finish` (the
/// sender dropped: the backup failed or was killed) the upload is aborted, so no object
/// appears.
async fn upload_from(
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    rx: Receiver<Msg>,
) -> anyhow::Result<()> {
    let upload = store.put_multipart(&path).await.map_err(flat)?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
    loop {
        match rx.recv() {
            Ok(Msg::Data(chunk)) => {
                if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                    let _ = writer.abort().await;
                    return Err(flat(e));
                }
                writer.write(&chunk);
            }
            Ok(Msg::Finish) => {
                writer.finish().await.map_err(flat)?;
                return Ok(());
            }
            Err(_) => {
                let _ = writer.abort().await;
                bail!("the upload was abandoned (the backup did not finish)");
            }
        }
    }
}

/// A streaming upload in progress (see `Remote::upload`).
pub struct Upload {
    pub remote: String,
    /// Why the uploader stopped, once it has (readable while the upload is owned
    /// elsewhere, e.g. inside an encrypting writer).
    pub status: Arc<std::sync::Mutex<Option<String>>>,
    file: String,
    private: Option<PathBuf>,
    tx: Option<SyncSender<Msg>>,
    buf: Vec<u8>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
}

impl Upload {
    fn send_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        match &self.tx {
            Some(tx) => tx
                .send(Msg::Data(chunk))
                .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload stopped")),
            None => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the upload stopped",
            )),
        }
    }

    /// Sends the rest and completes the upload; the error says why it failed.
    pub fn finish(mut self) -> anyhow::Result<()> {
        let sent = self.send_buf();
        if sent.is_ok() {
            if let Some(tx) = self.tx.take() {
                let _ = tx.send(Msg::Finish);
            }
        }
        self.tx = None;
        let result = self.join();
        if result.is_ok() {
            if let Some(p) = &self.private {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600));
            }
        }
        result
    }

    fn join(&mut self) -> anyhow::Result<()> {
        match self.thread.take() {
            Some(t) => t
                .join()
                .map_err(|_| anyhow!("the upload thread panicked"))?
                .with_context(|| format!("uploading {}", self.file)),
            None => Ok(()),
        }
    }
}

impl Write for Upload {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = room.min(data.len());
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send_buf()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        // Without Finish the uploader aborts; wait for it so nothing half-done lingers.
        self.tx = None;
        let _ = self.join();
    }
}

/// A directory under the backup directory that is removed when dropped.
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(backup_dir: &Path, what: &str) -> anyhow::Result<Scratch> {
        let dir = backup_dir.join(format!(".{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        fs_err::create_dir_all(&dir)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700))?;
        Ok(Scratch(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A remote copy downloaded into a scratch catalog, as stored (encrypted copies stay
/// encrypted: the restore decrypts and checks them like any encrypted backup).
pub struct Fetched {
    pub catalog: crate::backup::catalog::Catalog,
    pub manifest: Manifest,
    _dir: Scratch,
}

/// Downloads the copy `m` describes (streamed to a 0600 file) with its manifest.
pub fn fetch(loaded: &Loaded, remote: &Remote, m: Manifest) -> anyhow::Result<Fetched> {
    m.check_names()
        .with_context(|| format!("remote {}", remote.describe()))?;
    let backup_dir = loaded.backup_dir();
    fs_err::create_dir_all(&backup_dir)?;
    let dir = Scratch::new(&backup_dir, &format!("fetch-{}", remote.name))?;
    let path = dir.0.join(&m.file);
    let file = crate::files::create_private(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    remote.download(&m.file, &mut out)?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    m.write_atomic(&dir.0)?;
    Ok(Fetched {
        catalog: crate::backup::catalog::Catalog::new(&dir.0),
        manifest: m,
        _dir: dir,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_parse() {
        assert!(matches!(
            Location::parse("s3://b/p/q"),
            Ok(Location::S3 { .. })
        ));
        assert_eq!(
            Location::parse("s3://b/p/q").unwrap().prefix().as_ref(),
            "p/q"
        );
        assert!(matches!(
            Location::parse("gs://b"),
            Ok(Location::Gcs { .. })
        ));
        assert!(matches!(
            Location::parse("az://c/p"),
            Ok(Location::Azure { .. })
        ));
        assert_eq!(
            Location::parse("file:///mnt/nas").unwrap(),
            Location::Dir {
                path: "/mnt/nas".into()
            }
        );
        assert_eq!(
            Location::parse("/mnt/nas").unwrap(),
            Location::Dir {
                path: "/mnt/nas".into()
            }
        );
        assert!(Location::parse("ftp://h/d").unwrap_err().contains("ftp://"));
        assert!(Location::parse("s3://key:secret@b/p")
            .unwrap_err()
            .contains("credentials"));
        assert!(Location::parse("bucket/prefix").is_err());
        assert!(Location::parse("s3:///app")
            .unwrap_err()
            .contains("names no bucket"));
    }
}
