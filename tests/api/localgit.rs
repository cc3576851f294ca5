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

/// A repository under `dir` holding one commit (`fra/a.yaml`, "first"), its writer, and how that
/// write went.
async fn written_once(dir: &Path) -> (std::path::PathBuf, LocalGit, Delivered) {
    let repo = dir.join("gitops");
    let host = local(&repo, None);
    let first = host.write("fra/a.yaml", Some("a\n"), "first").await.unwrap();
    (repo, host, first)
}

/// A repository whose writers wait long for its file lock, which a test holds meanwhile.
fn patient(path: &Path) -> LocalGit {
    let config = GitConfig { path: path.to_owned(), ..GitConfig::default() };
    LocalGit::new(&config).with_timeouts(Duration::from_secs(20), Duration::from_secs(10))
}

/// A repository holding one commit (`fra/seed.yaml`), and its file lock, held.
async fn seeded_and_locked(dir: &Path) -> (std::path::PathBuf, LocalGit, std::fs::File) {
    let repo = dir.join("gitops");
    let host = patient(&repo);
    host.write("fra/seed.yaml", Some("seed\n"), "seed").await.unwrap();
    let lock = hold_lock(&repo);
    (repo, host, lock)
}

/// Lets the repository's file lock go after `after`.
async fn release_after(lock: std::fs::File, after: Duration) {
    tokio::time::sleep(after).await;
    drop(lock);
}

/// Holds the repository's file lock as another daemon on the host would.
fn hold_lock(repo: &Path) -> std::fs::File {
    let lock = std::fs::File::open(repo.join(".git/infrahub.lock")).unwrap();
    lock.lock().unwrap();
    lock
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
    for (i, written) in futures::future::join_all(writes).await.into_iter().enumerate() {
        let Ok(Delivered::Committed { commit }) = written else { panic!("{written:?}") };
        // The commit reported is on the remote and holds the write (writes waiting together
        // on one host share a commit).
        let file = format!("{commit}:fra/ns-{i}.yaml");
        assert_eq!(git(&remote, &["cat-file", "-p", &file]), format!("n: {i}"), "{file}");
    }
    let files = git(&remote, &["ls-tree", "-r", "--name-only", "main"]);
    assert_eq!(files.lines().count(), 8, "{files}");
    let commits: usize = git(&remote, &["rev-list", "--count", "main"]).parse().unwrap();
    assert!((2..=8).contains(&commits), "{commits} commits: one per host at least, none lost");
    // Each host sees the other's work once it writes again.
    a.write("fra/last.yaml", Some("n: last\n"), "last").await.unwrap();
    assert!(dir.path().join("a/fra/ns-1.yaml").exists(), "a rebased on b's commits");
}

#[tokio::test]
async fn another_writers_locks_are_waited_for_not_failed_on() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, host, _) = written_once(dir.path()).await;

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
    let (repo, host, _) = written_once(dir.path()).await;
    // Run by every command that writes the index (`update-index` first).
    let hook = repo.join(".git/hooks/post-index-change");
    std::fs::write(&hook, "#!/bin/sh\nexec sleep 30\n").unwrap();
    std::process::Command::new("chmod").arg("+x").arg(&hook).status().unwrap();
    let started = std::time::Instant::now();
    let hung = host.write("fra/b.yaml", Some("b\n"), "second").await.unwrap_err();
    assert!(matches!(&hung, ClientError::Transient(m) if m.contains("did not finish")), "{hung:?}");
    assert!(started.elapsed() < Duration::from_secs(20), "stopped after its timeout");
    assert!(repo.join(".git/infrahub.writing").exists(), "the write cut short left its marker");

    // The next writer finds the marker, clears what the cut-short write staged, and writes.
    std::fs::remove_file(&hook).unwrap();
    let next = host.write("fra/c.yaml", Some("c\n"), "third").await;
    assert!(matches!(next, Ok(Delivered::Committed { .. })), "{next:?}");
    assert_eq!(git(&repo, &["ls-tree", "-r", "--name-only", "HEAD"]), "fra/a.yaml\nfra/c.yaml");
    assert_eq!(git(&repo, &["status", "--porcelain"]), "", "fra/b.yaml cleared");
    assert!(!repo.join(".git/infrahub.writing").exists());
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

