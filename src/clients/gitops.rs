//! GitOps delivery: manifests written into the repository Argo CD watches, either a local Git
//! repository (using the `git` command: real Git, no library quirks) or a GitLab project
//! through its commits API.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use tokio::process::Command;
use tokio::sync::Mutex;

use crate::config::GitConfig;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GitError {
    /// Git is missing or the repository is unusable: retrying will not help.
    #[error("{0}")]
    Permanent(String),
    /// E.g. the push to the remote failed: try again.
    #[error("{0}")]
    Transient(String),
}

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    Committed {
        commit: String,
    },
    /// The file already had that content (or was already gone): no commit.
    Unchanged,
}

pub type GitFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, GitError>> + Send + 'a>>;

/// Where manifests are committed.
pub trait Gitops: Send + Sync {
    /// Writes `content` to `file`, or removes it when `None`, committing with `message` only if
    /// that changes anything.
    fn write<'a>(
        &'a self,
        file: &'a str,
        content: Option<&'a str>,
        message: &'a str,
    ) -> GitFuture<'a, Delivered>;

    /// The committed content of `file`, if any.
    fn read<'a>(&'a self, file: &'a str) -> GitFuture<'a, Option<String>>;
}

/// The backend the configuration names.
pub fn from_config(config: &crate::config::Config) -> Result<Arc<dyn Gitops>, GitError> {
    use crate::config::GitKind;
    match config.delivery.git.kind {
        GitKind::Local => Ok(Arc::new(LocalGit::new(&config.delivery.git))),
        GitKind::Gitlab => {
            let token = config.gitlab_token().map_err(|e| GitError::Permanent(e.to_string()))?;
            Ok(Arc::new(super::gitlab::Gitlab::new(
                &config.delivery.gitlab,
                &config.delivery.git,
                token,
            )?))
        }
    }
}

impl Gitops for LocalGit {
    fn write<'a>(
        &'a self,
        file: &'a str,
        content: Option<&'a str>,
        message: &'a str,
    ) -> GitFuture<'a, Delivered> {
        Box::pin(LocalGit::write(self, file, content, message))
    }

    fn read<'a>(&'a self, file: &'a str) -> GitFuture<'a, Option<String>> {
        Box::pin(LocalGit::read(self, file))
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

    async fn git(&self, args: &[&str]) -> Result<std::process::Output, GitError> {
        Command::new("git")
            .arg("-C")
            .arg(&self.config.path)
            .args(["-c", &format!("user.name={}", self.config.author_name)])
            .args(["-c", &format!("user.email={}", self.config.author_email)])
            .args(args)
            .output()
            .await
            .map_err(|e| GitError::Permanent(format!("cannot run git: {e}")))
    }

    async fn git_ok(&self, args: &[&str]) -> Result<String, GitError> {
        let output = self.git(args).await?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        } else {
            Err(GitError::Permanent(format!(
                "git {} failed in {}: {}",
                args.join(" "),
                self.config.path.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            )))
        }
    }

    /// Creates the repository (on its branch) when the directory has none.
    async fn ensure_repository(&self) -> Result<(), GitError> {
        if self.config.path.join(".git").exists() {
            return Ok(());
        }
        tokio::fs::create_dir_all(&self.config.path).await.map_err(|e| {
            GitError::Permanent(format!("cannot create {}: {e}", self.config.path.display()))
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
    ) -> Result<Delivered, GitError> {
        let _guard = write_lock().lock().await;
        self.ensure_repository().await?;
        let target: PathBuf = self.config.path.join(file);
        match content {
            Some(text) => {
                if let Some(dir) = target.parent() {
                    tokio::fs::create_dir_all(dir).await.map_err(|e| {
                        GitError::Permanent(format!("cannot create {}: {e}", dir.display()))
                    })?;
                }
                tokio::fs::write(&target, text).await.map_err(|e| {
                    GitError::Permanent(format!("cannot write {}: {e}", target.display()))
                })?;
            }
            None => match tokio::fs::remove_file(&target).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(GitError::Permanent(format!(
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
    pub async fn read(&self, file: &str) -> Result<Option<String>, GitError> {
        match tokio::fs::read_to_string(self.config.path.join(file)).await {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(GitError::Permanent(format!("cannot read {file}: {e}"))),
        }
    }

    /// Pushes the branch when a remote is configured; a failure is transient, and a later
    /// attempt pushes whatever is still unpushed.
    async fn push(&self) -> Result<(), GitError> {
        let Some(remote) = &self.config.remote else { return Ok(()) };
        let output = self.git(&["push", "--quiet", remote, &self.config.branch]).await?;
        if output.status.success() {
            Ok(())
        } else {
            Err(GitError::Transient(format!(
                "git push to {remote} failed: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )))
        }
    }
}
