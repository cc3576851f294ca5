//! GitOps delivery: manifests written into the repository Argo CD watches, either a local Git
//! repository (using the `git` command: real Git, no library quirks) or a GitLab project
//! through its commits API.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::{Mutex, oneshot};

use super::{ClientError, ClientFuture};
use crate::config::{GitConfig, redact_credentials};

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivered {
    Committed {
        commit: String,
    },
    /// The file already had that content (or was already gone): no commit. `commit` is the
    /// last one that changed the file, if any: after a retry whose earlier attempt committed,
    /// that is the earlier attempt's commit, which Argo CD must still be waited for.
    Unchanged {
        commit: Option<String>,
    },
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

    /// The committed contents of `files`, in their order: what a resync compares a page of
    /// projects with. One `read` each unless the repository can do better.
    fn read_many<'a>(&'a self, files: &'a [String]) -> ClientFuture<'a, Vec<Option<String>>> {
        Box::pin(async move {
            let mut contents = Vec::with_capacity(files.len());
            for file in files {
                contents.push(self.read(file).await?);
            }
            Ok(contents)
        })
    }

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

    fn read_many<'a>(&'a self, files: &'a [String]) -> ClientFuture<'a, Vec<Option<String>>> {
        Box::pin(LocalGit::read_many(self, files))
    }

    fn includes<'a>(&'a self, revision: &'a str, tip: &'a str) -> ClientFuture<'a, bool> {
        Box::pin(async move {
            if same_commit(revision, tip) {
                return Ok(true);
            }
            // Exit 0: an ancestor; 1: not one; anything else: a commit unknown here, such as
            // one another host pushed: fetch once and look again.
            let output = self.git(&["merge-base", "--is-ancestor", revision, tip]).await?;
            match output.status.code() {
                Some(0) => Ok(true),
                Some(1) => Ok(false),
                _ if self.config.remote.is_some() => {
                    self.fetch().await?;
                    let again = self.git(&["merge-base", "--is-ancestor", revision, tip]).await?;
                    Ok(again.status.success())
                }
                _ => Ok(false),
            }
        })
    }
}

/// A local repository, written by one writer at a time: within a process (a mutex) and
/// across processes on the host (an OS file lock on `.git/infrahub.lock`), so several daemons
/// may share one working tree. With a remote, each write first brings the branch up to date
/// and each push that is refused (another host pushed first) is rebased and tried again, so
/// hosts sharing a remote never diverge.
pub struct LocalGit {
    config: GitConfig,
    /// How long a writer waits for the file lock before giving up (transiently).
    lock_timeout: Duration,
    /// How long one `git` command may run before it is killed.
    command_timeout: Duration,
}

/// The writers of one repository in this process. They queue their writes here and take turns
/// (before the file lock, so that they wait here rather than poll it); the writer whose turn it
/// is makes the oldest waiting write of each file in one commit and tells each writer how its
/// write went, so a burst of deliveries costs a few git processes a commit instead of a few
/// each.
#[derive(Default)]
struct Writers {
    turn: Mutex<()>,
    waiting: std::sync::Mutex<Waiting>,
    /// Whether a writer of this process has looked over the working tree yet: the first one
    /// does, whatever the marker says (an older version's leftovers, a hand edit), later ones
    /// only after an interrupted write (see [`WRITING`]).
    looked_over: std::sync::atomic::AtomicBool,
    /// Commits made by this process, for `git gc --auto` every [`GC_EVERY`].
    commits: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct Waiting {
    next_id: u64,
    /// In the order they were made (by `id`).
    writes: Vec<Pending>,
}

/// A write waiting for a turn; its writer hears how it went through `done`.
struct Pending {
    id: u64,
    file: String,
    content: Option<String>,
    message: String,
    done: oneshot::Sender<Result<Delivered, ClientError>>,
}

/// A batch's files put in place and staged.
struct Staged {
    /// Each write's own failure to put its file in place.
    put: Vec<Result<(), ClientError>>,
    /// What the index changes against the branch.
    changed: HashSet<String>,
    /// The files put in place.
    ours: HashSet<String>,
}

impl Staged {
    /// Whether the index changes more than this batch's files.
    fn foreign(&self) -> bool {
        self.changed.iter().any(|file| !self.ours.contains(file))
    }
}

impl Writers {
    fn of(repository: &Path) -> Arc<Writers> {
        static ALL: OnceLock<std::sync::Mutex<HashMap<PathBuf, Arc<Writers>>>> = OnceLock::new();
        let mut all = ALL.get_or_init(Default::default).lock().unwrap_or_else(|p| p.into_inner());
        all.entry(repository.to_owned()).or_default().clone()
    }

