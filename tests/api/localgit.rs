//! The local Git repository as several daemons use it: one writer at a time across processes
//! (an OS file lock), another writer's lock is worth a retry, a hanging git is stopped, hosts
//! sharing a remote never diverge, and a remote's credentials never show.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use infrahub::clients::ClientError;
use infrahub::clients::gitops::{Delivered, LocalGit};
use infrahub::config::GitConfig;

fn git(repo: &Path, args: &[&str]) -> String {
    let output = Command::new("git").arg("-C").arg(repo).args(args).output().unwrap();
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn local(path: &Path, remote: Option<&Path>) -> LocalGit {
    let config = GitConfig {
        path: path.to_owned(),
        remote: remote.map(|r| r.display().to_string()),
        ..GitConfig::default()
    };
    LocalGit::new(&config).with_timeouts(Duration::from_millis(300), Duration::from_secs(2))
}

fn bare(dir: &Path) -> std::path::PathBuf {
    let remote = dir.join("remote.git");
    let status = Command::new("git")
        .args(["init", "--quiet", "--bare", "-b", "main"])
        .arg(&remote)
        .status()
        .unwrap();
    assert!(status.success());
    remote
}

#[tokio::test]
async fn two_hosts_sharing_a_remote_never_diverge() {
    let dir = tempfile::tempdir().unwrap();
    let remote = bare(dir.path());
    let (a, b) =
        (local(&dir.path().join("a"), Some(&remote)), local(&dir.path().join("b"), Some(&remote)));
    let writes = (0..8).map(|i| {
        let host = if i % 2 == 0 { &a } else { &b };
        async move {
            let (file, text) = (format!("fra/ns-{i}.yaml"), format!("n: {i}\n"));
            host.write(&file, Some(&text), &format!("provision {i}")).await
        }
    });
    for written in futures::future::join_all(writes).await {
        assert!(matches!(written, Ok(Delivered::Committed { .. })), "{written:?}");
    }
    let files = git(&remote, &["ls-tree", "-r", "--name-only", "main"]);
    assert_eq!(files.lines().count(), 8, "{files}");
    assert_eq!(git(&remote, &["rev-list", "--count", "main"]), "8", "one commit each, none lost");
    // Each host sees the other's work once it writes again.
    a.write("fra/last.yaml", Some("n: last\n"), "last").await.unwrap();
    assert!(dir.path().join("a/fra/ns-1.yaml").exists(), "a rebased on b's commits");
}

#[tokio::test]
async fn another_writers_locks_are_waited_for_not_failed_on() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("gitops");
    let host = local(&repo, None);
    host.write("fra/a.yaml", Some("a\n"), "first").await.unwrap();

    // Another daemon on this host holds the repository's lock.
    let lock = std::fs::File::open(repo.join(".git/infrahub.lock")).unwrap();
    lock.lock().unwrap();
    let busy = host.write("fra/b.yaml", Some("b\n"), "second").await.unwrap_err();
    assert!(matches!(&busy, ClientError::Transient(m) if m.contains("busy")), "{busy:?}");
    drop(lock);

    // A git of someone else's left its index lock behind, for now.
    std::fs::write(repo.join(".git/index.lock"), "").unwrap();
    let locked = host.write("fra/b.yaml", Some("b\n"), "second").await.unwrap_err();
    assert!(matches!(&locked, ClientError::Transient(m) if m.contains("index.lock")), "{locked:?}");
    std::fs::remove_file(repo.join(".git/index.lock")).unwrap();
    assert!(matches!(
        host.write("fra/b.yaml", Some("b\n"), "second").await,
        Ok(Delivered::Committed { .. })
    ));
}

