//! Smooth credits that registrations leave in the source cache reach the rows at every
//! point the module docs of `source_cache` name, and a rollback drops them: each test
//! queues one group of jobs behind a holding job and reads the committed row from a
//! second connection once the writer has stopped.

use crm_core::{Candidate, OperatorId, SourceId};

use super::{
    tests::{answer, hold, insert, queued, release_and_answer},
    *,
};

/// Operator 1's credit for source 1, the one weight row.
const CREDIT: &str = "SELECT credit FROM operator_source_weights WHERE source_id = 1";

fn db(err: rusqlite::Error) -> StoreError {
    sqlite_err(err).into()
}

fn stored_credit(conn: &Connection) -> Result<i64, StoreError> {
    conn.query_row(CREDIT, [], |row| row.get(0)).map_err(db)
}

/// What a smooth registration does: caches source 1 from its row if it is not cached,
/// stores a contact (a row of `t`), then moves the cached credit on by one. Returns the
/// credit it left.
fn pick(ctx: &mut WriterCtx<'_>) -> Result<i64, StoreError> {
    let source = SourceId(1);
    if !ctx.cache.candidates.contains_key(&source) {
        let credit = stored_credit(ctx.conn)?;
        let candidate = Candidate {
            operator_id: OperatorId(1),
            weight: 1,
            is_active: true,
            open_contacts: 0,
            max_active_contacts: 1_000,
            rate_limited: false,
        };
        ctx.cache
            .candidates
            .insert(source, vec![(candidate, "Anna".into(), None, credit)]);
    }
    let after = ctx.cache.candidates[&source][0].3 + 1;
    insert(ctx, after)?;
    assert!(ctx.cache.moved_credits(source, &[after]));
    Ok(after)
}

#[derive(Clone, Copy, Debug)]
enum Step {
    /// A registration: [`pick`].
    Pick,
    /// A registration that fails before writing.
    PickFailsBeforeWriting,
    /// A registration that picks, then fails.
    PickFailsAfterWriting,
    /// Another job: reads the row.
    Read,
    /// Another job that writes, then fails: the group runs again with savepoints.
    FailAfterWriting,
}

/// Runs `steps` as one group on a fresh file whose row starts at credit 0; their answers
/// and the credit committed.
async fn credits(steps: &[Step]) -> (Vec<Result<i64, StoreError>>, i64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("credits.db");
    let file = path.clone();
    let writer =
        Writer::start(move || Connection::open(file), 64, Some(7), None).expect("writer starts");
    let handle = writer.handle.clone();
    answer(handle.run(|ctx| {
        ctx.conn
            .execute_batch(
                "CREATE TABLE t (x INTEGER NOT NULL); \
                 CREATE TABLE operator_source_weights \
                 (source_id INTEGER, operator_id INTEGER, credit INTEGER); \
                 INSERT INTO operator_source_weights VALUES (1, 1, 0);",
            )
            .map_err(db)
    }))
    .await
    .expect("schema");

    let (held, release) = hold(&handle).await;
    let mut jobs = Vec::new();
    for (i, &step) in steps.iter().enumerate() {
        let submitter = handle.clone();
        jobs.push(tokio::spawn(async move {
            match step {
                Step::Pick => submitter.run_registration(pick).await,
                Step::PickFailsBeforeWriting => {
                    submitter
                        .run_registration(|_| Err(StoreError::NotFound(crm_core::Entity::Source)))
                        .await
                }
                Step::PickFailsAfterWriting => {
                    submitter
                        .run_registration(|ctx| {
                            pick(ctx)?;
                            Err(StoreError::OperatorAtCapacity)
                        })
                        .await
                }
                Step::Read => submitter.run(|ctx| stored_credit(ctx.conn)).await,
                Step::FailAfterWriting => {
                    submitter
                        .run(|ctx| {
                            insert(ctx, -1)?;
                            Err(StoreError::OperatorAtCapacity)
                        })
                        .await
                }
            }
        }));
        queued(&handle, i as u64 + 1).await;
    }
    let answers = release_and_answer(release, held, jobs).await;
    answer(writer.stop()).await;
    let committed = stored_credit(&Connection::open(&path).expect("reopened")).expect("row");
    (answers, committed)
}

fn ok(answers: &[Result<i64, StoreError>]) -> Vec<Option<i64>> {
    answers.iter().map(|a| a.as_ref().ok().copied()).collect()
}

/// Before a job that is not a registration, before the commit, and before the cache is
/// emptied after a registration that failed without writing.
#[tokio::test]
async fn credits_reach_the_row_before_other_jobs_failures_and_the_commit() {
    use Step::*;
    let (answers, committed) =
        credits(&[Pick, Read, Pick, PickFailsBeforeWriting, Pick, Pick]).await;
    assert_eq!(
        ok(&answers),
        [Some(1), Some(1), Some(2), None, Some(3), Some(4)],
        "{answers:?}"
    );
    assert_eq!(committed, 4);
}

/// In the savepoint run each job's credits are written inside its savepoint, so a later
/// job rolled back to its own savepoint takes only its own pick with it; the first run's
/// picks are rolled back with it.
#[tokio::test]
async fn a_rolled_back_pick_takes_only_its_own_credit() {
    use Step::*;
    let (answers, committed) =
        credits(&[Pick, FailAfterWriting, Pick, PickFailsAfterWriting, Pick]).await;
    assert_eq!(
        ok(&answers),
        [Some(1), None, Some(2), None, Some(3)],
        "{answers:?}"
    );
    assert_eq!(committed, 3);
}
