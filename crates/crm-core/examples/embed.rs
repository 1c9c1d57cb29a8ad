//! How another Rust service embeds crm-core: give [`register_contact`] a [`RegistrationTx`]
//! over your storage (here `MemoryTx`, the in-memory one of crm-core's tests, whose source
//! is the smallest adapter to model yours on), any executor (here `pollster`) and any random
//! generator (here a seeded `ChaCha8Rng`, so every run prints the same assignments).
//!
//! Run with `cargo run -p crm-core --example embed`.

use std::error::Error;

#[path = "../tests/support/memory.rs"]
mod memory;

use crm_core::{
    ExternalLeadId, NewContact, OperatorId, Payload, SourceCode, SourceId, SourceRef,
    register_contact,
};
use memory::{MemoryOperator, MemoryTx};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn main() -> Result<(), Box<dyn Error>> {
    let operator = |name: &str, is_active, max_active_contacts, weight| MemoryOperator {
        name: name.to_owned(),
        is_active,
        open_contacts: 0,
        max_active_contacts,
        weight,
    };
    let mut store = MemoryTx::new(SourceId(1), SourceCode::parse("tg_bot")?)
        .with_operator(OperatorId(1), operator("Ann", true, 2, 30))
        .with_operator(OperatorId(2), operator("Bob", true, 5, 10))
        .with_operator(OperatorId(3), operator("Cid", false, 5, 60));
    let mut rng = ChaCha8Rng::seed_from_u64(42);

    for (n, lead) in ["alice", "bert", "alice", "chloe", "dmitri"]
        .iter()
        .enumerate()
    {
        let new = NewContact {
            external_lead_id: ExternalLeadId::parse(lead)?,
            source: SourceRef::Code(SourceCode::parse("tg_bot")?),
            payload: Payload::from_value(&serde_json::json!({ "message": n }))?,
        };
        let registered = pollster::block_on(register_contact(&mut store, &new, &mut rng))?;
        let to = registered
            .contact
            .operator
            .as_ref()
            .map_or("nobody", |op| op.name.as_str());
        println!(
            "contact {} from {lead} -> {to}",
            registered.contact.id.get()
        );
        // The decision says who was eligible, why the others were not, and the draw.
        println!("  {}", serde_json::to_string(&registered.decision)?);
    }
    Ok(())
}