#[tokio::test]
async fn a_git_that_hangs_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("gitops");
    let host = local(&repo, None);
    host.write("fra/a.yaml", Some("a\n"), "first").await.unwrap();
    let hook = repo.join(".git/hooks/pre-commit");
    std::fs::write(&hook, "#!/bin/sh\nexec sleep 30\n").unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&hook).status().unwrap();
    let started = std::time::Instant::now();
    let hung = host.write("fra/b.yaml", Some("b\n"), "second").await.unwrap_err();
    assert!(matches!(&hung, ClientError::Transient(m) if m.contains("did not finish")), "{hung:?}");
    assert!(started.elapsed() < Duration::from_secs(20), "stopped after its timeout");
}

#[tokio::test]
async fn a_remotes_credentials_never_show_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let config = GitConfig {
        path: dir.path().join("gitops"),
        remote: Some("http://deploy:s3cret-token@127.0.0.1:1/ops.git".to_owned()),
        ..GitConfig::default()
    };
    let host =
        LocalGit::new(&config).with_timeouts(Duration::from_secs(1), Duration::from_secs(10));
    let err = host.write("fra/a.yaml", Some("a\n"), "first").await.unwrap_err().to_string();
    assert!(!err.contains("s3cret-token") && err.contains("[redacted]@127.0.0.1:1"), "{err}");
}

/// What a daemon killed mid-write leaves behind: a file written but never committed, a change
/// staged, the lock files of git commands that were stopped. The next writer clears it, so a
/// rebase on the remote is not refused for ever.
#[tokio::test]
async fn leftovers_of_an_interrupted_write_are_cleared_by_the_next_writer() {
    let dir = tempfile::tempdir().unwrap();
    let remote = bare(dir.path());
    let repo = dir.path().join("gitops");
    let host = local(&repo, Some(&remote));
    host.write("fra/a.yaml", Some("a\n"), "first").await.unwrap();

    std::fs::write(repo.join("fra/half.yaml"), "never committed\n").unwrap();
    std::fs::write(repo.join("fra/a.yaml"), "changed, staged\n").unwrap();
    git(&repo, &["add", "fra/a.yaml"]);
    for lock in [".git/index.lock", ".git/HEAD.lock", ".git/refs/heads/main.lock"] {
        let stale = std::fs::File::create(repo.join(lock)).unwrap();
        stale.set_modified(std::time::SystemTime::now() - Duration::from_secs(60)).unwrap();
    }

    let written = host.write("fra/b.yaml", Some("b\n"), "second").await;
    assert!(matches!(written, Ok(Delivered::Committed { .. })), "{written:?}");
    assert!(!repo.join(".git/index.lock").exists() && !repo.join(".git/HEAD.lock").exists());
    assert!(!repo.join(".git/refs/heads/main.lock").exists());
    assert!(repo.join(".git/infrahub.lock").exists(), "our own lock file stays");
    assert!(!repo.join("fra/half.yaml").exists());
    assert_eq!(std::fs::read_to_string(repo.join("fra/a.yaml")).unwrap(), "a\n");
    assert_eq!(git(&repo, &["status", "--porcelain"]), "", "a clean working tree");
    let files = git(&remote, &["ls-tree", "-r", "--name-only", "main"]);
    assert_eq!(files, "fra/a.yaml\nfra/b.yaml", "only what was delivered reached the remote");

    // The same before anything was ever committed.
    let fresh = dir.path().join("fresh");
    let first = local(&fresh, None);
    git(dir.path(), &["init", "--quiet", "-b", "main", "fresh"]);
    std::fs::create_dir_all(fresh.join("fra")).unwrap();
    std::fs::write(fresh.join("fra/half.yaml"), "never committed\n").unwrap();
    git(&fresh, &["add", "fra/half.yaml"]);
    let written = first.write("fra/c.yaml", Some("c\n"), "first").await;
    assert!(matches!(written, Ok(Delivered::Committed { .. })), "{written:?}");
    assert_eq!(git(&fresh, &["ls-tree", "-r", "--name-only", "HEAD"]), "fra/c.yaml");
    assert_eq!(git(&fresh, &["status", "--porcelain"]), "");
}