/// What a daemon killed mid-write leaves behind: its marker (`.git/infrahub.writing`), a file
/// written but never committed, a change staged, the lock files of git commands that were
/// stopped. The next writer clears it, so a rebase on the remote is not refused for ever; so
/// does the first writer of a process, marker or not (a daemon of an older version).
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
    std::fs::write(repo.join(".git/infrahub.writing"), "").unwrap();
    for lock in [".git/index.lock", ".git/HEAD.lock", ".git/refs/heads/main.lock"] {
        let stale = std::fs::File::create(repo.join(lock)).unwrap();
        stale.set_modified(std::time::SystemTime::now() - Duration::from_secs(60)).unwrap();
    }

    let written = host.write("fra/b.yaml", Some("b\n"), "second").await;
    assert!(matches!(written, Ok(Delivered::Committed { .. })), "{written:?}");
    assert!(!repo.join(".git/index.lock").exists() && !repo.join(".git/HEAD.lock").exists());
    assert!(!repo.join(".git/refs/heads/main.lock").exists());
    assert!(repo.join(".git/infrahub.lock").exists(), "our own lock file stays");
    assert!(!repo.join(".git/infrahub.writing").exists(), "a write done takes its marker away");
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

/// Once a process's first writer found the working tree clean, the writes after a write that
/// finished do not read it all again (it costs more the more projects there are): a file put
/// there by hand is left alone, and stays out of the commits.
#[tokio::test]
async fn after_a_clean_write_the_next_does_not_look_over_the_working_tree() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, host, first) = written_once(dir.path()).await;
    std::fs::write(repo.join("fra/by-hand.yaml"), "an operator's\n").unwrap();

    let second = host.write("fra/b.yaml", Some("b\n"), "second").await.unwrap();
    let Delivered::Committed { commit } = &second else { panic!("{second:?}") };
    assert_eq!(git(&repo, &["rev-parse", "HEAD"]), *commit, "the commit made is the branch's");
    let Delivered::Committed { commit: parent } = &first else { panic!("{first:?}") };
    assert_eq!(git(&repo, &["rev-parse", "HEAD^"]), *parent);
    assert_eq!(git(&repo, &["ls-tree", "-r", "--name-only", "HEAD"]), "fra/a.yaml\nfra/b.yaml");
    let made = git(&repo, &["log", "-1", "--format=%an <%ae>|%cn <%ce>|%s"]);
    assert_eq!(made, "InfraHub <infrahub@localhost>|InfraHub <infrahub@localhost>|second");
    assert!(git(&repo, &["reflog", "-1", "--format=%gs"]).contains("second"), "in the reflog");
    assert!(repo.join("fra/by-hand.yaml").exists(), "left alone");
    assert_eq!(git(&repo, &["status", "--porcelain"]), "?? fra/by-hand.yaml");
}

/// A change staged outside InfraHub (by hand, or by a writer that left no marker) never rides
/// along in a delivery's commit: it is discarded and the delivery staged again.
#[tokio::test]
async fn a_change_staged_by_someone_else_is_not_committed_with_a_delivery() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, host, _) = written_once(dir.path()).await;
    std::fs::write(repo.join("fra/a.yaml"), "staged by hand\n").unwrap();
    std::fs::write(repo.join("fra/new.yaml"), "added by hand\n").unwrap();
    git(&repo, &["add", "fra/a.yaml", "fra/new.yaml"]);

    let written = host.write("fra/b.yaml", Some("b\n"), "second").await;
    assert!(matches!(written, Ok(Delivered::Committed { .. })), "{written:?}");
    assert_eq!(git(&repo, &["show", "--name-only", "--format=%s", "HEAD"]), "second\n\nfra/b.yaml");
    assert_eq!(git(&repo, &["show", "HEAD:fra/a.yaml"]), "a");
    assert_eq!(git(&repo, &["status", "--porcelain"]), "", "the staged changes are gone");
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

