//! One `pwrite` per commit for the writer's WAL.
//!
//! SQLite appends a commit's pages to the WAL with two `pwrite` calls per page (the
//! 24-byte frame header, then the page), about fifty pages per group commit here, and then
//! syncs the file. On these machines a hundred small `pwrite`s cost ~130 µs against ~30 µs
//! for one write of the same bytes (the kernel's per-call work: entry, locking the inode,
//! updating its times), a fifth of the writer's CPU per group. SQLite has no option to
//! gather them, so this is a VFS shim over the default (`unix`) VFS that does:
//!
//! - a write to a WAL file that continues the bytes it holds is appended to a buffer in
//!   memory (up to [`CAPACITY`]);
//! - everything else first writes the buffer out with one call, in the order the writes
//!   were made, and then goes to the `unix` VFS unchanged: any other write, and every
//!   read, sync, truncate, size query, file control and close of that file.
//!
//! **Why this is safe.** The file's bytes after any call that can observe them (a read, a
//! size query, a sync) are exactly what they would have been without the buffer, because
//! the buffer is written out before that call, as one contiguous range written in order.
//! Other connections (the checkpointer, the readers) never see a frame before SQLite
//! publishes it in the WAL index, and with `synchronous = FULL` SQLite publishes a commit
//! only after syncing the WAL, which writes the buffer out first. So a commit's frames are
//! never published while buffered. Conditions, each checked or guaranteed here:
//!
//! - **`synchronous = FULL` (or `EXTRA`).** At `NORMAL` there is no sync per commit and
//!   readers could be told about frames still in the buffer; [`super::open`] uses the shim
//!   only at `FULL` and checks the level on the connection.
//! - **Power-safe overwrite** (SQLite's default on Linux). Without it SQLite pads a commit
//!   to a sector boundary and writes the tail of its last frame *after* the sync, unsynced;
//!   so a WAL file whose device lacks `SQLITE_IOCAP_POWERSAFE_OVERWRITE` is not buffered.
//! - **One connection appends to the WAL.** After a rollback, frames of the rolled-back
//!   transaction may stay buffered until this connection next touches the WAL; harmless
//!   while it is the only writer (the store's writer thread, behind the process's
//!   exclusive lock file), not if another connection appended frames in between.
//! - **A failed write-out is never dropped.** It is reported as `SQLITE_IOERR_WRITE`
//!   (which makes SQLite roll the whole transaction back) and tried again before the next
//!   operation on the file, so no frame SQLite was told is written can be skipped.
//!
//! A crash loses the buffer, which held nothing committed. Files other than WAL files pass
//! straight through.
//!
//! Only the writer's connection opens its files through the shim (by the VFS name
//! [`NAME`]); the file underneath is the `unix` VFS's own, so locks and the shared WAL
//! index behave exactly as for the other connections.
#![allow(unsafe_code)]

use std::{
    ffi::{CStr, c_int, c_void},
    ptr,
    sync::{
        OnceLock,
        atomic::{AtomicPtr, Ordering},
    },
};

use rusqlite::ffi;

/// The VFS name to open a connection with.
pub const NAME: &CStr = c"crm-walbuf";
/// Largest run of bytes held before it is written out: the `unix` VFS writes at most
/// 128 KiB − 1 bytes per call (`seekAndWriteFd` masks the length with `0x1ffff`), so
/// 124 KiB, about thirty WAL frames of 4 KiB pages.
pub const CAPACITY: usize = 124 * 1024;

/// The VFS underneath: SQLite's `unix` VFS.
static BASE: AtomicPtr<ffi::sqlite3_vfs> = AtomicPtr::new(ptr::null_mut());

