//! The backup commands against a remote: list its copies, verify them (size and SHA-256
//! streamed, or a real restore test), fetch one for a restore, upload the local backups
//! it lacks (`backup sync`), and apply its retention.

use anyhow::anyhow;
use jiff::Timestamp;
use serde::Serialize;

use super::Remote;
use crate::backup::catalog::Catalog;
use crate::backup::create::HashWriter;
use crate::backup::manifest::{self, Manifest, UploadRecord, Verification, VerificationFailure};
use crate::backup::Verified;
use crate::config::Loaded;

/// What a remote holds.
#[derive(Debug, Serialize)]
pub struct RemoteListing {
    pub remote: String,
    pub url: String,
    /// Complete copies (with a manifest), newest first.
    pub backups: Vec<Manifest>,
    /// Data objects without a manifest: incomplete uploads, never counted (and
    /// manifests refused because their id or file is not a plain file name).
    pub incomplete: Vec<String>,
    /// Ids of the copies that are not this server's own (other servers sharing the
    /// remote): never pruned by this server, never its `latest`.
    pub others: Vec<String>,
}

pub fn list(loaded: &Loaded, name: &str) -> anyhow::Result<RemoteListing> {
    let remote = Remote::named(loaded, name)?;
    let (backups, incomplete) = remote.list()?;
    let own = super::ownership(loaded, &backups)?;
    let others = backups
        .iter()
        .zip(&own)
        .filter(|(_, own)| !**own)
        .map(|(m, _)| m.id.clone())
        .collect();
    Ok(RemoteListing {
        remote: remote.name.clone(),
        url: remote.config.url.clone(),
        backups,
        incomplete,
        others,
    })
}

/// The remote's copies that a verify names: one id, all, or the newest.
fn select(
    loaded: &Loaded,
    remote: &Remote,
    id: Option<&str>,
    all: bool,
) -> anyhow::Result<Vec<Manifest>> {
    Ok(match (id, all) {
        (Some(id), _) => vec![remote.find(loaded, id)?],
        (None, true) => remote.list()?.0,
        (None, false) => vec![remote.find(loaded, "latest")?],
    })
}

/// Streams each copy and compares its size and SHA-256 with its manifest; the result is
/// recorded in the remote manifest (a damaged copy loses its verified mark).
pub fn verify(
    loaded: &Loaded,
    name: &str,
    id: Option<&str>,
    all: bool,
) -> anyhow::Result<Vec<Verified>> {
    let remote = Remote::named(loaded, name)?;
    let mut results = Vec::new();
    for mut m in select(loaded, &remote, id, all)? {
        let mut hashing = HashWriter::new(std::io::sink());
        let read = remote.download(&m.file, &mut hashing);
        let (ok, problem) = match read {
            Err(e) => (false, Some(format!("could not check: {e:#}"))),
            Ok(_) => {
                let (_, size, sha) = hashing.finish();
                if size != m.size_bytes {
                    (false, Some(format!("size mismatch: the manifest says {} bytes, the remote object has {size}", m.size_bytes)))
                } else if sha != m.sha256 {
                    (false, Some(format!("SHA-256 mismatch: the manifest says {}, the remote object hashes to {sha}", m.sha256)))
                } else {
                    (true, None)
                }
            }
        };
        let damaged = !ok
            && !problem
                .as_deref()
                .unwrap_or("")
                .starts_with("could not check");
        if ok {
            m.verification = Some(Verification {
                at: Timestamp::now(),
                method: "checksum".into(),
                toc_entries: m.verification.as_ref().map_or(0, |v| v.toc_entries),
                tables: None,
                rows: None,
            });
            m.verification_failure = None;
            remote.put_manifest(&m)?;
        } else if damaged {
            m.verification = None;
            m.verification_failure = Some(VerificationFailure {
                at: Timestamp::now(),
                problem: problem.clone().unwrap_or_default(),
            });
            remote.put_manifest(&m)?;
        }
        results.push(Verified {
            id: m.id.clone(),
            ok,
            problem,
            size_bytes: m.size_bytes,
            toc_entries: None,
            verified_at: m.verification.as_ref().map(|v| v.at),
        });
    }
    Ok(results)
}