    fn waiting(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a new write, returning its id and where to hear how it went.
    fn queue(
        &self,
        file: &str,
        content: Option<&str>,
        message: &str,
    ) -> (u64, oneshot::Receiver<Result<Delivered, ClientError>>) {
        let (done, outcome) = oneshot::channel();
        let mut waiting = self.waiting();
        waiting.next_id += 1;
        let id = waiting.next_id;
        let (file, message) = (file.to_owned(), message.to_owned());
        waiting.put(Pending { id, file, content: content.map(str::to_owned), message, done });
        (id, outcome)
    }

    /// Takes the oldest waiting write of each file, in their order: a later write of a file
    /// already taken waits for the next turn, so each file's writes land in the order made.
    /// Writes whose writers stopped waiting are dropped.
    fn take(&self) -> Vec<Pending> {
        let mut waiting = self.waiting();
        let mut files = std::collections::HashSet::new();
        let (taken, left) = std::mem::take(&mut waiting.writes)
            .into_iter()
            .filter(|w| !w.done.is_closed())
            .partition(|w| files.insert(w.file.clone()));
        waiting.writes = left;
        taken
    }

    /// Withdraws write `id` if it is still waiting (its writer gave up).
    fn withdraw(&self, id: u64) {
        self.waiting().writes.retain(|w| w.id != id);
    }
}

impl Waiting {
    /// Puts a write in its place by id: a new one last, one handed back before later ones.
    fn put(&mut self, pending: Pending) {
        let at = self.writes.partition_point(|w| w.id < pending.id);
        self.writes.insert(at, pending);
    }
}

/// A write in the queue: withdrawn when its writer stops waiting (a job's timeout), so a write
/// no one waits for is not made later. One already taken into a turn's commit is still made.
struct Queued {
    writers: Arc<Writers>,
    id: u64,
}

impl Drop for Queued {
    fn drop(&mut self) {
        self.writers.withdraw(self.id);
    }
}

/// The writes a turn-holder took: those it has not answered when it stops (its job's timeout)
/// go back in their places, before any later write of the same file can be taken, so none is
/// lost or overtaken. Writing again what was already written changes nothing.
struct Carried {
    writers: Arc<Writers>,
    writes: Vec<Pending>,
    /// The turn-holder's own write: not handed back, its writer is the one giving up.
    own: u64,
}

impl Drop for Carried {
    fn drop(&mut self) {
        if self.writes.is_empty() {
            return;
        }
        let mut waiting = self.writers.waiting();
        let own = self.own;
        for pending in self.writes.drain(..).filter(|w| w.id != own && !w.done.is_closed()) {
            waiting.put(pending);
        }
    }
}

/// What a writer hears when the writer that carried its write stopped without handing it back:
/// not expected (a handed-back write keeps its channel), and safe to retry.
fn dropped() -> ClientError {
    ClientError::Transient("the write was abandoned by the writer that carried it".to_owned())
}

/// One commit's message for several writes: the first's subject with a count, and every
/// write's message in the body.
fn commit_message(messages: &[&str]) -> String {
    match messages {
        [one] => (*one).to_owned(),
        [first, rest @ ..] => {
            let subject = first.lines().next().unwrap_or_default();
            let body: Vec<String> = messages.iter().map(|m| format!("- {m}")).collect();
            format!("{subject} (and {} more)\n\n{}", rest.len(), body.join("\n"))
        }
        [] => "deliver manifests".to_owned(),
    }
}

/// Whether `file` is a path git stages as written: relative, without empty, `.` or `..`
/// parts, and outside `.git` (git would silently skip or rename anything else, and its write
/// would be reported unchanged).
fn is_plain_path(file: &str) -> bool {
    !file.is_empty() && file.split('/').all(|part| !matches!(part, "" | "." | ".." | ".git"))
}

/// Refuses `file` (a plain relative path) when the repository at `root` holds a symbolic link
/// at one of its directories, or at `file` itself unless `may_end_in_link`: whoever may push
/// to the repository could commit one, and a write, a directory made or a removal through it
/// would land outside the repository, with the daemon's rights. Only this process's writers
/// change the working tree, under the repository's lock, so what is checked is what is
/// written.
async fn refuse_links(root: &Path, file: &str, may_end_in_link: bool) -> Result<(), ClientError> {
    let mut at = root.to_path_buf();
    let parts = file.split('/').count();
    for (index, part) in file.split('/').enumerate() {
        at.push(part);
        let last = index + 1 == parts;
        match tokio::fs::symlink_metadata(&at).await {
            Ok(found) if found.file_type().is_symlink() && !(last && may_end_in_link) => {
                let link = at.strip_prefix(root).unwrap_or(&at).display().to_string();
                return Err(ClientError::Permanent(format!(
                    "{link} is a symbolic link in the repository: {file} is not written through it"
                )));
            }
            Ok(_) => {}
            // Nothing further exists, so no link either.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(ClientError::Permanent(format!(
                    "cannot look at {}: {e}",
                    at.display()
                )));
            }
        }
    }
    Ok(())
}