/// Registers the shim (once per process; later calls return the first result).
///
/// # Errors
/// SQLite's result code if there is no default VFS or registration failed.
pub fn register() -> Result<(), c_int> {
    static REGISTERED: OnceLock<c_int> = OnceLock::new();
    let rc = *REGISTERED.get_or_init(|| {
        // SAFETY: `sqlite3_vfs_find` and `sqlite3_vfs_register` are thread-safe and
        // initialise SQLite if needed. The copied VFS keeps every field of `unix` (its
        // functions read `pAppData` and `mxPathname`), with our `xOpen`, a file size large
        // enough for our header, and our name; it is leaked, because SQLite keeps the
        // pointer for the life of the process.
        unsafe {
            let base = ffi::sqlite3_vfs_find(c"unix".as_ptr());
            if base.is_null() {
                return ffi::SQLITE_ERROR;
            }
            BASE.store(base, Ordering::Release);
            let mut vfs = ptr::read(base);
            vfs.szOsFile = (*base).szOsFile + HEADER as c_int;
            vfs.pNext = ptr::null_mut();
            vfs.zName = NAME.as_ptr();
            vfs.xOpen = Some(open);
            ffi::sqlite3_vfs_register(Box::into_raw(Box::new(vfs)), 0)
        }
    });
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(rc)
    }
}

/// Bytes of a WAL file not yet written: `data` belongs at offset `start`.
struct Buffer {
    start: i64,
    data: Vec<u8>,
}

/// What SQLite allocates for a file of this VFS (`szOsFile` bytes): our header, then the
/// base VFS's file.
#[repr(C)]
struct File {
    /// Must come first: SQLite reads `pMethods` through a `*mut sqlite3_file`.
    base: ffi::sqlite3_file,
    /// Null unless this is a WAL file.
    buffer: *mut Buffer,
}

/// Size of [`File`], a multiple of 8, so the base VFS's file after it stays aligned.
const HEADER: usize = size_of::<File>().next_multiple_of(8);

/// The base VFS's file inside ours.
///
/// # Safety
/// `file` was allocated by SQLite with this VFS's `szOsFile`.
unsafe fn inner(file: *mut ffi::sqlite3_file) -> *mut ffi::sqlite3_file {
    // SAFETY: the allocation is `HEADER` + the base VFS's `szOsFile` bytes.
    unsafe { file.cast::<u8>().add(HEADER).cast() }
}

/// The base VFS's methods for `file` (set by its `xOpen`, never null once open).
///
/// # Safety
/// `file` is open.
unsafe fn methods(file: *mut ffi::sqlite3_file) -> &'static ffi::sqlite3_io_methods {
    // SAFETY: SQLite's io_methods tables are static and outlive every file.
    unsafe { &*(*inner(file)).pMethods }
}

/// Writes the buffer out (one call). On failure the bytes stay buffered, to be written
/// before anything else happens to the file, and the error is `SQLITE_IOERR_WRITE`
/// whatever the cause, because an I/O error makes SQLite roll the whole transaction back
/// (after `SQLITE_FULL` from a read, say, it could go on to commit around the lost frames).
///
/// # Safety
/// `file` is open.
unsafe fn flush(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: the caller's guarantee; the buffer is ours and SQLite calls a file's
    // methods from one thread at a time.
    unsafe {
        let buffer = (*file.cast::<File>()).buffer;
        if buffer.is_null() || (*buffer).data.is_empty() {
            return ffi::SQLITE_OK;
        }
        let buffer = &mut *buffer;
        let Some(write) = methods(file).xWrite else {
            return ffi::SQLITE_IOERR_WRITE;
        };
        #[cfg(test)]
        tests::BASE_WRITES.set(tests::BASE_WRITES.get() + 1);
        // At most CAPACITY long, so it fits a c_int and one `unix` VFS write.
        let rc = write(
            inner(file),
            buffer.data.as_ptr().cast(),
            buffer.data.len() as c_int,
            buffer.start,
        );
        if rc != ffi::SQLITE_OK {
            return ffi::SQLITE_IOERR_WRITE;
        }
        buffer.data.clear();
        ffi::SQLITE_OK
    }
}

unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite hands us `szOsFile` bytes for `file`; the base VFS gets its part.
    unsafe {
        let base = BASE.load(Ordering::Acquire);
        let shim = file.cast::<File>();
        (*shim).base.pMethods = ptr::null();
        (*shim).buffer = ptr::null_mut();
        let Some(base_open) = (*base).xOpen else {
            return ffi::SQLITE_CANTOPEN;
        };
        let rc = base_open(base, name, inner(file), flags, out_flags);
        if (*inner(file)).pMethods.is_null() {
            return rc;
        }
        let power_safe = (*inner(file))
            .pMethods
            .as_ref()
            .and_then(|methods| methods.xDeviceCharacteristics)
            .is_some_and(|characteristics| {
                characteristics(inner(file)) & ffi::SQLITE_IOCAP_POWERSAFE_OVERWRITE != 0
            });
        if flags & ffi::SQLITE_OPEN_WAL != 0 && power_safe {
            (*shim).buffer = Box::into_raw(Box::new(Buffer {
                start: 0,
                data: Vec::new(),
            }));
        }
        (*shim).base.pMethods = &METHODS;
        rc
    }
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes an open file once; the buffer is freed here and only here.
    unsafe {
        let flushed = flush(file);
        let closed = match methods(file).xClose {
            Some(close) => close(inner(file)),
            None => ffi::SQLITE_OK,
        };
        let shim = file.cast::<File>();
        if !(*shim).buffer.is_null() {
            drop(Box::from_raw((*shim).buffer));
            (*shim).buffer = ptr::null_mut();
        }
        if flushed != ffi::SQLITE_OK {
            flushed
        } else {
            closed
        }
    }
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    data: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: SQLite passes `amount` readable bytes at `data`.
    unsafe {
        let buffer = (*file.cast::<File>()).buffer;
        let len = usize::try_from(amount).unwrap_or(0);
        if !buffer.is_null() {
            let held = &mut *buffer;
            let end = held.start + held.data.len() as i64;
            let continues = !held.data.is_empty() && offset == end;
            if !(continues && held.data.len() + len <= CAPACITY) {
                let rc = flush(file);
                if rc != ffi::SQLITE_OK {
                    return rc;
                }
            }
            if len <= CAPACITY {
                let held = &mut *buffer;
                if held.data.is_empty() {
                    held.start = offset;
                }
                held.data
                    .extend_from_slice(std::slice::from_raw_parts(data.cast::<u8>(), len));
                return ffi::SQLITE_OK;
            }
        }
        #[cfg(test)]
        tests::BASE_WRITES.set(tests::BASE_WRITES.get() + 1);
        match methods(file).xWrite {
            Some(write) => write(inner(file), data, amount, offset),
            None => ffi::SQLITE_IOERR_WRITE,
        }
    }
}

/// Defines a method that writes the buffer out, then calls the base VFS's.
macro_rules! flushing {
    ($name:ident, $field:ident, ($($arg:ident: $ty:ty),*), $missing:expr) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file, $($arg: $ty),*) -> c_int {
            // SAFETY: SQLite calls this on an open file; the arguments go on unchanged.
            unsafe {
                let rc = flush(file);
                if rc != ffi::SQLITE_OK {
                    return rc;
                }
                match methods(file).$field {
                    Some(f) => f(inner(file), $($arg),*),
                    None => $missing,
                }
            }
        }
    };
}

/// Defines a method that calls the base VFS's (nothing to do with the buffer).
macro_rules! passing {
    ($name:ident, $field:ident, ($($arg:ident: $ty:ty),*), $missing:expr) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file, $($arg: $ty),*) -> c_int {
            // SAFETY: SQLite calls this on an open file; the arguments go on unchanged.
            unsafe {
                match methods(file).$field {
                    Some(f) => f(inner(file), $($arg),*),
                    None => $missing,
                }
            }
        }
    };
}

