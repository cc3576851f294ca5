//! A GitOps double in the test's own process, injected through the context's clients: it
//! fails its first writes transiently, then keeps files in memory.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use infrahub::clients::gitops::{Delivered, Gitops};
use infrahub::clients::{ClientError, ClientFuture};

pub struct FlakyGit {
    failures_left: AtomicUsize,
    pub files: Mutex<BTreeMap<String, String>>,
    pub writes: AtomicUsize,
}

impl FlakyGit {
    /// Fails the first `failures` writes with a transient error.
    pub fn failing(failures: usize) -> Self {
        Self {
            failures_left: AtomicUsize::new(failures),
            files: Mutex::new(BTreeMap::new()),
            writes: AtomicUsize::new(0),
        }
    }
}

impl Gitops for FlakyGit {
    fn write<'a>(
        &'a self,
        file: &'a str,
        content: Option<&'a str>,
        _message: &'a str,
    ) -> ClientFuture<'a, Delivered> {
        Box::pin(async move {
            self.writes.fetch_add(1, Ordering::SeqCst);
            let failing = self
                .failures_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if failing {
                return Err(ClientError::transient("the remote hung up"));
            }
            let mut files = self.files.lock().unwrap();
            let changed = match content {
                Some(text) => {
                    files.insert(file.to_owned(), text.to_owned()).as_deref() != Some(text)
                }
                None => files.remove(file).is_some(),
            };
            Ok(if changed {
                Delivered::Committed { commit: format!("{:040x}", files.len()) }
            } else {
                Delivered::Unchanged { commit: None }
            })
        })
    }

    fn read<'a>(&'a self, file: &'a str) -> ClientFuture<'a, Option<String>> {
        Box::pin(async move { Ok(self.files.lock().unwrap().get(file).cloned()) })
    }

    fn includes<'a>(&'a self, revision: &'a str, tip: &'a str) -> ClientFuture<'a, bool> {
        Box::pin(async move { Ok(revision <= tip) })
    }
}