/// Git's lock files in `git_dir` (its top level and `refs/`) older than `age`: a younger one
/// may belong to a git command still finishing for a daemon that was killed. Our own
/// `infrahub.lock` is not git's.
fn stale_git_locks(git_dir: &Path, age: Duration) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![git_dir.to_owned()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                if path.starts_with(git_dir.join("refs")) {
                    dirs.push(path);
                }
                continue;
            }
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let old = meta.modified().ok().and_then(|at| at.elapsed().ok()).unwrap_or_default();
            if name.ends_with(".lock") && name != "infrahub.lock" && old >= age {
                found.push(path);
            }
        }
    }
    found
}

/// Pushes refused because the remote moved on are rebased and pushed again this many times.
const PUSH_TRIES: usize = 5;

/// The marker a writer leaves in `.git` from the moment it starts changing the repository until
/// its write is done: found by the next writer, it means a write was cut short (a daemon
/// killed, a git command stopped, a failure half-way), so the working tree and the index are
/// brought back to the last commit first. Without it the next writer skips that check, which
/// reads every file of the working tree (`git status`: 23 ms a commit at 20,000 projects).
const WRITING: &str = "infrahub.writing";

/// `git gc --auto` (which `git commit` would run after each commit) after every this many
/// commits of a process: it only looks at the object count unless there is work, which it
/// does in the background.
const GC_EVERY: u64 = 16;

/// Whether git's complaint is about a lock another writer holds (`index.lock`,
/// `HEAD.lock`, a ref lock): that passes, so it is worth another attempt.
fn is_lock_contention(stderr: &str) -> bool {
    stderr.contains(".lock")
        && (stderr.contains("File exists") || stderr.contains("Unable to create"))
}

impl LocalGit {
    pub fn new(config: &GitConfig) -> Self {
        Self {
            config: config.clone(),
            lock_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(60),
        }
    }

    /// The same repository with other waits: for the file lock, and for one `git` command
    /// (tests shorten them).
    pub fn with_timeouts(mut self, lock: Duration, command: Duration) -> Self {
        self.lock_timeout = lock;
        self.command_timeout = command;
        self
    }

    pub fn path(&self) -> &Path {
        &self.config.path
    }

    /// Runs git in the repository; a command that outlives its timeout is killed.
    async fn git(&self, args: &[&str]) -> Result<std::process::Output, ClientError> {
        self.run_git(args, None).await
    }

    /// [`Self::git`] with `input` on git's standard input.
    async fn git_input(
        &self,
        args: &[&str],
        input: String,
    ) -> Result<std::process::Output, ClientError> {
        self.run_git(args, Some(input)).await
    }