/// Writes that wait while another writer has the repository share one commit; a later write
/// of a file already in that commit waits for the next, so each file's writes land in the
/// order they were made. A removal shares a commit as a write does.
#[tokio::test]
async fn writes_waiting_together_share_one_commit_in_their_order() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("gitops");
    let host = patient(&repo);
    host.write("fra/old.yaml", Some("old\n"), "provision old").await.unwrap();
    let lock = hold_lock(&repo);

    // Polled in this order: the first takes the turn with only its own write (the others are
    // not queued yet when it is first polled) and waits for the lock; the others queue.
    let writes = [
        ("fra/first.yaml", Some("1\n"), "provision first"),
        ("fra/a.yaml", Some("a1\n"), "provision a"),
        ("fra/b.yaml", Some("b\n"), "provision b"),
        ("fra/a.yaml", Some("a2\n"), "update a"),
        ("fra/old.yaml", None, "deprovision old"),
    ]
    .map(|(file, content, message)| host.write(file, content, message));
    let release = async move {
        // Until the first writer waits for the lock, with the rest queued behind it.
        tokio::task::yield_now().await;
        drop(lock);
    };
    let (written, ()) = tokio::join!(futures::future::join_all(writes), release);
    let commits: Vec<String> = written
        .into_iter()
        .map(|w| match w {
            Ok(Delivered::Committed { commit }) => commit,
            other => panic!("{other:?}"),
        })
        .collect();
    let [first, a1, b, a2, removal] = &commits[..] else { unreachable!() };
    assert_ne!(first, a1, "the first write had its turn alone");
    assert_eq!((a1, a1), (b, removal), "the writes that waited together share one commit");
    assert_ne!(a1, a2, "a's second write waited for the next commit");
    assert_eq!(git(&repo, &["rev-list", "--count", "HEAD"]), "4");
    assert_eq!(git(&repo, &["rev-parse", "HEAD"]), *a2);
    assert_eq!(git(&repo, &["show", &format!("{a1}:fra/a.yaml")]), "a1");
    assert_eq!(git(&repo, &["show", "HEAD:fra/a.yaml"]), "a2");
    let files = git(&repo, &["ls-tree", "-r", "--name-only", "HEAD"]);
    assert_eq!(files, "fra/a.yaml\nfra/b.yaml\nfra/first.yaml", "old was removed");
    let message = git(&repo, &["log", "-1", "--format=%B", a1]);
    assert!(message.starts_with("provision a (and 2 more)"), "{message}");
    for line in ["- provision a", "- provision b", "- deprovision old"] {
        assert!(message.contains(line), "{message}");
    }
    assert_eq!(git(&repo, &["status", "--porcelain"]), "", "nothing left uncommitted");
}

/// A write whose writer gave up (its job's timeout) before its turn is not made; one whose
/// turn-holder gave up while it carried it goes back in its place and is made.
#[tokio::test]
async fn a_write_given_up_is_not_made_and_one_carried_by_a_writer_that_gave_up_is() {
    use tokio::time::timeout;
    let dir = tempfile::tempdir().unwrap();
    let (repo, host, lock) = seeded_and_locked(dir.path()).await;
    let ms = Duration::from_millis;

    // `first` takes the turn alone and waits for the lock; the others queue. `early` gives
    // up while still queued; `first` gives up; `quitter` takes the turn with `carried` and
    // gives up too; `carried` goes on.
    let first = timeout(ms(200), host.write("fra/first.yaml", Some("x\n"), "first"));
    let early = timeout(ms(100), host.write("fra/early.yaml", Some("e\n"), "early"));
    let quitter = timeout(ms(400), host.write("fra/quitter.yaml", Some("q\n"), "quitter"));
    let carried = host.write("fra/carried.yaml", Some("c\n"), "carried");
    let release = release_after(lock, ms(600));
    let (first, early, quitter, carried, ()) =
        tokio::join!(first, early, quitter, carried, release);
    assert!(first.is_err() && early.is_err() && quitter.is_err(), "all three gave up");
    assert!(matches!(carried, Ok(Delivered::Committed { .. })), "{carried:?}");
    let files = git(&repo, &["ls-tree", "-r", "--name-only", "HEAD"]);
    assert_eq!(files, "fra/carried.yaml\nfra/seed.yaml", "only the write still waited for");
    assert_eq!(git(&repo, &["rev-list", "--count", "HEAD"]), "2");
    assert_eq!(git(&repo, &["status", "--porcelain"]), "");
}