flushing!(read, xRead, (data: *mut c_void, amount: c_int, offset: i64), ffi::SQLITE_IOERR_READ);
flushing!(truncate, xTruncate, (size: i64), ffi::SQLITE_IOERR_TRUNCATE);
flushing!(sync, xSync, (flags: c_int), ffi::SQLITE_IOERR_FSYNC);
flushing!(file_size, xFileSize, (size: *mut i64), ffi::SQLITE_IOERR_FSTAT);
flushing!(file_control, xFileControl, (op: c_int, arg: *mut c_void), ffi::SQLITE_NOTFOUND);
passing!(lock, xLock, (level: c_int), ffi::SQLITE_IOERR_LOCK);
passing!(unlock, xUnlock, (level: c_int), ffi::SQLITE_IOERR_UNLOCK);
passing!(check_reserved_lock, xCheckReservedLock, (out: *mut c_int), ffi::SQLITE_IOERR_CHECKRESERVEDLOCK);
passing!(sector_size, xSectorSize, (), 4096);
passing!(device_characteristics, xDeviceCharacteristics, (), 0);
passing!(shm_map, xShmMap, (page: c_int, size: c_int, extend: c_int, out: *mut *mut c_void), ffi::SQLITE_IOERR_SHMMAP);
passing!(shm_lock, xShmLock, (offset: c_int, n: c_int, flags: c_int), ffi::SQLITE_IOERR_SHMLOCK);
passing!(shm_unmap, xShmUnmap, (delete: c_int), ffi::SQLITE_OK);
passing!(unfetch, xUnfetch, (offset: i64, page: *mut c_void), ffi::SQLITE_OK);

unsafe extern "C" fn shm_barrier(file: *mut ffi::sqlite3_file) {
    // SAFETY: SQLite calls this on an open file.
    unsafe {
        if let Some(barrier) = methods(file).xShmBarrier {
            barrier(inner(file));
        }
    }
}

