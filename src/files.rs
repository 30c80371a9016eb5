//! Small file helpers shared by every layer: atomic, durable writes (temp file, fsync,
//! rename, directory fsync), files only their owner reads, executables.

use std::io::Write;
use std::path::Path;

/// The bytes of `path`, or None when there is no such file (any other failure is an
/// error naming the path): how every state file (journal, route, image record) is read.
pub fn read_if_exists(path: &Path) -> anyhow::Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context(format!("reading {}", path.display()))),
    }
}

/// True when `path` is a regular file someone may execute.
pub fn is_executable_file(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Writes `bytes` to `path` via a temp file in the same directory, fsynced, renamed,
/// with the directory fsynced too. Files are created 0600.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.partial"));
    let result = (|| -> anyhow::Result<()> {
        let mut f = create_private(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs_err::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Creates a new file readable only by its owner (0600), failing if it exists.
pub fn create_private(path: &Path) -> std::io::Result<fs_err::File> {
    use fs_err::os::unix::fs::OpenOptionsExt;
    let mut opts = fs_err::OpenOptions::new();
    opts.write(true).create_new(true).mode(0o600);
    opts.open(path)
}

/// fsyncs a directory so renames in it survive a crash.
pub fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    fs_err::File::open(dir)?.sync_all()?;
    Ok(())
}
