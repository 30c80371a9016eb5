//! Client-side encryption of backups with age (X25519 recipients): compress, then
//! encrypt, then hash what is stored. The manifest records that a copy is encrypted and
//! for whom (public keys), never a key.

use std::io::{self, Read, Write};
use std::path::Path;

use anyhow::Context;

pub use crate::backup::manifest::Encryption;

/// The first bytes of every binary age file.
pub const AGE_MAGIC: &[u8] = b"age-encryption.org/v1";
/// Appended to the name of an encrypted copy.
pub const AGE_SUFFIX: &str = ".age";

/// The identities that open encrypted copies, and the file they came from.
pub struct Keys {
    identities: Vec<Box<dyn age::Identity>>,
    file: std::path::PathBuf,
}

impl Keys {
    pub fn load(enc: &crate::config::EncryptionConfig) -> anyhow::Result<Keys> {
        let file = enc.identity_file.clone().context(
            "backup.encryption.identity_file is not set: an encrypted backup is opened with an age identity (key) file",
        )?;
        Ok(Keys {
            identities: load_identities(&file)?,
            file,
        })
    }

    /// The keys to open `m` with: None when it is not encrypted; an error that says what
    /// to set when it is and no identity file is configured.
    pub fn for_manifest(
        settings: &crate::config::BackupConfig,
        m: &crate::backup::manifest::Manifest,
    ) -> anyhow::Result<Option<Keys>> {
        let Some(enc) = &m.encryption else {
            return Ok(None);
        };
        match &settings.encryption {
            Some(cfg) if cfg.identity_file.is_some() => Keys::load(cfg).map(Some),
            _ => anyhow::bail!(
                "backup {} is encrypted (age, to {}): set backup.encryption.identity_file to the key of one of those recipients",
                m.id,
                enc.recipients.join(", ")
            ),
        }
    }

    /// The plaintext of a stored copy read from `input`.
    pub fn open<'a, R: Read + 'a>(
        &self,
        input: R,
        what: &str,
        encryption: &Encryption,
    ) -> anyhow::Result<Box<dyn Read + 'a>> {
        decrypting(input, &self.identities, what, encryption, &self.file)
    }
}

pub use crate::config::parse_recipient;

/// An encryptor to `recipients` (checked at config load).
pub fn encryptor(recipients: &[String]) -> anyhow::Result<age::Encryptor> {
    let keys = recipients
        .iter()
        .map(|r| parse_recipient(r).map_err(anyhow::Error::msg))
        .collect::<anyhow::Result<Vec<_>>>()?;
    age::Encryptor::with_recipients(keys.iter().map(|k| k as &dyn age::Recipient))
        .map_err(|e| anyhow::anyhow!("starting age encryption: {e}"))
}

/// What a copy's manifest says about encryption to `recipients`.
pub fn describe(recipients: &[String]) -> Encryption {
    Encryption {
        method: "age".into(),
        recipients: recipients.to_vec(),
    }
}

/// The identities of an age identity file (it must not be readable by others).
pub fn load_identities(path: &Path) -> anyhow::Result<Vec<Box<dyn age::Identity>>> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).with_context(|| {
        format!(
            "reading the age identity file {} (backup.encryption.identity_file)",
            path.display()
        )
    })?;
    if meta.mode() & 0o077 != 0 {
        tracing::warn!(
            "the age identity file {} is readable by others (mode {:o}); chmod 600 it",
            path.display(),
            meta.mode() & 0o777
        );
    }
    let file = age::IdentityFile::from_file(path.display().to_string())
        .with_context(|| format!("reading the age identity file {}", path.display()))?;
    let ids = file.into_identities().map_err(|e| {
        anyhow::anyhow!(
            "the age identity file {} is not usable: {e}",
            path.display()
        )
    })?;
    if ids.is_empty() {
        anyhow::bail!(
            "the age identity file {} holds no identity (AGE-SECRET-KEY-1... lines)",
            path.display()
        );
    }
    Ok(ids)
}

/// The plaintext of an encrypted copy, or a clear refusal when none of `identities`
/// can open it.
pub fn decrypting<'a, R: Read + 'a>(
    input: R,
    identities: &[Box<dyn age::Identity>],
    what: &str,
    encryption: &Encryption,
    identity_file: &Path,
) -> anyhow::Result<Box<dyn Read + 'a>> {
    let decryptor = age::Decryptor::new(input)
        .map_err(|e| anyhow::anyhow!("{what} is not a readable age file: {e}"))?;
    match decryptor.decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity)) {
        Ok(reader) => Ok(Box::new(reader)),
        Err(age::DecryptError::NoMatchingKeys) => Err(anyhow::anyhow!(
            "none of the identities in {} can decrypt {what}: it is encrypted to {}; point backup.encryption.identity_file at the key of one of those recipients",
            identity_file.display(),
            encryption.recipients.join(", ")
        )),
        Err(e) => Err(anyhow::anyhow!("decrypting {what}: {e}")),
    }
}

/// A writer that is either plain or age-encrypted, finished the same way.
pub enum MaybeEncrypted<W: Write> {
    Plain(W),
    Age(age::stream::StreamWriter<W>),
}

impl<W: Write> MaybeEncrypted<W> {
    pub fn new(inner: W, recipients: Option<&[String]>) -> anyhow::Result<Self> {
        Ok(match recipients {
            None => MaybeEncrypted::Plain(inner),
            Some(r) => MaybeEncrypted::Age(
                encryptor(r)?
                    .wrap_output(inner)
                    .context("starting age encryption")?,
            ),
        })
    }

    /// Ends the age stream (its last chunk and tag) and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            MaybeEncrypted::Plain(w) => Ok(w),
            MaybeEncrypted::Age(s) => s.finish(),
        }
    }
}

impl<W: Write> Write for MaybeEncrypted<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            MaybeEncrypted::Plain(w) => w.write(buf),
            MaybeEncrypted::Age(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            MaybeEncrypted::Plain(w) => w.flush(),
            MaybeEncrypted::Age(s) => s.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    #[test]
    fn round_trip_and_a_wrong_key_is_named() {
        let key = age::x25519::Identity::generate();
        let public = key.to_public().to_string();
        let mut w = MaybeEncrypted::new(Vec::new(), Some(std::slice::from_ref(&public))).unwrap();
        w.write_all(b"a pg_dump, compressed").unwrap();
        let stored = w.finish().unwrap();
        assert!(stored.starts_with(AGE_MAGIC));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key.txt");
        std::fs::write(&file, key.to_string().expose_secret()).unwrap();
        let ids = load_identities(&file).unwrap();
        let enc = describe(std::slice::from_ref(&public));
        let mut plain = String::new();
        decrypting(&stored[..], &ids, "backup x", &enc, &file)
            .unwrap()
            .read_to_string(&mut plain)
            .unwrap();
        assert_eq!(plain, "a pg_dump, compressed");

        let other = age::x25519::Identity::generate();
        std::fs::write(&file, other.to_string().expose_secret()).unwrap();
        let ids = load_identities(&file).unwrap();
        let err = decrypting(&stored[..], &ids, "backup x", &enc, &file)
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("none of the identities") && err.contains(&public),
            "{err}"
        );
        assert!(parse_recipient("age1nope").is_err());
    }
}
