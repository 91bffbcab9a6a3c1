//! Small filesystem helpers: private directories and files (0700 / 0600).
//!
//! Everything the service writes (the SQLite database and its WAL, cache content and index,
//! stored variants, temporary originals, the key secret) is private to its user. Libraries
//! create most of those files with their own modes, so the one mechanism that covers them all
//! is the process umask: [`restrict_new_files`] sets it to `077` when the application is built.

use std::path::Path;

/// Create `dir` (and parents) and make it private to this user.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Make every file and directory this process creates from now on private to its user (umask
/// `077`: files 0600, directories 0700), whichever library creates them.
pub fn restrict_new_files() {
    #[cfg(unix)]
    rustix::process::umask(rustix::fs::Mode::from_bits_truncate(0o077));
}
