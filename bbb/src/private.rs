//! Keeping what bbb writes out of the tasks' reach: the data directory of
//! `bbb up` and the files in it are readable by their owner only, since the
//! native worker's tasks run as other OS users on the same host.

use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Clears the group and other bits of `path` beyond `mode`'s (e.g. 0o600
/// for a file, 0o700 for a directory). Returns the old mode when it changed.
pub fn restrict(path: &Path, mode: u32) -> io::Result<Option<u32>> {
    let old = std::fs::metadata(path)?.permissions().mode() & 0o7777;
    let new = old & !0o077 | mode & 0o077;
    if new == old {
        return Ok(None);
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(new))?;
    Ok(Some(old))
}

/// Writes `content` to a file only its owner can read, replacing it.
pub fn write_private(path: &Path, content: &str) -> io::Result<()> {
    use std::io::Write;
    bbb_secret::create_private_file(path)?.write_all(content.as_bytes())
}

/// Secures `bbb up`'s data directory before anything runs: the directory
/// itself becomes 0700, or 0711 when `traversable` (task users must pass
/// through it to reach their task directories in `tasks/`, without being
/// able to list it); every file directly in it becomes 0600 and every
/// directory but `tasks` 0700 (SQLite gives its `-wal` and `-shm` files the
/// mode of the database file). `private_files` and `private_dirs` that do not
/// exist yet (the SQLite databases and the artifact store it will hold) are
/// made empty, with mode 0600 and 0700, so they are never readable by others,
/// not even for a moment.
pub fn secure_data_dir(
    dir: &Path,
    traversable: bool,
    private_files: &[&str],
    private_dirs: &[&str],
) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let mode = if traversable { 0o711 } else { 0o700 };
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))?;
    for name in private_dirs {
        let path = dir.join(name);
        if std::fs::symlink_metadata(&path).is_err() {
            std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        }
    }
    for name in private_files {
        let path = dir.join(name);
        if std::fs::symlink_metadata(&path).is_err() {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)?;
        }
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() && entry.file_name() != "tasks" {
            restrict(&entry.path(), 0o700)?;
        } else if kind.is_file() {
            restrict(&entry.path(), 0o600)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn data_dir_is_secured() {
        let dir = std::env::temp_dir().join(format!("bbb-private-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        std::fs::create_dir_all(dir.join("tasks")).unwrap();
        std::fs::set_permissions(dir.join("tasks"), std::fs::Permissions::from_mode(0o711))
            .unwrap();
        std::fs::write(dir.join("queue.sqlite-wal"), "x").unwrap();
        std::fs::set_permissions(
            dir.join("queue.sqlite-wal"),
            std::fs::Permissions::from_mode(0o644),
        )
        .unwrap();
        secure_data_dir(&dir, true, &["queue.sqlite"], &["artifacts"]).unwrap();
        assert_eq!(mode(&dir), 0o711);
        assert_eq!(mode(&dir.join("queue.sqlite")), 0o600);
        assert_eq!(std::fs::read(dir.join("queue.sqlite")).unwrap().len(), 0);
        assert_eq!(mode(&dir.join("queue.sqlite-wal")), 0o600);
        assert_eq!(mode(&dir.join("artifacts")), 0o700);
        assert_eq!(mode(&dir.join("logs")), 0o700);
        assert_eq!(mode(&dir.join("tasks")), 0o711);
        write_private(&dir.join("token"), "t").unwrap();
        assert_eq!(mode(&dir.join("token")), 0o600);
        assert_eq!(restrict(&dir.join("token"), 0o600).unwrap(), None);
        secure_data_dir(&dir, false, &[], &[]).unwrap();
        assert_eq!(mode(&dir), 0o700);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
