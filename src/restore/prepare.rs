//! The checks a restore makes before anything changes: size, the archive's front and its table of contents, decryption of an encrypted copy.

use super::*;

/// Size, SHA-256, complete decompression and table of contents, before anything else;
/// or, when the tools run locally and the restore goes into a new database
/// (`into_new`), the size and the table of contents now and the rest in the pass that
/// restores the data (`Source::Checking`).
pub(super) fn prepare(
    loaded: &Loaded,
    db: &Database,
    catalog: &Catalog,
    m: &Manifest,
    into_new: bool,
) -> anyhow::Result<Prepared> {
    if m.encryption.is_some() {
        return prepare_encrypted(loaded, db, catalog, m, into_new);
    }
    let path = m.data_path(&catalog.dir);
    let refused = |e: CheckError| match e {
        CheckError::Damaged(e) => e.context(format!(
            "backup {} is damaged and was refused; nothing was changed",
            m.id
        )),
        e @ CheckError::Unchecked(_) => anyhow!(e).context(format!(
            "backup {} could not be checked, so it was not restored; nothing was changed",
            m.id
        )),
    };
    let local = into_new && db.mode == DbMode::Direct;
    if !local {
        let check = crate::backup::verify_one(db, catalog, m, loaded.config.backup.timeout, None)
            .map_err(refused)?;
        return Ok(Prepared {
            check,
            source: Source::Stream(path),
            _plain: None,
        });
    }
    crate::backup::verify::check_size(&path, m).map_err(refused)?;
    let (toc, front) = stream::read_front(&path).map_err(|e| refused(load_check_error(e)))?;
    remove_stale_temp_dumps(&catalog.dir);
    let front_file = TempDump(
        catalog
            .dir
            .join(format!(".restore-{}.toc.dump.tmp", std::process::id())),
    );
    let _ = std::fs::remove_file(&front_file.0);
    let mut out = crate::files::create_private(&front_file.0)?;
    out.write_all(&front)
        .with_context(|| format!("writing {}", front_file.0.display()))?;
    drop(out);
    let listing = db
        .list_toc_cmd()
        .arg(&front_file.0)
        .timeout(loaded.config.backup.timeout)
        .output()
        .map_err(|e| {
            refused(CheckError::Damaged(anyhow!(e).context(
                "pg_restore could not read the dump's table of contents",
            )))
        })?;
    let check =
        FileCheck::from_listing(m.size_bytes, m.sha256.clone(), &listing, toc).map_err(refused)?;
    Ok(Prepared {
        check,
        source: Source::Checking {
            path,
            id: m.id.clone(),
            size_bytes: m.size_bytes,
            sha256: m.sha256.clone(),
            front: front_file,
        },
        _plain: None,
    })
}

/// A problem `stream` found, as the check of a backup reports it.
pub(super) fn load_check_error(e: stream::LoadError) -> CheckError {
    match e {
        stream::LoadError::Damaged(e) => CheckError::Damaged(e),
        stream::LoadError::Unreadable(e) | stream::LoadError::Restore(e) => {
            CheckError::Unchecked(e)
        }
    }
}

/// An encrypted backup: the stored file is hashed against its manifest while it is
/// decrypted into a private scratch copy, which is then prepared like any backup.
pub(super) fn prepare_encrypted(
    loaded: &Loaded,
    db: &Database,
    catalog: &Catalog,
    m: &Manifest,
    into_new: bool,
) -> anyhow::Result<Prepared> {
    let enc = m.encryption.as_ref().expect("called for encrypted backups");
    let keys = crate::backup::crypt::Keys::for_manifest(&loaded.config.backup, m)
        .with_context(|| format!("backup {} was not restored; nothing was changed", m.id))?;
    let keys = keys.expect("an encrypted manifest has keys or an error");
    let path = m.data_path(&catalog.dir);
    crate::backup::verify::check_size(&path, m).map_err(|e| {
        anyhow!(e).context(format!(
            "backup {} is damaged and was refused; nothing was changed",
            m.id
        ))
    })?;
    let scratch = crate::remote::Scratch::new(&catalog.dir, "decrypted")?;
    let plain_file = m
        .file
        .trim_end_matches(crate::backup::crypt::AGE_SUFFIX)
        .to_string();
    let plain_path = scratch.path().join(&plain_file);
    let mut hashing = crate::backup::verify::HashReader::new(fs_err::File::open(&path)?);
    let (plain_size, plain_sha) = {
        let mut reader = keys
            .open(&mut hashing, &format!("backup {}", m.id), enc)
            .with_context(|| format!("backup {} was not restored; nothing was changed", m.id))?;
        let out = crate::files::create_private(&plain_path)?;
        let mut out =
            crate::backup::create::HashWriter::new(io::BufWriter::with_capacity(1 << 20, out));
        io::copy(&mut reader, &mut out).map_err(|e| {
            anyhow!(e).context(format!(
                "backup {} is damaged and was refused (it does not decrypt); nothing was changed",
                m.id
            ))
        })?;
        let (w, size, sha) = out.finish();
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        (size, sha)
    };
    io::copy(&mut hashing, &mut io::sink())?;
    let (size, sha) = hashing.finish();
    if size != m.size_bytes || sha != m.sha256 {
        bail!(
            "backup {} is damaged and was refused; nothing was changed: the manifest says {} bytes with SHA-256 {}, the stored file has {size} bytes hashing to {sha}",
            m.id,
            m.size_bytes,
            m.sha256
        );
    }
    let mut plain = m.clone();
    plain.file = plain_file;
    plain.size_bytes = plain_size;
    plain.sha256 = plain_sha;
    plain.encryption = None;
    let mut prepared = prepare(loaded, db, &Catalog::new(scratch.path()), &plain, into_new)?;
    prepared._plain = Some(scratch);
    Ok(prepared)
}