/// A deletion retried after its first attempt committed (the daemon was killed before the job
/// could say so) changes nothing and succeeds, as does removing what was never there.
#[tokio::test]
async fn removing_a_file_again_is_unchanged_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("gitops");
    let host = local(&repo, None);
    host.write("fra/a.yaml", Some("a\n"), "provision").await.unwrap();
    let first = host.write("fra/a.yaml", None, "deprovision").await;
    assert!(matches!(first, Ok(Delivered::Committed { .. })), "{first:?}");
    let again = host.write("fra/a.yaml", None, "deprovision").await;
    let Ok(Delivered::Committed { commit: removal }) = first else { unreachable!() };
    assert_eq!(
        again.unwrap(),
        Delivered::Unchanged { commit: Some(removal) },
        "the removal's commit"
    );
    let never = host.write("fra/never.yaml", None, "deprovision").await;
    assert_eq!(never.unwrap(), Delivered::Unchanged { commit: None });
    assert_eq!(git(&repo, &["rev-list", "--count", "HEAD"]), "2");
}

/// Argo CD may have synced a commit another host pushed: a revision this clone has not seen
/// yet is fetched before it is judged, rather than taken as "not included" until the next write.
#[tokio::test]
async fn commits_another_host_pushed_are_fetched_before_they_are_compared() {
    use infrahub::clients::gitops::Gitops;
    let dir = tempfile::tempdir().unwrap();
    let remote = bare(dir.path());
    let (a, b) =
        (local(&dir.path().join("a"), Some(&remote)), local(&dir.path().join("b"), Some(&remote)));
    b.write("fra/b.yaml", Some("b\n"), "b's first").await.unwrap();
    let Delivered::Committed { commit: ours } =
        a.write("fra/a.yaml", Some("a\n"), "a's first").await.unwrap()
    else {
        panic!("a committed")
    };
    let Delivered::Committed { commit: later } =
        a.write("fra/a2.yaml", Some("a2\n"), "a's second").await.unwrap()
    else {
        panic!("a committed")
    };
    assert!(Gitops::includes(&b, &ours, &later).await.unwrap(), "b fetched a's commits");
    assert!(!Gitops::includes(&b, &later, &ours).await.unwrap(), "a later commit is not included");
}

#[tokio::test]
async fn a_page_of_files_is_read_in_one_go_as_one_read_each_would() {
    let dir = tempfile::tempdir().unwrap();
    let repo = local(&dir.path().join("repo"), None);
    let none = repo.read_many(&["fra/a.yaml".to_owned()]).await.unwrap();
    assert_eq!(none, vec![None], "no repository yet: nothing committed");

    // Contents with line breaks, an empty line at the end and non-ASCII text: the sizes in
    // cat-file's answers, not its line breaks, delimit them.
    let a = "kind: Namespace\nmetadata:\n  name: a\n\n";
    let b = "label: \"münchen\"\n";
    repo.write("fra/a.yaml", Some(a), "a").await.unwrap();
    repo.write("muc/b.yaml", Some(b), "b").await.unwrap();
    // Written but never committed: what resync compares is HEAD, not the work tree.
    std::fs::write(dir.path().join("repo/fra/uncommitted.yaml"), "x: 1\n").unwrap();

    let files: Vec<String> = ["muc/b.yaml", "fra/gone.yaml", "fra/a.yaml", "fra/uncommitted.yaml"]
        .map(str::to_owned)
        .to_vec();
    let many = repo.read_many(&files).await.unwrap();
    assert_eq!(many, vec![Some(b.to_owned()), None, Some(a.to_owned()), None]);
    for (file, content) in files.iter().zip(&many) {
        assert_eq!(&repo.read(file).await.unwrap(), content, "{file}");
    }
    assert_eq!(repo.read_many(&[]).await.unwrap(), Vec::<Option<String>>::new());
}
