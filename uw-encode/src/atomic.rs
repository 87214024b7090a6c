//! Outputs that appear whole or not at all: written under a temporary name
//! in the destination's directory, then renamed. Dropping an uncommitted
//! output (on error or interruption) deletes the temporary.

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

fn parent_of(dest: &Path) -> PathBuf {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn check_free(dest: &Path, force: bool) -> Result<()> {
    if !force && dest.symlink_metadata().is_ok() {
        return Err(Error::OutputExists(dest.to_path_buf()));
    }
    Ok(())
}

/// A file being written; it replaces `dest` only on [`AtomicFile::commit`].
#[derive(Debug)]
pub struct AtomicFile {
    tmp: tempfile::NamedTempFile,
    dest: PathBuf,
    force: bool,
}

impl AtomicFile {
    /// Starts writing `dest`. Fails at once if it exists and `force` is false.
    pub fn create(dest: &Path, force: bool) -> Result<Self> {
        check_free(dest, force)?;
        let dir = parent_of(dest);
        let mut builder = tempfile::Builder::new();
        builder.prefix(".uw-partial-");
        // Temporary files are private (0600) by default; the output is an
        // ordinary file, readable like one made by `cp`.
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
        let tmp = builder.tempfile_in(&dir).at(&dir)?;
        Ok(Self {
            tmp,
            dest: dest.to_path_buf(),
            force,
        })
    }

    /// The temporary file.
    pub fn file(&mut self) -> &mut File {
        self.tmp.as_file_mut()
    }

    /// A buffered writer over the temporary file.
    pub fn writer(&mut self) -> BufWriter<&mut File> {
        BufWriter::with_capacity(1 << 20, self.tmp.as_file_mut())
    }

    /// Syncs and renames the file into place.
    pub fn commit(self) -> Result<()> {
        self.tmp.as_file().sync_all().at(self.tmp.path())?;
        let dest = self.dest.clone();
        let persisted = if self.force {
            self.tmp.persist(&dest)
        } else {
            self.tmp.persist_noclobber(&dest)
        };
        persisted.map(drop).map_err(|e| {
            if e.error.kind() == std::io::ErrorKind::AlreadyExists {
                Error::OutputExists(dest.clone())
            } else {
                Error::Io {
                    path: dest.clone(),
                    source: e.error,
                }
            }
        })
    }
}

/// A directory being filled; it replaces `dest` only on [`AtomicDir::commit`].
#[derive(Debug)]
pub struct AtomicDir {
    tmp: tempfile::TempDir,
    dest: PathBuf,
    force: bool,
}

impl AtomicDir {
    /// Starts building `dest`. Fails at once if it exists and `force` is false.
    pub fn create(dest: &Path, force: bool) -> Result<Self> {
        check_free(dest, force)?;
        let dir = parent_of(dest);
        let tmp = tempfile::Builder::new()
            .prefix(".uw-partial-")
            .tempdir_in(&dir)
            .at(&dir)?;
        Ok(Self {
            tmp,
            dest: dest.to_path_buf(),
            force,
        })
    }

    /// Where to write the contents.
    pub fn path(&self) -> &Path {
        self.tmp.path()
    }

    /// Renames the directory into place (removing an old `dest` with `force`).
    pub fn commit(self) -> Result<()> {
        let dest = self.dest;
        if dest.symlink_metadata().is_ok() {
            if !self.force {
                return Err(Error::OutputExists(dest));
            }
            if dest.is_dir() {
                std::fs::remove_dir_all(&dest).at(&dest)?;
            } else {
                std::fs::remove_file(&dest).at(&dest)?;
            }
        }
        let tmp = self.tmp.keep();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).at(&tmp)?;
        }
        std::fs::rename(&tmp, &dest).at(&dest).inspect_err(|_| {
            let _ = std::fs::remove_dir_all(&tmp);
        })
    }
}
