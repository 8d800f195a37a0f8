//! Hot reload of a configuration file: each new valid version is handed over, a bad one is
//! refused with one log line and the version in force stays.
//!
//! File-system notifications (`notify`) make a change visible within milliseconds; a poll of the
//! file's contents every `poll` interval backs them up where notifications do not arrive
//! (network and container file systems, editors that replace the file through a rename into a
//! directory we cannot watch). Versions are compared by content, so a `touch` is not a reload
//! and an editor's several writes of one save give one reload.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use notify::Watcher as _;

/// A running watch of one file. Dropping it stops the watch at once.
pub struct Reloader<T> {
    updates: Receiver<T>,
    /// The watch thread's wake-ups: file notifications, and [`Wake::Stop`] from `drop`.
    wake: Sender<Wake>,
    thread: Option<JoinHandle<()>>,
}

/// Why the watch thread wakes up before its poll interval is over.
enum Wake {
    /// A file-system notification in the file's directory.
    Changed,
    /// The [`Reloader`] is being dropped.
    Stop,
}

impl<T: Send + 'static> Reloader<T> {
    /// Watches `path`, calling `load` on each new content; `Ok` versions are queued for
    /// [`Reloader::latest`], errors are logged (`tracing::warn!`) and dropped.
    ///
    /// The file's content at the time of the call counts as already loaded: the caller loads
    /// the first version itself, so that a bad file at start-up is an error, not a warning.
    pub fn watch<E, F>(path: &Path, poll: Duration, load: F) -> Reloader<T>
    where
        E: std::fmt::Display,
        F: Fn(&Path) -> Result<T, E> + Send + 'static,
    {
        let (tx, updates) = mpsc::channel();
        let (wake, woken) = mpsc::channel();
        let path = path.to_owned();
        let notified = wake.clone();
        // Read now, not in the thread: a change made right after this call must be seen.
        let current = std::fs::read(&path).ok();
        let thread = std::thread::Builder::new()
            .name("config-reload".into())
            .spawn(move || run(path, current, poll, load, tx, notified, woken))
            .expect("spawning the reload thread");
        Reloader {
            updates,
            wake,
            thread: Some(thread),
        }
    }

    /// The newest valid version since the last call, if any.
    pub fn latest(&self) -> Option<T> {
        self.updates.try_iter().last()
    }
}

impl<T> Drop for Reloader<T> {
    fn drop(&mut self) {
        // Wakes the thread from its wait for the next poll: a bounded run ends without waiting
        // out a poll interval.
        let _ = self.wake.send(Wake::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run<T, E: std::fmt::Display>(
    path: PathBuf,
    mut last: Option<Vec<u8>>,
    poll: Duration,
    load: impl Fn(&Path) -> Result<T, E>,
    tx: mpsc::Sender<T>,
    notified: Sender<Wake>,
    woken: Receiver<Wake>,
) {
    // Watch the directory, not the file: editors often save by writing a new file and renaming
    // it over the old one, which ends a watch on the old file's inode.
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let recheck = notified.clone();
    let watcher = notify::recommended_watcher(move |_event| {
        let _ = notified.send(Wake::Changed);
    })
    .and_then(|mut w| {
        w.watch(&dir, notify::RecursiveMode::NonRecursive)
            .map(|()| w)
    });
    if let Err(e) = &watcher {
        tracing::debug!(
            "no file notifications for {}: {e}; polling every {poll:?}",
            path.display()
        );
    }
    // A change between the caller's read and the watch's start made no notification: look
    // once now.
    let _ = recheck.send(Wake::Changed);

    loop {
        match woken.recv_timeout(poll) {
            // Let a burst of writes from one save settle before reading.
            Ok(Wake::Changed) => {
                std::thread::sleep(Duration::from_millis(50));
                if woken.try_iter().any(|w| matches!(w, Wake::Stop)) {
                    break;
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            // The Reloader is gone (it holds a sender until it has sent `Stop`).
            Ok(Wake::Stop) | Err(RecvTimeoutError::Disconnected) => break,
        }
        let Ok(content) = std::fs::read(&path) else {
            continue; // Mid-rename or deleted: keep the version in force and look again later.
        };
        if last.as_deref() == Some(&content[..]) {
            continue;
        }
        last = Some(content);
        match load(&path) {
            Ok(v) => {
                tracing::info!("reloaded {}", path.display());
                if tx.send(v).is_err() {
                    break;
                }
            }
            Err(e) => tracing::warn!(
                "refused the new version of {e}; the previous settings stay in force"
            ),
        }
    }
    drop(watcher);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn wait_for<T: Send + 'static>(r: &Reloader<T>, within: Duration) -> Option<T> {
        let start = Instant::now();
        while start.elapsed() < within {
            if let Some(v) = r.latest() {
                return Some(v);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    #[test]
    fn new_valid_versions_arrive_and_bad_ones_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.txt");
        std::fs::write(&path, "1").unwrap();
        let parse = |p: &Path| -> Result<u32, String> {
            let s = std::fs::read_to_string(p).map_err(|e| e.to_string())?;
            s.trim()
                .parse()
                .map_err(|e| format!("{}: {e}", p.display()))
        };
        // A long poll interval: the notification, not the poll, must deliver the change.
        let r = Reloader::watch(&path, Duration::from_secs(30), parse);
        std::thread::sleep(Duration::from_millis(100));
        std::fs::write(&path, "2").unwrap();
        assert_eq!(wait_for(&r, Duration::from_secs(5)), Some(2));

        std::fs::write(&path, "not a number").unwrap();
        assert_eq!(wait_for(&r, Duration::from_millis(500)), None);

        // Replaced through a rename, as many editors save.
        let tmp = dir.path().join("n.txt.tmp");
        std::fs::write(&tmp, "3").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_eq!(wait_for(&r, Duration::from_secs(5)), Some(3));
    }

    #[test]
    fn dropping_does_not_wait_out_the_poll_interval() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("n.txt");
        std::fs::write(&path, "1").unwrap();
        let r = Reloader::watch(&path, Duration::from_secs(600), |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| e.to_string())
        });
        std::thread::sleep(Duration::from_millis(50));
        let start = Instant::now();
        drop(r);
        // Ten minutes is the poll interval: a drop that waited for it would hang here.
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn polling_alone_picks_up_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir").join("n.txt");
        // The directory does not exist yet, so there is nothing to watch: polling must do.
        let r = Reloader::watch(&path, Duration::from_millis(100), |p: &Path| {
            std::fs::read_to_string(p).map_err(|e| e.to_string())
        });
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "hello").unwrap();
        assert_eq!(
            wait_for(&r, Duration::from_secs(5)).as_deref(),
            Some("hello")
        );
    }
}