/// A write handed back by a turn-holder that gave up keeps its place: a newer write of the
/// same file, waiting meanwhile, is still made after it, so the newer content stays.
#[tokio::test]
async fn a_handed_back_write_is_not_overtaken_by_a_newer_one_of_its_file() {
    use tokio::time::timeout;
    let dir = tempfile::tempdir().unwrap();
    let (repo, host, lock) = seeded_and_locked(dir.path()).await;
    let ms = Duration::from_millis;

    // `holder` keeps the turn while the rest queue, then gives up; `carrier` takes `other`
    // and the older write of `a` (not the newer: the same file), then gives up; `other`'s
    // writer takes the turn with both handed back, before the newer write of `a`.
    let holder = timeout(ms(200), host.write("fra/holder.yaml", Some("h\n"), "holder"));
    let carrier = timeout(ms(400), host.write("fra/carrier.yaml", Some("c\n"), "carrier"));
    let other = host.write("fra/other.yaml", Some("o\n"), "other");
    let older = host.write("fra/a.yaml", Some("old\n"), "a, older");
    let newer = host.write("fra/a.yaml", Some("new\n"), "a, newer");
    let release = release_after(lock, ms(600));
    let (holder, carrier, other, older, newer, ()) =
        tokio::join!(holder, carrier, other, older, newer, release);
    assert!(holder.is_err() && carrier.is_err(), "both gave up");
    let commit = |w: Result<Delivered, ClientError>| match w {
        Ok(Delivered::Committed { commit }) => commit,
        other => panic!("{other:?}"),
    };
    let (other, older, newer) = (commit(other), commit(older), commit(newer));
    assert_eq!(other, older, "handed back together");
    assert_eq!(git(&repo, &["show", &format!("{older}:fra/a.yaml")]), "old");
    assert_eq!(git(&repo, &["rev-parse", "HEAD"]), newer, "the newer write came last");
    assert_eq!(git(&repo, &["show", "HEAD:fra/a.yaml"]), "new");
    let files = git(&repo, &["ls-tree", "-r", "--name-only", "HEAD"]);
    assert_eq!(files, "fra/a.yaml\nfra/other.yaml\nfra/seed.yaml");
}