/// Downloads each copy and restores it into a scratch database (decrypting it with the
/// identity file when it is encrypted); the result goes into the remote manifest.
pub fn restore_test(
    loaded: &Loaded,
    name: &str,
    id: Option<&str>,
    all: bool,
) -> anyhow::Result<Vec<crate::restore::RestoreTest>> {
    let remote = Remote::named(loaded, name)?;
    let local = Catalog::new(loaded.backup_dir());
    fs_err::create_dir_all(&local.dir)?;
    let _lock = local.lock()?;
    let mut results = Vec::new();
    for m in select(loaded, &remote, id, all)? {
        let id = m.id.clone();
        let fetched = super::fetch(loaded, &remote, m)?;
        let mut tested = crate::restore::restore_test_in(
            loaded,
            &fetched.catalog,
            vec![fetched.manifest.clone()],
        )?;
        // The scratch catalog's manifest now carries the outcome: publish it.
        let updated = fetched.catalog.find(&id)?;
        remote.put_manifest(&updated)?;
        results.append(&mut tested);
    }
    Ok(results)
}

/// What `backup sync` did for one backup.
#[derive(Debug, Serialize)]
pub struct Synced {
    pub remote: String,
    pub id: String,
    pub size_bytes: u64,
    pub ok: bool,
    pub error: Option<String>,
}

/// Uploads every intact local backup that a remote lacks (all remotes, or one).
pub fn sync(loaded: &Loaded, name: Option<&str>) -> anyhow::Result<Vec<Synced>> {
    let remotes = match name {
        Some(n) => vec![Remote::named(loaded, n)?],
        None => Remote::all(loaded)?,
    };
    if remotes.is_empty() {
        return Err(crate::UsageError(
            "no [[backup.remote]] is configured: there is nothing to sync to".into(),
        )
        .into());
    }
    let catalog = Catalog::new(loaded.backup_dir());
    let _lock = catalog.lock()?;
    let mut out = Vec::new();
    for remote in &remotes {
        let (present, _) = remote.list()?;
        for mut m in catalog.list()?.backups {
            if m.verification_failure.is_some() || present.iter().any(|p| p.id == m.id) {
                continue;
            }
            let result = upload_existing(loaded, remote, &catalog, &m);
            match result {
                Ok(record) => {
                    let size = record.size_bytes;
                    m.uploads.retain(|u| u.remote != remote.name);
                    m.uploads.push(record);
                    m.write_atomic(&catalog.dir)?;
                    out.push(Synced {
                        remote: remote.name.clone(),
                        id: m.id.clone(),
                        size_bytes: size,
                        ok: true,
                        error: None,
                    });
                }
                Err(e) => out.push(Synced {
                    remote: remote.name.clone(),
                    id: m.id.clone(),
                    size_bytes: m.size_bytes,
                    ok: false,
                    error: Some(format!("{e:#}")),
                }),
            }
        }
    }
    Ok(out)
}

/// Uploads a local backup file (encrypting it on the way when encryption is configured
/// and the local copy is plain), then its manifest.
fn upload_existing(
    loaded: &Loaded,
    remote: &Remote,
    catalog: &Catalog,
    m: &Manifest,
) -> anyhow::Result<UploadRecord> {
    let settings = &loaded.config.backup;
    let encrypt = settings
        .encryption
        .as_ref()
        .filter(|_| m.encryption.is_none())
        .map(|e| e.recipients.clone());
    let file = match (&m.encryption, &encrypt) {
        (None, None) => m.file.clone(),
        _ => format!(
            "{}{}",
            m.file.trim_end_matches(crate::backup::crypt::AGE_SUFFIX),
            crate::backup::crypt::AGE_SUFFIX
        ),
    };
    let upload = remote.upload(&file);
    let status = upload.status.clone();
    let mut writer =
        crate::backup::crypt::MaybeEncrypted::new(HashWriter::new(upload), encrypt.as_deref())?;
    let mut input = fs_err::File::open(m.data_path(&catalog.dir))?;
    let copied = std::io::copy(&mut input, &mut writer);
    let stored = copied.and_then(|_| writer.finish());
    let (upload, size_bytes, sha256) = match stored {
        Ok(h) => h.finish(),
        Err(e) => {
            let why = status
                .lock()
                .unwrap()
                .clone()
                .unwrap_or_else(|| e.to_string());
            return Err(anyhow!("{why}"));
        }
    };
    upload.finish()?;
    let mut copy = m.clone();
    copy.file = file.clone();
    copy.size_bytes = size_bytes;
    copy.sha256 = sha256.clone();
    copy.encryption = m
        .encryption
        .clone()
        .or_else(|| encrypt.as_ref().map(|r| crate::backup::crypt::describe(r)));
    copy.uploads = Vec::new();
    // A local backup is this server's own, whenever it was made.
    copy.origin
        .get_or_insert_with(|| manifest::Origin::here(&loaded.app_dir));
    remote.put_manifest(&copy)?;
    Ok(UploadRecord {
        remote: remote.name.clone(),
        at: Timestamp::now(),
        file,
        size_bytes,
        sha256,
    })
}
