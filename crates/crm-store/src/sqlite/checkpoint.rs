//! WAL checkpoints off the writer's path.
//!
//! In WAL mode every commit appends pages to the `-wal` file, and a *checkpoint* copies
//! them back into the database file (reading the WAL, writing the file, two syncs). By
//! default SQLite runs one inside whichever commit first finds the WAL over 1,000 pages,
//! so under load one group in every ~16 paid for the copy on the writer thread and its
//! requests waited for it (docs/benchmarks.md). Here:
//!
//! - the writer's connection reports the WAL's size after each commit through a WAL hook
//!   (which also switches SQLite's automatic checkpoint off for that connection);
//! - a checkpointer thread with its own connection runs `PASSIVE` checkpoints when the
//!   writer nudges it. They run beside the writer (WAL allows one checkpoint next to one
//!   writer and any readers) and never block it;
//! - a passive checkpoint copies what was committed when it began, so under continuous
//!   load it never quite catches up, and the WAL can only start over from its beginning
//!   when a write transaction begins with everything copied. So when the WAL passes
//!   [`WAL_RESTART_FRAMES`], the writer itself checkpoints the remainder between two
//!   groups (little is left by then), and its next transaction restarts the WAL. If the
//!   checkpointer thread stalls or dies, that same step keeps the WAL bounded.
//!
//! Checkpoints move committed pages between two files; they change nothing a reader or
//! the writer can observe, so the writer stays the only writer of the data.

use std::{
    cell::Cell,
    ffi::c_int,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::{JoinHandle, Thread},
    time::Duration,
};

use rusqlite::{Connection, hooks::Wal};

/// WAL size (pages) from which the writer nudges the checkpointer. SQLite's own automatic
/// threshold is 1,000; at 4,000 a page rewritten by many commits (an operator's row, the
/// tails of the contacts' indexes) is copied once instead of four times, which cut the
/// checkpointer's CPU by ~15 % (docs/benchmarks.md). The WAL itself is no larger: it only
/// starts over at [`WAL_RESTART_FRAMES`] either way, and readers search only its pages not
/// yet copied, at most two of SQLite's 4,096-frame index blocks.
pub const NUDGE_FRAMES: i32 = 4_000;
/// WAL size (pages, 64 MiB at 4 KiB) from which the writer checkpoints the remainder
/// itself, so the WAL starts over.
pub const WAL_RESTART_FRAMES: i32 = 16_384;
/// Shortest pause between two checkpoints, so a busy writer's nudges are batched.
const PAUSE: Duration = Duration::from_millis(10);

thread_local! {
    /// Pages in the WAL after the last commit on this thread's connection.
    static WAL_FRAMES: Cell<i32> = const { Cell::new(0) };
    /// Commits on this thread's connection that wrote to the WAL.
    static WAL_COMMITS: Cell<u64> = const { Cell::new(0) };
}

fn note_wal_size(_wal: &Wal, pages: c_int) -> rusqlite::Result<()> {
    WAL_FRAMES.set(pages);
    WAL_COMMITS.set(WAL_COMMITS.get() + 1);
    Ok(())
}

/// Has `conn` (the writer's) report the WAL size after each commit, to this thread, and
/// turns its automatic checkpoints off.
pub fn watch_wal(conn: &Connection) {
    conn.wal_hook(Some(note_wal_size));
}

/// Pages in the WAL after the last commit on this thread (see [`watch_wal`]).
pub fn wal_frames() -> i32 {
    WAL_FRAMES.get()
}

/// Commits on this thread that wrote to the WAL (see [`watch_wal`]): a commit that wrote
/// nothing proves nothing about the disk.
pub fn wal_commits() -> u64 {
    WAL_COMMITS.get()
}

/// Copies what is left of the WAL into the database file, on the writer's own
/// connection between two groups; logged, never fatal.
pub fn checkpoint_remainder(conn: &Connection) {
    match passive(conn) {
        Ok((log, copied)) => {
            tracing::debug!(log, copied, "writer checkpointed the rest of the WAL");
            // Until the next commit reports the restarted WAL's size.
            WAL_FRAMES.set(0);
        }
        Err(err) => tracing::warn!(error = %err, "sqlite checkpoint failed"),
    }
}

fn passive(conn: &Connection) -> rusqlite::Result<(i64, i64)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok((row.get(1)?, row.get(2)?))
    })
}

/// The checkpointer thread.
pub struct Checkpointer {
    thread: JoinHandle<()>,
    stop: Arc<AtomicBool>,
}

impl Checkpointer {
    /// Starts the thread on the connection `connect` opens (on the thread itself).
    ///
    /// # Errors
    /// The thread could not be spawned.
    pub fn start<C>(connect: C) -> std::io::Result<Self>
    where
        C: FnOnce() -> rusqlite::Result<Connection> + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("crm-sqlite-ckpt".into())
            .spawn(move || match connect() {
                Ok(conn) => run(&conn, &stopping),
                Err(err) => tracing::error!(
                    error = %err,
                    "the sqlite checkpointer cannot connect; the writer will checkpoint alone"
                ),
            })?;
        Ok(Self { thread, stop })
    }

    /// What the writer needs to nudge it.
    pub fn handle(&self) -> Thread {
        self.thread.thread().clone()
    }

    /// Stops the thread after its current checkpoint.
    pub fn stop(self) {
        self.stop.store(true, Ordering::Release);
        self.thread.thread().unpark();
        if self.thread.join().is_err() {
            tracing::error!("the sqlite checkpointer thread panicked");
        }
    }
}

fn run(conn: &Connection, stop: &AtomicBool) {
    loop {
        std::thread::park();
        if stop.load(Ordering::Acquire) {
            break;
        }
        match passive(conn) {
            Ok((log, copied)) => tracing::trace!(log, copied, "sqlite checkpoint"),
            Err(err) => tracing::warn!(error = %err, "sqlite checkpoint failed"),
        }
        std::thread::sleep(PAUSE);
    }
}
