//! The waiting queue's order: every open contact without an operator waits, oldest (lowest
//! id) first. Ids come from the one database, so they order arrivals across replicas.
//!
//! A drain serves the oldest waiting contact among the sources it may still serve. A source
//! whose oldest waiting contact finds nobody eligible is blocked for the rest of the drain:
//! its later contacts have the same candidates, so none of them could be served either, and
//! serving them would let them overtake the oldest.

use std::collections::BTreeMap;

use crate::{ContactId, SourceId};

/// The heads of the sources' queues during one drain: which contact to serve next.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrainOrder {
    /// Each drainable source's oldest waiting contact.
    heads: BTreeMap<SourceId, ContactId>,
}

impl DrainOrder {
    /// The sources' oldest waiting contacts; a source without one is left out.
    pub fn new(heads: impl IntoIterator<Item = (SourceId, Option<ContactId>)>) -> Self {
        Self {
            heads: heads
                .into_iter()
                .filter_map(|(source, head)| Some((source, head?)))
                .collect(),
        }
    }

    /// The oldest waiting contact among the drainable sources, with its source.
    #[must_use]
    pub fn next(&self) -> Option<(SourceId, ContactId)> {
        self.heads
            .iter()
            .min_by_key(|(_, head)| **head)
            .map(|(source, head)| (*source, *head))
    }

    /// The source's head was served (or taken by someone else): `head` is its oldest
    /// waiting contact now, `None` when its queue is empty.
    pub fn advance(&mut self, source: SourceId, head: Option<ContactId>) {
        match head {
            Some(head) => {
                self.heads.insert(source, head);
            }
            None => {
                self.heads.remove(&source);
            }
        }
    }

    /// Nobody is eligible for the source's oldest waiting contact: the drain stops serving
    /// the source.
    pub fn block(&mut self, source: SourceId) {
        self.heads.remove(&source);
    }

    /// Whether nothing is left to serve.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.heads.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// Served in id order per source, and each served contact was the oldest waiting
        /// one among the sources not blocked; a blocked source serves nothing more.
        #[test]
        fn serves_the_oldest_head_and_never_a_blocked_source(
            queues in prop::collection::vec(
                prop::collection::btree_set(1_i64..500, 0..12), 1..6),
            blocked_after in prop::collection::vec(0_usize..14, 6),
        ) {
            // The same id in two sources is impossible in a database: offset per source.
            let queues: Vec<Vec<ContactId>> = queues
                .iter()
                .enumerate()
                .map(|(s, ids)| ids.iter().map(|id| ContactId(id * 10 + s as i64)).collect())
                .collect();
            let source = |s: usize| SourceId(s as i64 + 1);
            let mut order = DrainOrder::new(
                queues.iter().enumerate().map(|(s, q)| (source(s), q.first().copied())),
            );
            let mut served: Vec<Vec<ContactId>> = vec![Vec::new(); queues.len()];
            let mut blocked = vec![false; queues.len()];
            while let Some((src, head)) = order.next() {
                let s = (src.get() - 1) as usize;
                prop_assert!(!blocked[s], "a blocked source was served");
                let oldest = queues
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| !blocked[*i])
                    .filter_map(|(i, q)| q.get(served[i].len()))
                    .min()
                    .copied();
                prop_assert_eq!(Some(head), oldest);
                if served[s].len() == blocked_after[s] {
                    blocked[s] = true;
                    order.block(src);
                    continue;
                }
                served[s].push(head);
                order.advance(src, queues[s].get(served[s].len()).copied());
            }
            prop_assert!(order.is_empty());
            for (s, q) in queues.iter().enumerate() {
                prop_assert_eq!(&served[s][..], &q[..served[s].len()]);
                if !blocked[s] {
                    prop_assert_eq!(served[s].len(), q.len(), "an unblocked source kept waiting");
                }
            }
        }
    }
}