    async fn run_git(
        &self,
        args: &[&str],
        input: Option<String>,
    ) -> Result<std::process::Output, ClientError> {
        use std::process::Stdio;
        let cannot = |e: std::io::Error| ClientError::Permanent(format!("cannot run git: {e}"));
        let mut child = Command::new("git")
            .arg("-C")
            .arg(&self.config.path)
            .args(["-c", &format!("user.name={}", self.config.author_name)])
            .args(["-c", &format!("user.email={}", self.config.author_email)])
            .args(args)
            .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(cannot)?;
        // Written while the output is read, so neither pipe can fill up and stall git.
        let writer = input.zip(child.stdin.take()).map(|(input, mut stdin)| {
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                stdin.write_all(input.as_bytes()).await
            })
        });
        let output =
            match tokio::time::timeout(self.command_timeout, child.wait_with_output()).await {
                Ok(output) => output.map_err(cannot)?,
                Err(_) => {
                    return Err(ClientError::Transient(format!(
                        "git {} did not finish within {}s and was stopped",
                        args.first().copied().unwrap_or_default(),
                        self.command_timeout.as_secs()
                    )));
                }
            };
        if let Some(writer) = writer {
            let _ = writer.await;
        }
        Ok(output)
    }

    /// Runs git and returns its output, or says why it failed: a lock another writer holds is
    /// transient, anything else permanent. Credentials in a remote URL never reach the message.
    async fn git_ok(&self, args: &[&str]) -> Result<String, ClientError> {
        Ok(self.git_ok_raw(args).await?.trim().to_owned())
    }

    /// [`Self::git_ok`], its output untrimmed.
    async fn git_ok_raw(&self, args: &[&str]) -> Result<String, ClientError> {
        let output = self.git(args).await?;
        self.succeeded(args, output)
    }

    /// The output of a git command that succeeded, or why it failed (see [`Self::git_ok`]).
    fn succeeded(
        &self,
        args: &[&str],
        output: std::process::Output,
    ) -> Result<String, ClientError> {
        if output.status.success() {
            return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let message = redact_credentials(&format!(
            "git {} failed in {}: {}",
            args.join(" "),
            self.config.path.display(),
            stderr.trim()
        ));
        if is_lock_contention(&stderr) {
            Err(ClientError::Transient(message))
        } else {
            Err(ClientError::Permanent(message))
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

    /// Takes the repository's file lock, waiting up to the lock timeout; it is released when
    /// the returned file is dropped.
    async fn lock_file(&self) -> Result<std::fs::File, ClientError> {
        let path = self.config.path.join(".git").join("infrahub.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| ClientError::Permanent(format!("cannot open {}: {e}", path.display())))?;
        let deadline = tokio::time::Instant::now() + self.lock_timeout;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(file),
                Err(std::fs::TryLockError::WouldBlock)
                    if tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(ClientError::Transient(format!(
                        "the repository {} is busy: another writer held its lock for {}s",
                        self.config.path.display(),
                        self.lock_timeout.as_secs()
                    )));
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(ClientError::Permanent(format!(
                        "cannot lock {}: {e}",
                        path.display()
                    )));
                }
            }
        }
    }

    /// Writes `content` to `file` (relative to the repository), or removes it when `None`,
    /// and commits with `message` if that changed anything. With a remote, the branch is
    /// brought up to date first and pushed after. Writes of other files waiting meanwhile in
    /// this process share the commit (see [`Writers`]).
    pub async fn write(
        &self,
        file: &str,
        content: Option<&str>,
        message: &str,
    ) -> Result<Delivered, ClientError> {
        if !is_plain_path(file) {
            return Err(ClientError::Permanent(format!(
                "cannot write {file:?}: not a plain relative path in the repository"
            )));
        }
        let writers = Writers::of(&self.config.path);
        let (id, mut outcome) = writers.queue(file, content, message);
        let _queued = Queued { writers: writers.clone(), id };
        loop {
            // A write another writer carried is answered without waiting for the turn.
            let _turn = tokio::select! {
                biased;
                answered = &mut outcome => match answered {
                    Ok(delivered) => return delivered,
                    Err(_) => return Err(dropped()),
                },
                turn = writers.turn.lock() => turn,
            };
            match outcome.try_recv() {
                Ok(delivered) => return delivered,
                Err(oneshot::error::TryRecvError::Closed) => return Err(dropped()),
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            let writes = writers.take();
            let mut carried = Carried { writers: writers.clone(), writes, own: id };
            let delivered = self.write_all(&carried.writes).await;
            for (pending, delivered) in carried.writes.drain(..).zip(delivered) {
                let _ = pending.done.send(delivered);
            }
            // Ours was in that commit, unless an earlier write of the same file was.
        }
    }

    /// Makes `batch` (one write per file) in one commit and says how each went. When that
    /// fails for good, each is made alone, so that one write that cannot be made (a path git
    /// refuses) does not fail the others.
    async fn write_all(&self, batch: &[Pending]) -> Vec<Result<Delivered, ClientError>> {
        if batch.is_empty() {
            return Vec::new();
        }
        match self.commit_all(batch).await {
            Ok(delivered) => delivered,
            Err(ClientError::Permanent(_)) if batch.len() > 1 => {
                let mut each = Vec::with_capacity(batch.len());
                for pending in batch {
                    each.push(match self.commit_all(std::slice::from_ref(pending)).await {
                        Ok(mut delivered) => delivered.pop().unwrap_or_else(|| Err(dropped())),
                        Err(e) => Err(e),
                    });
                }
                each
            }
            Err(e) => batch.iter().map(|_| Err(e.clone())).collect(),
        }
    }

    /// Makes `batch` in one commit, holding the repository's file lock: each write's own
    /// failure, or `Err` for the commit's. The commit is made with git's plumbing
    /// (`write-tree`, `commit-tree`, `update-ref`), which neither reads the working tree again
    /// nor runs the repository's commit hooks.
    async fn commit_all(
        &self,
        batch: &[Pending],
    ) -> Result<Vec<Result<Delivered, ClientError>>, ClientError> {
        self.ensure_repository().await?;
        let _across_processes = self.lock_file().await?;
        let writers = Writers::of(&self.config.path);
        self.recover(&writers).await?;
        let marker = self.config.path.join(".git").join(WRITING);
        std::fs::File::create(&marker).map_err(|e| {
            ClientError::Permanent(format!("cannot create {}: {e}", marker.display()))
        })?;
        self.pull().await?;
        // The branch as this write finds it: what the staged files are compared with, the
        // commit's parent, and where the branch must still be for the commit to land.
        let mut head = self.head().await?;
        let mut staged = self.stage(batch, head.as_deref()).await?;
        if staged.foreign() {
            // Staged by someone else (by hand, or by a writer that left no marker: an older
            // version killed half-way): not this commit's to make. Cleared, and staged again.
            tracing::warn!(path = %self.config.path.display(), "discarding changes staged outside InfraHub");
            self.discard_uncommitted().await?;
            head = self.head().await?;
            staged = self.stage(batch, head.as_deref()).await?;
            if staged.foreign() {
                return Err(ClientError::Transient(format!(
                    "changes staged outside InfraHub in {} came back",
                    self.config.path.display()
                )));
            }
        }
        let Staged { put, changed, ours } = staged;
        if ours.is_empty() {
            return Ok(put.into_iter().filter_map(Result::err).map(Err).collect());
        }
        // Only files put in place were staged, so only theirs changed.
        let messages: Vec<&str> = batch
            .iter()
            .filter(|w| changed.contains(&w.file))
            .map(|w| w.message.as_str())
            .collect();
        let committed = match changed.is_empty() {
            true => None,
            false => Some(self.commit_index(&commit_message(&messages), head.as_deref()).await?),
        };
        self.push().await?;
        // A file that could not be put in place may be half-written: the next writer clears it.
        if put.iter().all(Result::is_ok) {
            std::fs::remove_file(&marker).map_err(|e| {
                ClientError::Permanent(format!("cannot remove {}: {e}", marker.display()))
            })?;
        }
        if committed.is_some() {
            self.collect_garbage(&writers).await;
        }
        // Where the commit is now: without a remote, the one just made; with one, a rebase
        // during the push may have moved it, so the newest that touched one of its files.
        let commit = match (committed, &self.config.remote) {
            (Some(commit), None) => commit,
            (Some(_), Some(_)) => match batch.iter().find(|w| changed.contains(&w.file)) {
                Some(write) => self.last_commit_of(&write.file).await?,
                None => String::new(),
            },
            (None, _) => String::new(),
        };
        let mut delivered = Vec::with_capacity(batch.len());
        for (pending, put) in batch.iter().zip(put) {
            delivered.push(match put {
                Err(e) => Err(e),
                Ok(()) if changed.contains(&pending.file) => {
                    Ok(Delivered::Committed { commit: commit.clone() })
                }
                Ok(()) => match self.last_commit_of(&pending.file).await {
                    Ok(last) => {
                        Ok(Delivered::Unchanged { commit: Some(last).filter(|c| !c.is_empty()) })
                    }
                    Err(e) => Err(e),
                },
            });
        }
        Ok(delivered)
    }

    /// Puts each write's file in place (one that cannot be fails its own write, not the
    /// others') and stages them; says what the index now changes against `head`, the branch's
    /// commit (`None`: no commit yet).
    async fn stage(&self, batch: &[Pending], head: Option<&str>) -> Result<Staged, ClientError> {
        let mut put = Vec::with_capacity(batch.len());
        for pending in batch {
            put.push(self.put(&pending.file, pending.content.as_deref()).await);
        }
        let ours: HashSet<String> = batch
            .iter()
            .zip(&put)
            .filter(|(_, p)| p.is_ok())
            .map(|(w, _)| w.file.clone())
            .collect();
        if ours.is_empty() {
            return Ok(Staged { put, changed: HashSet::new(), ours });
        }
        // `--remove` stages a removal, and a file already removed by an earlier attempt (killed
        // before it could say so) matches nothing and changes nothing.
        let list: String = ours.iter().map(|f| format!("{f}\0")).collect();
        let args = ["update-index", "--add", "--remove", "-z", "--stdin"];
        let output = self.git_input(&args, list).await?;
        self.succeeded(&args, output)?;
        // Without rename detection: a removal next to a similar new file is a removal.
        let mut diff = vec!["diff", "--cached", "--name-only", "--no-renames", "-z"];
        diff.extend(head);
        let staged = self.git_ok_raw(&diff).await?;
        let changed = staged.split('\0').filter(|f| !f.is_empty()).map(str::to_owned).collect();
        Ok(Staged { put, changed, ours })
    }

    /// Commits the index on `head`, the branch's commit this write found (`None`: the
    /// branch's first commit), with `message`, and moves the branch to it; returns the new
    /// commit.
    async fn commit_index(&self, message: &str, head: Option<&str>) -> Result<String, ClientError> {
        let tree = self.git_ok(&["write-tree"]).await?;
        let mut args = vec!["commit-tree", tree.as_str()];
        if let Some(parent) = head {
            args.extend(["-p", parent]);
        }
        args.extend(["-m", message]);
        let commit = self.git_ok(&args).await?;
        let subject = message.lines().next().unwrap_or_default();
        self.advance_head(&commit, head, subject).await?;
        Ok(commit)
    }

    /// The branch's commit, `None` before the first.
    async fn head(&self) -> Result<Option<String>, ClientError> {
        let head = self.git(&["rev-parse", "--verify", "--quiet", "HEAD"]).await?;
        let sha = String::from_utf8_lossy(&head.stdout).trim().to_owned();
        Ok(head.status.success().then_some(sha))
    }

    /// Moves the branch to `commit` (whose subject is `subject`) only from `parent`, the
    /// commit it was made on (`None`: only if the branch has no commit yet): a commit someone
    /// made meanwhile without the repository's file lock (by hand, say) is never overwritten;
    /// the write fails, transiently, and its retry commits on top of it.
    async fn advance_head(
        &self,
        commit: &str,
        parent: Option<&str>,
        subject: &str,
    ) -> Result<(), ClientError> {
        let reflog = match parent {
            Some(_) => format!("commit: {subject}"),
            None => format!("commit (initial): {subject}"),
        };
        let args = ["update-ref", "-m", reflog.as_str(), "HEAD", commit, parent.unwrap_or("")];
        let output = self.git(&args).await?;
        if output.status.success() {
            return Ok(());
        }
        // Refused: because the branch is no longer where the commit was made on (git's own
        // words for it depend on the locale), or for another reason, said as git said it.
        if self.head().await?.as_deref() != parent {
            return Err(ClientError::Transient(format!(
                "the branch in {} moved while a write committed; it is tried again on top",
                self.config.path.display()
            )));
        }
        self.succeeded(&args, output).map(|_| ())
    }

    /// Every [`GC_EVERY`] commits of this process, lets git pack its objects if they call for
    /// it (`gc --auto`, which works in the background). The commits are made by then: a gc
    /// that fails is logged, not the write's failure.
    async fn collect_garbage(&self, writers: &Writers) {
        let made = writers.commits.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if made % GC_EVERY != GC_EVERY - 1 {
            return;
        }
        if let Err(e) = self.git_ok(&["gc", "--auto", "--quiet"]).await {
            tracing::warn!(path = %self.config.path.display(), error = %e, "git gc --auto failed");
        }
    }

    /// Puts `content` in `file` in the working tree, or removes it when `None`. Never through
    /// a symbolic link: see [`refuse_links`].
    async fn put(&self, file: &str, content: Option<&str>) -> Result<(), ClientError> {
        // A removal deletes a link at `file` itself (it is not followed), not one above it.
        refuse_links(&self.config.path, file, content.is_none()).await?;
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
                })
            }
            None => match tokio::fs::remove_file(&target).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => {
                    Err(ClientError::Permanent(format!("cannot remove {}: {e}", target.display())))
                }
            },
        }
    }

    /// The newest commit that touched `file`.
    async fn last_commit_of(&self, file: &str) -> Result<String, ClientError> {
        self.git_ok(&["log", "-1", "--format=%H", "--", file]).await
    }

    /// The committed content of `file` (at `HEAD`, not the working tree, which a writer may be
    /// changing), if any.
    pub async fn read(&self, file: &str) -> Result<Option<String>, ClientError> {
        if !self.config.path.join(".git").exists() {
            return Ok(None);
        }
        let output = self.git(&["show", &format!("HEAD:{file}")]).await?;
        if output.status.success() {
            return Ok(Some(String::from_utf8_lossy(&output.stdout).into_owned()));
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let absent = ["does not exist", "exists on disk, but not in", "invalid object name"];
        if absent.iter().any(|a| stderr.contains(a)) {
            return Ok(None);
        }
        Err(ClientError::Permanent(redact_credentials(&format!(
            "cannot read {file} from {}: {}",
            self.config.path.display(),
            stderr.trim()
        ))))
    }

    /// The committed contents of `files`: `git ls-tree` finds their blobs in HEAD in one pass
    /// over the trees, and one `git cat-file --batch` prints them. A page of projects costs two
    /// processes, instead of a `git show` each that looks its path up in a directory of
    /// thousands of files again.
    pub async fn read_many(&self, files: &[String]) -> Result<Vec<Option<String>>, ClientError> {
        if files.is_empty() || !self.config.path.join(".git").exists() {
            return Ok(vec![None; files.len()]);
        }
        // One tree for every chunk, even if a commit lands meanwhile; none: nothing committed.
        let head = self.git(&["rev-parse", "--verify", "--quiet", "HEAD^{tree}"]).await?;
        let tree = String::from_utf8_lossy(&head.stdout).trim().to_owned();
        if !head.status.success() || tree.is_empty() {
            return Ok(vec![None; files.len()]);
        }
        let mut blobs: HashMap<String, String> = HashMap::new();
        // Chunks keep the command line short whatever the caller asks for.
        for chunk in files.chunks(500) {
            let mut args = vec!["--literal-pathspecs", "ls-tree", "-r", "-z", tree.as_str(), "--"];
            args.extend(chunk.iter().map(String::as_str));
            let listed = self.git(&args).await?;
            if !listed.status.success() {
                return Err(ClientError::Permanent(redact_credentials(&format!(
                    "git ls-tree failed in {}: {}",
                    self.config.path.display(),
                    String::from_utf8_lossy(&listed.stderr).trim()
                ))));
            }
            // `<mode> <type> <object>\t<path>\0`, paths unquoted under -z.
            for entry in listed.stdout.split(|&b| b == 0).filter(|e| !e.is_empty()) {
                let entry = String::from_utf8_lossy(entry);
                let Some((meta, path)) = entry.split_once('\t') else { continue };
                if let [_, "blob", object] = meta.split(' ').collect::<Vec<_>>()[..] {
                    blobs.insert(path.to_owned(), object.to_owned());
                }
            }
        }
        let wanted: Vec<&String> = files.iter().filter_map(|f| blobs.get(f)).collect();
        let mut contents = self.cat_blobs(&wanted).await?.into_iter();
        Ok(files.iter().map(|f| blobs.get(f).and_then(|_| contents.next())).collect())
    }

    /// The contents of the blobs `objects`, in their order, from one `git cat-file --batch`.
    async fn cat_blobs(&self, objects: &[&String]) -> Result<Vec<String>, ClientError> {
        if objects.is_empty() {
            return Ok(Vec::new());
        }
        let requests: String = objects.iter().map(|o| format!("{o}\n")).collect();
        let output = self.git_input(&["cat-file", "--batch"], requests).await?;
        if !output.status.success() {
            return Err(ClientError::Permanent(redact_credentials(&format!(
                "git cat-file failed in {}: {}",
                self.config.path.display(),
                String::from_utf8_lossy(&output.stderr).trim()
            ))));
        }
        parse_batch(&output.stdout, objects.len()).ok_or_else(|| {
            ClientError::Permanent("git cat-file --batch answered out of protocol".to_owned())
        })
    }

    /// Fetches the remote's branch (objects and `FETCH_HEAD` only), holding the repository's
    /// locks: for commits another host pushed.
    async fn fetch(&self) -> Result<(), ClientError> {
        let Some(remote) = &self.config.remote else { return Ok(()) };
        let writers = Writers::of(&self.config.path);
        let _in_process = writers.turn.lock().await;
        let _across_processes = self.lock_file().await?;
        let fetched = self.git(&["fetch", "--quiet", remote, &self.config.branch]).await?;
        if fetched.status.success() {
            return Ok(());
        }
        Err(ClientError::Transient(redact_credentials(&format!(
            "git fetch from {remote} failed: {}",
            String::from_utf8_lossy(&fetched.stderr).trim()
        ))))
    }

    /// Repairs what a writer stopped mid-write left behind (a daemon killed, a git command
    /// killed on its timeout), holding the file lock, so no writer of ours is at work: git's
    /// lock files (`index.lock`, `HEAD.lock`, a ref's lock) older than the command timeout, a
    /// rebase that never finished, and changes never committed. The deliveries they belonged
    /// to are retried and write again. Uncommitted changes are looked for when the last write
    /// left its marker ([`WRITING`]), and by the first writer of each process.
    async fn recover(&self, writers: &Writers) -> Result<(), ClientError> {
        let git_dir = self.config.path.join(".git");
        for lock in stale_git_locks(&git_dir, self.command_timeout) {
            tracing::warn!(path = %lock.display(), "removing a stale git lock");
            let _ = std::fs::remove_file(&lock);
        }
        if git_dir.join("rebase-merge").exists() || git_dir.join("rebase-apply").exists() {
            tracing::warn!(path = %self.config.path.display(), "aborting an unfinished rebase");
            let _ = self.git(&["rebase", "--abort"]).await?;
        }
        let first = !writers.looked_over.load(std::sync::atomic::Ordering::Relaxed);
        if !first && !git_dir.join(WRITING).exists() {
            return Ok(());
        }
        let status = self.git_ok(&["status", "--porcelain", "--untracked-files=all"]).await?;
        if !status.is_empty() {
            tracing::warn!(
                path = %self.config.path.display(),
                changes = %status.replace('\n', ", "),
                "discarding changes an interrupted write left uncommitted"
            );
            self.discard_uncommitted().await?;
        }
        writers.looked_over.store(true, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Brings the working tree and the index back to the branch's last commit, and removes
    /// what is not tracked.
    async fn discard_uncommitted(&self) -> Result<(), ClientError> {
        if self.head().await?.is_some() {
            self.git_ok(&["reset", "--hard", "--quiet"]).await?;
        } else {
            // Nothing was ever committed: nothing staged is worth keeping either.
            self.git_ok(&["read-tree", "--empty"]).await?;
        }
        self.git_ok(&["clean", "-d", "--force", "--quiet"]).await?;
        Ok(())
    }

    /// Brings the branch up to date with the remote's (fetch, then rebase local commits on
    /// it); nothing without a remote, or while the remote has no such branch yet.
    async fn pull(&self) -> Result<(), ClientError> {
        let Some(remote) = &self.config.remote else { return Ok(()) };
        let branch = &self.config.branch;
        let fetched = self.git(&["fetch", "--quiet", remote, branch]).await?;
        if !fetched.status.success() {
            let stderr = String::from_utf8_lossy(&fetched.stderr);
            if stderr.contains("couldn't find remote ref") {
                return Ok(());
            }
            return Err(ClientError::Transient(redact_credentials(&format!(
                "git fetch from {remote} failed: {}",
                stderr.trim()
            ))));
        }
        if !self.git(&["rev-parse", "--verify", "--quiet", "HEAD"]).await?.status.success() {
            // A new clone with no commit of its own yet: take the remote's branch as it is.
            self.git_ok(&["reset", "--hard", "--quiet", "FETCH_HEAD"]).await?;
            return Ok(());
        }
        let rebased = self.git(&["rebase", "--quiet", "FETCH_HEAD"]).await?;
        if rebased.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&rebased.stderr).trim().to_owned();
        let _ = self.git(&["rebase", "--abort"]).await;
        Err(ClientError::Transient(redact_credentials(&format!(
            "rebasing on {remote}/{branch} failed: {stderr}"
        ))))
    }

    /// Pushes the branch when a remote is configured. A push refused because the remote moved
    /// on (another host pushed) is rebased on it and tried again; other failures are transient,
    /// and a later attempt pushes whatever is still unpushed.
    async fn push(&self) -> Result<(), ClientError> {
        let Some(remote) = &self.config.remote else { return Ok(()) };
        let mut last = String::new();
        for _ in 0..PUSH_TRIES {
            let output = self.git(&["push", "--quiet", remote, &self.config.branch]).await?;
            if output.status.success() {
                return Ok(());
            }
            last = String::from_utf8_lossy(&output.stderr).trim().to_owned();
            let moved_on = last.contains("fetch first")
                || last.contains("non-fast-forward")
                || last.contains("rejected");
            if !moved_on {
                break;
            }
            self.pull().await?;
        }
        Err(ClientError::Transient(redact_credentials(&format!(
            "git push to {remote} failed: {last}"
        ))))
    }
}

/// Splits `git cat-file --batch` output into `count` blobs: `<oid> blob <size>\n<content>\n`
/// each; anything else (a `missing` object, another type) is out of protocol here.
fn parse_batch(mut out: &[u8], count: usize) -> Option<Vec<String>> {
    let mut blobs = Vec::with_capacity(count);
    for _ in 0..count {
        let end = out.iter().position(|&b| b == b'\n')?;
        let header = std::str::from_utf8(&out[..end]).ok()?;
        out = &out[end + 1..];
        let [_, "blob", size] = header.split(' ').collect::<Vec<_>>()[..] else { return None };
        let size: usize = size.parse().ok()?;
        blobs.push(String::from_utf8_lossy(out.get(..size)?).into_owned());
        out = out.get(size + 1..)?;
    }
    out.is_empty().then_some(blobs)
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::process::Command;

    use super::*;

    fn git(repo: &Path, args: &[&str]) -> String {
        let output = Command::new("git")
            .arg("-C")
            .arg(repo)
            .args(["-c", "user.name=someone", "-c", "user.email=someone@example.org"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// A commit made by hand after a write found the branch (and staged its files on it) is
    /// not overwritten: the write's commit fails, transiently, and the branch keeps that
    /// commit; on top of it, the commit lands.
    #[tokio::test]
    async fn the_branch_moves_only_from_the_commit_a_write_found() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("gitops");
        let config = GitConfig { path: repo.clone(), ..GitConfig::default() };
        let host = LocalGit::new(&config);
        host.write("fra/a.yaml", Some("a\n"), "first").await.unwrap();
        let found = host.head().await.unwrap().expect("a commit");
        std::fs::write(repo.join("fra/b.yaml"), "b\n").unwrap();
        git(&repo, &["add", "fra/b.yaml"]);
        // By hand, with plumbing that leaves the index alone.
        let tree = git(&repo, &["rev-parse", "HEAD^{tree}"]);
        let by_hand = git(&repo, &["commit-tree", &tree, "-p", &found, "-m", "by hand"]);
        git(&repo, &["update-ref", "HEAD", &by_hand]);

        let ours = host.commit_index("ours", Some(&found)).await;
        assert!(matches!(ours, Err(ClientError::Transient(_))), "{ours:?}");
        assert_eq!(git(&repo, &["rev-parse", "HEAD"]), by_hand, "the commit by hand stays");
        let first = host.commit_index("ours", None).await;
        assert!(matches!(first, Err(ClientError::Transient(_))), "not a first commit: {first:?}");
        assert_eq!(git(&repo, &["rev-parse", "HEAD"]), by_hand);

        let on_top = host.commit_index("on top", Some(&by_hand)).await.unwrap();
        assert_eq!(git(&repo, &["rev-parse", "HEAD"]), on_top);
        assert_eq!(git(&repo, &["rev-parse", "HEAD^"]), by_hand);
        assert_eq!(git(&repo, &["show", "HEAD:fra/b.yaml"]), "b");
        assert_eq!(git(&repo, &["reflog", "-1", "--format=%gs"]), "commit: on top");
    }
}