/// A symbolic link committed to the repository, as a directory or as a project's file, is not
/// followed: no write, directory or removal lands outside the repository. A link where a
/// removed file was is removed itself (what it points to stays).
#[tokio::test]
async fn a_committed_symbolic_link_is_never_written_through() {
    let dir = tempfile::tempdir().unwrap();
    let (repo, host, _) = written_once(dir.path()).await;
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("kept.yaml"), "kept\n").unwrap();
    std::os::unix::fs::symlink(&outside, repo.join("ber")).unwrap();
    std::os::unix::fs::symlink(outside.join("kept.yaml"), repo.join("fra/b.yaml")).unwrap();
    git(&repo, &["add", "ber", "fra/b.yaml"]);
    git(&repo, &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "links"]);

    let attempts = [
        ("ber/new.yaml", Some("x\n"), "ber is a symbolic link"),
        ("ber/deep/new.yaml", Some("x\n"), "ber is a symbolic link"),
        ("ber/kept.yaml", None, "ber is a symbolic link"),
        ("fra/b.yaml", Some("x\n"), "fra/b.yaml is a symbolic link"),
    ];
    for (file, content, why) in attempts {
        let refused = host.write(file, content, "through a link").await;
        assert!(
            matches!(&refused, Err(ClientError::Permanent(m)) if m.contains(why)),
            "{file}: {refused:?}"
        );
    }
    let mut left: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    left.sort();
    assert_eq!(left, ["kept.yaml"]);
    assert_eq!(std::fs::read_to_string(outside.join("kept.yaml")).unwrap(), "kept\n");
    // Writes beside the links go on.
    let written = host.write("fra/c.yaml", Some("c\n"), "beside").await;
    assert!(matches!(written, Ok(Delivered::Committed { .. })), "{written:?}");
    // Removing the file that is a link removes the link, not what it points to.
    let removed = host.write("fra/b.yaml", None, "remove the link").await;
    assert!(matches!(removed, Ok(Delivered::Committed { .. })), "{removed:?}");
    let files = git(&repo, &["ls-tree", "-r", "--name-only", "HEAD"]);
    assert_eq!(files, "ber\nfra/a.yaml\nfra/c.yaml");
    assert_eq!(std::fs::read_to_string(outside.join("kept.yaml")).unwrap(), "kept\n");
}

/// A write that is refused (here a path beyond a symbolic link the branch holds) fails alone:
/// the writes that waited with it are made all the same. A path git would not stage as written
/// is refused before anything is done.
#[tokio::test]
async fn a_write_git_refuses_does_not_fail_the_writes_sharing_its_commit() {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("gitops");
    let host = patient(&repo);
    host.write("fra/seed.yaml", Some("seed\n"), "seed").await.unwrap();
    let outside = dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, repo.join("fra/elsewhere")).unwrap();
    git(&repo, &["add", "fra/elsewhere"]);
    git(&repo, &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "a link"]);
    let lock = hold_lock(&repo);

    let writes = [
        ("fra/first.yaml", "provision first"),
        ("fra/good.yaml", "provision good"),
        ("fra/elsewhere/refused.yaml", "provision refused"),
        ("fra/also-good.yaml", "provision also good"),
    ]
    .map(|(file, message)| host.write(file, Some("x\n"), message));
    let release = async move {
        tokio::task::yield_now().await;
        drop(lock);
    };
    let (written, ()) = tokio::join!(futures::future::join_all(writes), release);
    let [first, good, refused, also_good] = &written[..] else { unreachable!() };
    for ok in [first, good, also_good] {
        assert!(matches!(ok, Ok(Delivered::Committed { .. })), "{ok:?}");
    }
    assert!(
        matches!(refused, Err(ClientError::Permanent(m)) if m.contains("fra/elsewhere is a symbolic link")),
        "{refused:?}"
    );
    let escaped: Vec<_> = std::fs::read_dir(&outside).unwrap().collect();
    assert!(escaped.is_empty(), "nothing written through the link: {escaped:?}");
    assert_ne!(good, first, "good waited for the next commit");
    let files = git(&repo, &["ls-tree", "-r", "--name-only", "HEAD"]);
    let made = "fra/also-good.yaml\nfra/elsewhere\nfra/first.yaml\nfra/good.yaml\nfra/seed.yaml";
    assert_eq!(files, made);
    assert_eq!(git(&repo, &["status", "--porcelain"]), "", "the refused write left nothing behind");

    for odd in ["./fra/a.yaml", "fra//a.yaml", "fra/../a.yaml", ".git/a.yaml", "/fra/a.yaml", ""] {
        let refused = host.write(odd, Some("x\n"), "odd").await;
        assert!(
            matches!(&refused, Err(ClientError::Permanent(m)) if m.contains("plain relative path")),
            "{odd}: {refused:?}"
        );
    }
    assert_eq!(git(&repo, &["status", "--porcelain"]), "");
}
