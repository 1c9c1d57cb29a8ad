//! The dry run's prediction ([`crm_core::predict`]) against what the registration use case
//! then does with the same weights: 10,000 registrations through
//! [`crm_core::register_contact`] on crm-core's in-memory unit of work, seeded, so the
//! comparison is the same on every run.

#[path = "support/memory.rs"]
mod memory;

use crm_core::{
    Candidate, ExternalLeadId, NewContact, OperatorId, Payload, SourceCode, SourceId, SourceRef,
    predict, register_contact,
};
use memory::{MemoryOperator, MemoryTx};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const WEIGHTS: [(i64, i64); 4] = [(1, 1), (2, 3), (3, 6), (4, 10)];
const N: u32 = 10_000;

fn candidate(id: i64, weight: i64) -> Candidate {
    Candidate {
        operator_id: OperatorId(id),
        weight,
        is_active: true,
        open_contacts: 0,
        max_active_contacts: i64::MAX,
        rate_limited: false,
    }
}

#[test]
fn predicted_shares_are_within_two_points_of_what_registrations_then_get() {
    let candidates: Vec<Candidate> = WEIGHTS.iter().map(|&(id, w)| candidate(id, w)).collect();
    let predicted = predict(&candidates, N, &mut ChaCha8Rng::seed_from_u64(1));

    let code = SourceCode::parse("tg").expect("valid code");
    let mut tx = WEIGHTS
        .iter()
        .fold(MemoryTx::new(SourceId(1), code.clone()), |tx, &(id, w)| {
            tx.with_operator(
                OperatorId(id),
                MemoryOperator {
                    name: format!("op{id}"),
                    is_active: true,
                    open_contacts: 0,
                    max_active_contacts: i64::MAX,
                    weight: w,
                },
            )
        });
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    for i in 0..N {
        let new = NewContact {
            external_lead_id: ExternalLeadId::parse(&format!("lead-{i}")).expect("valid id"),
            source: SourceRef::Code(code.clone()),
            payload: Payload::from_value(&serde_json::json!({})).expect("small payload"),
        };
        pollster::block_on(register_contact(&mut tx, &new, &mut rng)).expect("registered");
    }

    for (id, predicted) in predicted {
        let real = tx
            .contacts()
            .iter()
            .filter(|c| c.operator.as_ref().map(|o| o.id) == Some(id))
            .count();
        let (p, r) = (predicted as f64 / f64::from(N), real as f64 / f64::from(N));
        assert!(
            (p - r).abs() <= 0.02,
            "operator {id}: predicted {p:.4}, registrations gave {r:.4}"
        );
    }
}