unsafe extern "C" fn fetch(
    file: *mut ffi::sqlite3_file,
    offset: i64,
    amount: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // SAFETY: SQLite calls this on an open file. Without a base `xFetch`, answer as a
    // VFS without memory mapping does: no mapping, read the page instead.
    unsafe {
        match methods(file).xFetch {
            Some(fetch) => fetch(inner(file), offset, amount, out),
            None => {
                *out = ptr::null_mut();
                ffi::SQLITE_OK
            }
        }
    }
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

#[cfg(test)]
mod tests {
    //! The shim against SQLite itself: after every step of random sequences of
    //! transactions (big and small, savepoints rolled back, whole transactions rolled back,
    //! a cache so small that pages are written to the WAL before the commit and then
    //! rewritten in place) and checkpoints by another connection (which restart the WAL),
    //! the writer sees its own transaction before committing it (reading back pages it
    //! has just written to the WAL), a reader on the plain VFS sees exactly what was
    //! committed, and so does a copy of the
    //! files as they are on disk (what a crash would leave: SQLite rebuilds the WAL index
    //! from the frames, checking their checksums).

    use std::{cell::Cell, path::Path};

    use proptest::{prelude::*, test_runner::Config};
    use rusqlite::{Connection, OpenFlags, params};

    use super::{NAME, register};

    thread_local! {
        /// Writes this thread's shim files made to the `unix` VFS.
        pub static BASE_WRITES: Cell<usize> = const { Cell::new(0) };
    }

    fn flags() -> OpenFlags {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    }

    /// The writer's connection through the shim, as the store opens it.
    fn writer(path: &Path, cache_pages: u32) -> Connection {
        register().expect("register the shim");
        let conn = Connection::open_with_flags_and_vfs(path, flags(), NAME).expect("open");
        conn.execute_batch(&format!(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
             PRAGMA wal_autocheckpoint = 0; PRAGMA cache_size = {cache_pages};"
        ))
        .expect("set up the writer");
        conn
    }

    fn plain(path: &Path) -> Connection {
        let conn = Connection::open_with_flags(path, flags()).expect("open");
        conn.execute_batch("PRAGMA busy_timeout = 5000;")
            .expect("set up");
        conn
    }

    /// The bytes of row `id` at `version`: recognisable, and different per version.
    fn blob(id: i64, version: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (id as usize).wrapping_mul(31).wrapping_add(i) as u8 ^ version)
            .collect()
    }

    /// What is committed: row id → (version, length).
    type Model = std::collections::BTreeMap<i64, (u8, usize)>;

    fn assert_sees(conn: &Connection, model: &Model, what: &str) {
        let mut statement = conn
            .prepare("SELECT id, version, body FROM t ORDER BY id")
            .expect("prepare");
        let rows: Vec<(i64, u8, Vec<u8>)> = statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .expect("query")
            .collect::<Result<_, _>>()
            .expect("rows");
        let expected: Vec<(i64, u8, Vec<u8>)> = model
            .iter()
            .map(|(&id, &(version, len))| (id, version, blob(id, version, len)))
            .collect();
        assert!(
            rows == expected,
            "{what}: the rows differ from what was committed"
        );
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .expect("integrity check");
        assert_eq!(check, "ok", "{what}");
    }

    /// Opens a copy of the database and WAL files as they are on disk now (not the shared
    /// index, which SQLite then rebuilds from the WAL's frames).
    fn assert_crash_copy_sees(dir: &Path, model: &Model, copy: usize) {
        let to = dir.join(format!("copy-{copy}"));
        std::fs::create_dir_all(&to).expect("copy dir");
        for name in ["db", "db-wal"] {
            let from = dir.join(name);
            if from.exists() {
                std::fs::copy(&from, to.join(name)).expect("copy");
            }
        }
        let conn = plain(&to.join("db"));
        assert_sees(&conn, model, "a copy of the files on disk");
    }

    #[derive(Debug, Clone)]
    enum Step {
        /// Inserts rows of these lengths, each in its own savepoint; a `false` rolls
        /// that one back. The whole transaction is rolled back if `commit` is false.
        Insert {
            rows: Vec<(usize, bool)>,
            commit: bool,
        },
        /// Rewrites every row (a new version), touching every page.
        RewriteAll,
        /// Deletes every `nth` row.
        Delete { nth: usize },
        /// A checkpoint by the other connection.
        Checkpoint { mode: &'static str },
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            4 => (
                prop::collection::vec((0usize..9_000, prop::bool::weighted(0.85)), 1..40),
                prop::bool::weighted(0.85),
            )
                .prop_map(|(rows, commit)| Step::Insert { rows, commit }),
            1 => Just(Step::RewriteAll),
            1 => (2usize..5).prop_map(|nth| Step::Delete { nth }),
            1 => prop::sample::select(vec!["PASSIVE", "FULL", "RESTART", "TRUNCATE"])
                .prop_map(|mode| Step::Checkpoint { mode }),
        ]
    }

    fn run(steps: &[Step], cache_pages: u32) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("db");
        let conn = writer(&path, cache_pages);
        conn.execute_batch(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, version INTEGER NOT NULL, body BLOB NOT NULL)",
        )
        .expect("create");
        let reader = plain(&path);
        let mut model = Model::new();
        let mut next_id = 1;
        for (n, step) in steps.iter().enumerate() {
            match step {
                Step::Insert { rows, commit } => {
                    let mut staged = model.clone();
                    conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
                    for &(len, keep) in rows {
                        conn.execute_batch("SAVEPOINT row").expect("savepoint");
                        conn.execute(
                            "INSERT INTO t (id, version, body) VALUES (?1, 0, ?2)",
                            params![next_id, blob(next_id, 0, len)],
                        )
                        .expect("insert");
                        if keep {
                            conn.execute_batch("RELEASE row").expect("release");
                            staged.insert(next_id, (0, len));
                        } else {
                            conn.execute_batch("ROLLBACK TO row; RELEASE row")
                                .expect("roll back a row");
                        }
                        next_id += 1;
                    }
                    // Reads every page back, some of them from frames just written.
                    assert_sees(&conn, &staged, "the writer inside its transaction");
                    if *commit {
                        conn.execute_batch("COMMIT").expect("commit");
                        model = staged;
                    } else {
                        conn.execute_batch("ROLLBACK").expect("roll back");
                    }
                }
                Step::RewriteAll => {
                    conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
                    let rows: Vec<(i64, (u8, usize))> =
                        model.iter().map(|(&id, &row)| (id, row)).collect();
                    for (id, (version, len)) in rows {
                        let version = version.wrapping_add(1);
                        conn.execute(
                            "UPDATE t SET version = ?2, body = ?3 WHERE id = ?1",
                            params![id, version, blob(id, version, len)],
                        )
                        .expect("update");
                        model.insert(id, (version, len));
                    }
                    conn.execute_batch("COMMIT").expect("commit");
                }
                Step::Delete { nth } => {
                    let gone: Vec<i64> = model.keys().copied().step_by(*nth).collect();
                    conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
                    for id in gone {
                        conn.execute("DELETE FROM t WHERE id = ?1", [id])
                            .expect("delete");
                        model.remove(&id);
                    }
                    conn.execute_batch("COMMIT").expect("commit");
                }
                Step::Checkpoint { mode } => {
                    // Busy is a valid answer for the modes that wait for readers.
                    let _ =
                        reader.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| {
                            row.get::<_, i64>(0)
                        });
                }
            }
            assert_sees(&reader, &model, "a reader on the plain VFS");
            assert_crash_copy_sees(dir.path(), &model, n);
        }
        drop(conn);
        assert_sees(&plain(&path), &model, "after the writer closed");
    }

    proptest! {
        #![proptest_config(Config { cases: 24, ..Config::default() })]

        /// The database's default cache: commits write their pages once, in order.
        #[test]
        fn committed_state_is_on_disk_and_visible(steps in prop::collection::vec(step(), 1..12)) {
            run(&steps, 2_000);
        }

        /// A tiny cache: pages go to the WAL before the commit and are rewritten in place,
        /// and SQLite reads its own frames back to fix their checksums.
        #[test]
        fn spilled_and_rewritten_frames_survive(steps in prop::collection::vec(step(), 1..12)) {
            run(&steps, 10);
        }
    }

    /// A WAL file opened through the shim's own `xOpen`, driven method by method.
    struct RawWal {
        /// The file's `szOsFile` bytes, 8-aligned.
        memory: Vec<u64>,
        names: rusqlite::ffi::sqlite3_filename,
        path: std::path::PathBuf,
    }

    impl RawWal {
        /// Opens `dir/db-wal` (creating `dir/db` first, as SQLite's WAL needs its
        /// database) with `flags` besides `SQLITE_OPEN_WAL`.
        fn open(dir: &Path, flags: i32) -> Self {
            Self::open_with(dir, flags, &[])
        }

        /// [`RawWal::open`] with URI parameters (`name`, `value`) on the database's name.
        fn open_with(dir: &Path, flags: i32, parameters: &[(&str, &str)]) -> Self {
            use std::ffi::CString;

            use rusqlite::ffi;

            register().expect("register the shim");
            let db = dir.join("db");
            if !db.exists() {
                std::fs::write(&db, b"").expect("the database file");
            }
            let path = dir.join("db-wal");
            let to_c = |path: &Path| CString::new(path.to_str().expect("utf-8")).expect("no NUL");
            let (db_c, journal_c, wal_c) = (to_c(&db), to_c(&dir.join("db-journal")), to_c(&path));
            let texts: Vec<CString> = parameters
                .iter()
                .flat_map(|(name, value)| [*name, *value])
                .map(|text| CString::new(text).expect("no NUL"))
                .collect();
            let mut pointers: Vec<*const std::ffi::c_char> =
                texts.iter().map(|text| text.as_ptr()).collect();
            // SAFETY: SQLite copies the names into the filename object it returns; the
            // file is opened with the shim's own `xOpen` into `szOsFile` bytes, 8-aligned.
            unsafe {
                let vfs = ffi::sqlite3_vfs_find(NAME.as_ptr());
                assert!(!vfs.is_null());
                let names = ffi::sqlite3_create_filename(
                    db_c.as_ptr(),
                    journal_c.as_ptr(),
                    wal_c.as_ptr(),
                    parameters.len() as i32,
                    pointers.as_mut_ptr(),
                );
                let mut memory = vec![0u64; ((*vfs).szOsFile as usize).div_ceil(8)];
                let rc = ((*vfs).xOpen.expect("xOpen"))(
                    vfs,
                    ffi::sqlite3_filename_wal(names),
                    memory.as_mut_ptr().cast(),
                    ffi::SQLITE_OPEN_WAL | flags,
                    std::ptr::null_mut(),
                );
                assert_eq!(rc, ffi::SQLITE_OK);
                Self {
                    memory,
                    names,
                    path,
                }
            }
        }

        fn file(&mut self) -> *mut rusqlite::ffi::sqlite3_file {
            self.memory.as_mut_ptr().cast()
        }

        fn methods(&mut self) -> &'static rusqlite::ffi::sqlite3_io_methods {
            // SAFETY: the file is open; its methods table is static.
            unsafe { &*(*self.file()).pMethods }
        }

        fn write(&mut self, bytes: &[u8], offset: i64) -> i32 {
            let write = self.methods().xWrite.expect("xWrite");
            // SAFETY: an open file and `bytes.len()` readable bytes.
            unsafe {
                write(
                    self.file(),
                    bytes.as_ptr().cast(),
                    bytes.len() as i32,
                    offset,
                )
            }
        }

        fn size(&mut self) -> i64 {
            let size_of = self.methods().xFileSize.expect("xFileSize");
            let mut size = -1;
            // SAFETY: an open file.
            let rc = unsafe { size_of(self.file(), &mut size) };
            assert_eq!(rc, rusqlite::ffi::SQLITE_OK);
            size
        }

        fn read(&mut self, len: usize, offset: i64) -> Vec<u8> {
            let read = self.methods().xRead.expect("xRead");
            let mut bytes = vec![0u8; len];
            // SAFETY: an open file and `len` writable bytes.
            let rc = unsafe { read(self.file(), bytes.as_mut_ptr().cast(), len as i32, offset) };
            assert_eq!(rc, rusqlite::ffi::SQLITE_OK);
            bytes
        }

        fn truncate(&mut self, size: i64) -> i32 {
            let truncate = self.methods().xTruncate.expect("xTruncate");
            // SAFETY: an open file.
            unsafe { truncate(self.file(), size) }
        }

        fn sync(&mut self) -> i32 {
            let sync = self.methods().xSync.expect("xSync");
            // SAFETY: an open file.
            unsafe { sync(self.file(), rusqlite::ffi::SQLITE_SYNC_NORMAL) }
        }

        /// Closes it (once: the file is unusable afterwards).
        fn close(mut self) -> i32 {
            let close = self.methods().xClose.expect("xClose");
            // SAFETY: closed once, then its memory and names are freed.
            unsafe {
                let rc = close(self.file());
                rusqlite::ffi::sqlite3_free_filename(self.names);
                rc
            }
        }
    }

    /// Every call that can observe the file (size, read, truncate, sync, close) sees every
    /// write made before it, in order, including overwrites of bytes still held.
    #[test]
    fn every_observation_sees_the_writes_before_it() {
        use rusqlite::ffi::SQLITE_OK;

        let dir = tempfile::tempdir().expect("temp dir");
        let mut wal = RawWal::open(
            dir.path(),
            rusqlite::ffi::SQLITE_OPEN_READWRITE | rusqlite::ffi::SQLITE_OPEN_CREATE,
        );
        let mut expected = vec![b'a'; 100];
        assert_eq!(wal.write(&expected, 0), SQLITE_OK);
        assert_eq!(wal.write(&[b'b'; 100], 100), SQLITE_OK);
        expected.extend([b'b'; 100]);
        assert_eq!(wal.size(), 200, "the size counts the bytes held");

        assert_eq!(wal.write(&[b'c'; 50], 200), SQLITE_OK);
        expected.extend([b'c'; 50]);
        assert_eq!(wal.read(250, 0), expected, "a read sees the bytes held");

        // An overwrite inside what was written, then an append elsewhere.
        assert_eq!(wal.write(&[b'd'; 10], 50), SQLITE_OK);
        assert_eq!(wal.write(&[b'e'; 10], 250), SQLITE_OK);
        expected[50..60].fill(b'd');
        expected.extend([b'e'; 10]);
        assert_eq!(wal.truncate(255), SQLITE_OK);
        expected.truncate(255);
        assert_eq!(wal.size(), 255);
        assert_eq!(
            wal.read(255, 0),
            expected,
            "truncated after the held bytes were written"
        );

        assert_eq!(wal.write(&[b'f'; 20], 255), SQLITE_OK);
        expected.extend([b'f'; 20]);
        assert_eq!(wal.sync(), SQLITE_OK);
        let on_disk = std::fs::read(&wal.path).expect("read the file");
        assert_eq!(on_disk, expected, "synced");

        assert_eq!(wal.write(&[b'g'; 5], 275), SQLITE_OK);
        expected.extend([b'g'; 5]);
        let path = wal.path.clone();
        assert_eq!(wal.close(), SQLITE_OK);
        assert_eq!(
            std::fs::read(path).expect("read the file"),
            expected,
            "closed"
        );
    }

    /// A write-out that fails is an I/O error (so SQLite rolls the transaction back), and
    /// the bytes are not dropped: the next operation tries them again and fails again,
    /// instead of going on as if they had been written.
    #[test]
    fn a_failed_write_out_is_never_dropped() {
        use rusqlite::ffi::{SQLITE_IOERR_WRITE, SQLITE_OK, SQLITE_OPEN_READONLY};

        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("db-wal"), b"").expect("an empty WAL");
        // Opened read-only, so every write the `unix` VFS makes fails.
        let mut wal = RawWal::open(dir.path(), SQLITE_OPEN_READONLY);
        assert_eq!(
            wal.write(&[b'a'; 100], 0),
            SQLITE_OK,
            "held, not written yet"
        );
        assert_eq!(wal.sync(), SQLITE_IOERR_WRITE);
        assert_eq!(wal.sync(), SQLITE_IOERR_WRITE, "still held, still failing");
        assert_eq!(wal.truncate(0), SQLITE_IOERR_WRITE);
        assert_eq!(wal.close(), SQLITE_IOERR_WRITE);
    }

    /// On a device without power-safe overwrite SQLite writes part of a commit after its
    /// sync, so such a WAL is not buffered: a write reaches the file at once.
    #[test]
    fn without_power_safe_overwrite_writes_go_straight_through() {
        use rusqlite::ffi::{
            SQLITE_OK, SQLITE_OPEN_CREATE, SQLITE_OPEN_READWRITE, SQLITE_OPEN_URI,
        };

        let dir = tempfile::tempdir().expect("temp dir");
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI;
        let mut wal = RawWal::open_with(dir.path(), flags, &[("psow", "0")]);
        assert_eq!(wal.write(&[b'a'; 100], 0), SQLITE_OK);
        let on_disk = std::fs::read(&wal.path).expect("read the file");
        assert_eq!(on_disk, vec![b'a'; 100], "written at once");
        assert_eq!(wal.close(), SQLITE_OK);

        // The same file with the default (power-safe): held until observed.
        let mut wal = RawWal::open(dir.path(), SQLITE_OPEN_READWRITE);
        assert_eq!(wal.write(&[b'b'; 100], 100), SQLITE_OK);
        let on_disk = std::fs::read(&wal.path).expect("read the file");
        assert_eq!(on_disk.len(), 100, "held");
        assert_eq!(wal.close(), SQLITE_OK);
    }

    /// The point of the shim: a commit of many pages reaches the `unix` VFS in a few
    /// writes (one per 124 KiB), not two per page.
    #[test]
    fn a_commit_is_a_few_writes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let conn = writer(&dir.path().join("db"), 2_000);
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
            .expect("create");
        conn.execute_batch("BEGIN IMMEDIATE").expect("begin");
        for id in 0..50 {
            conn.execute("INSERT INTO t VALUES (?1, zeroblob(4000))", [id])
                .expect("insert");
        }
        let before = BASE_WRITES.get();
        conn.execute_batch("COMMIT").expect("commit");
        let pages: i64 = conn
            .query_row("PRAGMA page_count", [], |row| row.get(0))
            .expect("pages");
        let writes = BASE_WRITES.get() - before;
        // ~52 frames of 4,120 bytes: 214 KiB, two writes of at most 124 KiB.
        assert!(pages >= 50, "{pages} pages");
        assert!(writes <= 2, "{writes} writes for a commit of {pages} pages");
    }
}
