//! GitOps delivery: manifests written into the repository Argo CD watches, either a local Git
//! repository (using the `git` command: real Git, no library quirks) or a GitLab project
//! through its commits API.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use tokio::process::Command;
use tokio::sync::Mutex;

use super::{ClientError, ClientFuture};
use crate::config::GitConfig;

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    Committed {
        commit: String,
    },
    /// The file already had that content (or was already gone): no commit.
    Unchanged,
}

/// Where manifests are committed.
pub trait Gitops: Send + Sync {
    /// Writes `content` to `file`, or removes it when `None`, committing with `message` only if
    /// that changes anything.
    fn write<'a>(
        &'a self,
        file: &'a str,
        content: Option<&'a str>,
        message: &'a str,
    ) -> ClientFuture<'a, Delivered>;

    /// The committed content of `file`, if any.
    fn read<'a>(&'a self, file: &'a str) -> ClientFuture<'a, Option<String>>;

    /// Whether the history of commit `tip` includes commit `revision` (the same commit, or an
    /// ancestor): whether what was synced at `tip` contains what was committed as `revision`.
    /// A commit this repository does not know is not included (yet).
    fn includes<'a>(&'a self, revision: &'a str, tip: &'a str) -> ClientFuture<'a, bool>;
}

/// Whether two commit ids name the same commit (either may be abbreviated).
pub fn same_commit(a: &str, b: &str) -> bool {
    !a.is_empty() && !b.is_empty() && (a.starts_with(b) || b.starts_with(a))
}

impl Gitops for LocalGit {
    fn write<'a>(
        &'a self,
        file: &'a str,
        content: Option<&'a str>,
        message: &'a str,
    ) -> ClientFuture<'a, Delivered> {
        Box::pin(LocalGit::write(self, file, content, message))
    }

    fn read<'a>(&'a self, file: &'a str) -> ClientFuture<'a, Option<String>> {
        Box::pin(LocalGit::read(self, file))
    }

    fn includes<'a>(&'a self, revision: &'a str, tip: &'a str) -> ClientFuture<'a, bool> {
        Box::pin(async move {
            if same_commit(revision, tip) {
                return Ok(true);
            }
            // Exit 0: an ancestor; 1: not one; anything else: a commit unknown here.
            let output = self.git(&["merge-base", "--is-ancestor", revision, tip]).await?;
            Ok(output.status.success())
        })
    }
}

/// A local repository; one writer at a time in this process.
pub struct LocalGit {
    config: GitConfig,
}

/// Serialises writers in this process: git's index lock allows one at a time.
fn write_lock() -> &'static Mutex<()> {
    static LOCK: OnceLock<Mutex<()>> = OnceLock::new();
    LOCK.get_or_init(|| Mutex::new(()))
}

impl LocalGit {
    pub fn new(config: &GitConfig) -> Self {
        Self { config: config.clone() }
    }

    pub fn path(&self) -> &Path {
        &self.config.path
    }

    async fn git(&self, args: &[&str]) -> Result<std::process::Output, ClientError> {
        Command::new("git")
            .arg("-C")
            .arg(&self.config.path)
            .args(["-c", &format!("user.name={}", self.config.author_name)])
            .args(["-c", &format!("user.email={}", self.config.author_email)])
            .args(args)
            .output()
            .await
            .map_err(|e| ClientError::Permanent(format!("cannot run git: {e}")))
    }

    async fn git_ok(&self, args: &[&str]) -> Result<String, ClientError> {
        let output = self.git(args).await?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        } else {
            Err(ClientError::Permanent(format!(
                "git {} failed in {}: {}",
                args.join(" "),
                self.config.path.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            )))
        }
    }

    /// Creates the repository (on its branch) when the directory has none.
    async fn ensure_repository(&self) -> Result<(), ClientError> {
        if self.config.path.join(".git").exists() {
            return Ok(());
        }
        tokio::fs::create_dir_all(&self.config.path).await.map_err(|e| {
            ClientError::Permanent(format!("cannot create {}: {e}", self.config.path.display()))
        })?;
        self.git_ok(&["init", "--quiet", "-b", &self.config.branch]).await?;
        Ok(())
    }

    /// Writes `content` to `file` (relative to the repository), or removes it when `None`,
    /// and commits with `message` if that changed anything. Pushes when a remote is set.
    pub async fn write(
        &self,
        file: &str,
        content: Option<&str>,
        message: &str,
    ) -> Result<Delivered, ClientError> {
        let _guard = write_lock().lock().await;
        self.ensure_repository().await?;
        let target: PathBuf = self.config.path.join(file);
        match content {
            Some(text) => {
                if let Some(dir) = target.parent() {
                    tokio::fs::create_dir_all(dir).await.map_err(|e| {
                        ClientError::Permanent(format!("cannot create {}: {e}", dir.display()))
                    })?;
                }
                tokio::fs::write(&target, text).await.map_err(|e| {
                    ClientError::Permanent(format!("cannot write {}: {e}", target.display()))
                })?;
            }
            None => match tokio::fs::remove_file(&target).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(ClientError::Permanent(format!(
                        "cannot remove {}: {e}",
                        target.display()
                    )));
                }
            },
        }
        self.git_ok(&["add", "--all", "--", file]).await?;
        let staged = self.git(&["diff", "--cached", "--quiet", "--", file]).await?;
        let delivered = if staged.status.success() {
            Delivered::Unchanged
        } else {
            self.git_ok(&["commit", "--quiet", "-m", message, "--", file]).await?;
            Delivered::Committed { commit: self.git_ok(&["rev-parse", "HEAD"]).await? }
        };
        self.push().await?;
        Ok(delivered)
    }

    /// The committed content of `file`, if any.
    pub async fn read(&self, file: &str) -> Result<Option<String>, ClientError> {
        match tokio::fs::read_to_string(self.config.path.join(file)).await {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ClientError::Permanent(format!("cannot read {file}: {e}"))),
        }
    }

    /// Pushes the branch when a remote is configured; a failure is transient, and a later
    /// attempt pushes whatever is still unpushed.
    async fn push(&self) -> Result<(), ClientError> {
        let Some(remote) = &self.config.remote else { return Ok(()) };
        let output = self.git(&["push", "--quiet", remote, &self.config.branch]).await?;
        if output.status.success() {
            Ok(())
        } else {
            Err(ClientError::Transient(format!(
                "git push to {remote} failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )))
        }
    }
}
