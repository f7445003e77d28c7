//! Writing a state file so that a crash leaves either the old contents or
//! the new, never a torn file: write a temporary file beside it, fsync it,
//! rename it over the file, fsync the directory. Every state file of the
//! scheduler (the resource manager's state, packages, node managers'
//! container tables and process records, the URL files) is written so.

use std::io::Write;
use std::path::Path;

/// Replaces `path` with `bytes` atomically and durably; `mode` sets the
/// permissions (e.g. 0o500 for a package binary; 0o600 by default) before it appears.
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: Option<u32>) -> std::io::Result<()> {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let r = (|| {
        // A new file, never one already there: a directory a job's user
        // owns (a container's, for its process record) could hold a link
        // by this name to a file of the node's.
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        use std::os::unix::fs::PermissionsExt;
        let mut f = create_new(&tmp, 0o600)?;
        f.write_all(bytes)?;
        // Readable by the owner only unless told otherwise.
        f.set_permissions(std::fs::Permissions::from_mode(mode.unwrap_or(0o600)))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// Creates `path` for writing with permissions `mode`, failing if anything
/// is there already: a link by that name is not followed (O_CREAT|O_EXCL).
pub fn create_new(path: &Path, mode: u32) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path)
}

/// Opens a regular file for reading, refusing a symbolic link (its last
/// component), anything but a regular file (a FIFO would block) and a file
/// with other names (a hard link to a file of the node's): for files in
/// directories a job's user owns, which the node manager reads with more
/// rights than the job has.
pub fn open_regular_nofollow(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} is a symbolic link, not a file", path.display()),
            ),
            _ => e,
        })?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not a regular file", path.display()),
        ));
    }
    use std::os::unix::fs::MetadataExt;
    if meta.nlink() != 1 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} has other names (hard links), not a file of its own", path.display()),
        ));
    }
    Ok(f)
}

/// [`write_atomic_mode`] with the default permissions: 0600.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    write_atomic_mode(path, bytes, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_replaced_whole_and_no_temporary_file_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic_mode(&p, b"two", Some(0o555)).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o555);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["state.json"]);
        let e = write_atomic(&dir.path().join("missing/x"), b"x").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn a_link_planted_as_the_temporary_file_is_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"keep").unwrap();
        let p = dir.path().join("process.json");
        let tmp = dir.path().join(format!(".process.json.tmp-{}", std::process::id()));
        std::os::unix::fs::symlink(&secret, &tmp).unwrap();
        write_atomic(&p, b"record").unwrap();
        assert_eq!(std::fs::read(&secret).unwrap(), b"keep");
        assert_eq!(std::fs::read(&p).unwrap(), b"record");
        assert!(!std::fs::symlink_metadata(&p).unwrap().file_type().is_symlink());
    }

    #[test]
    fn reading_refuses_links_and_fifos_but_not_files() {
        use std::io::Read;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("stderr");
        std::fs::write(&file, b"log").unwrap();
        let mut s = String::new();
        open_regular_nofollow(&file).unwrap().read_to_string(&mut s).unwrap();
        assert_eq!(s, "log");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let e = open_regular_nofollow(&link).unwrap_err();
        assert!(e.to_string().contains("is a symbolic link"), "{e}");
        let hard = dir.path().join("hard");
        std::fs::hard_link(&file, &hard).unwrap();
        let e = open_regular_nofollow(&hard).unwrap_err();
        assert!(e.to_string().contains("has other names (hard links)"), "{e}");
        std::fs::remove_file(&hard).unwrap();
        assert!(open_regular_nofollow(&file).is_ok(), "a file of one name again");
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = open_regular_nofollow(&fifo).unwrap_err();
        assert!(e.to_string().contains("is not a regular file"), "{e}");
        assert!(
            open_regular_nofollow(&dir.path().join("missing")).unwrap_err().kind()
                == std::io::ErrorKind::NotFound
        );
    }
}
