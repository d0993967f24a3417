//! Editing a keyed type (`Y.Map`, XML attributes) into the target's: changed keys are set
//! (nested types of the same shape are edited in place), absent keys removed.

use std::collections::HashMap;

use yrs::{Map, MapRef, Out, ReadTxn, TransactionMut, Xml};

use super::{Restorer, shape};

impl<T: ReadTxn> Restorer<'_, T> {
    /// Edits map `cur` into `tgt`.
    pub(super) fn sync_map(&mut self, txn: &mut TransactionMut, cur: &MapRef, tgt: &MapRef) {
        let cur_entries: Vec<(String, Out)> =
            cur.iter(&*txn).map(|(k, v)| (k.to_owned(), v)).collect();
        let tgt_entries: Vec<(String, Out)> = tgt
            .iter(self.target)
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let plan = self.keyed_plan(txn, cur_entries, tgt_entries);
        for key in &plan.remove {
            cur.remove(txn, key);
        }
        for (cur_value, tgt_value) in &plan.edit {
            self.sync(txn, cur_value, tgt_value);
        }
        for (key, tgt_value) in &plan.set {
            let fresh = cur.insert(txn, key.as_str(), self.fresh(tgt_value));
            self.sync(txn, &fresh, tgt_value);
        }
    }

    /// Edits the attributes of XML node `cur` into those of `tgt`.
    pub(super) fn sync_attributes<C: Xml, G: Xml>(
        &mut self,
        txn: &mut TransactionMut,
        cur: &C,
        tgt: &G,
    ) {
        let cur_entries: Vec<(String, Out)> = cur
            .attributes(&*txn)
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let tgt_entries: Vec<(String, Out)> = tgt
            .attributes(self.target)
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let plan = self.keyed_plan(txn, cur_entries, tgt_entries);
        for key in &plan.remove {
            cur.remove_attribute(txn, key);
        }
        for (cur_value, tgt_value) in &plan.edit {
            self.sync(txn, cur_value, tgt_value);
        }
        for (key, tgt_value) in &plan.set {
            let fresh = cur.insert_attribute(txn, key.as_str(), self.fresh(tgt_value));
            self.sync(txn, &fresh, tgt_value);
        }
    }

    /// What to do with the keys of a map or attribute set, in key order (so that the same
    /// restore always produces the same update).
    fn keyed_plan(
        &self,
        txn: &TransactionMut,
        cur: Vec<(String, Out)>,
        mut tgt: Vec<(String, Out)>,
    ) -> KeyedPlan {
        tgt.sort_by(|x, y| x.0.cmp(&y.0));
        let mut cur: HashMap<String, Out> = cur.into_iter().collect();
        let mut plan = KeyedPlan::default();
        for (key, tgt_value) in tgt {
            match cur.remove(&key) {
                Some(cur_value)
                    if self.fingerprint(txn, &cur_value)
                        == self.fingerprint(self.target, &tgt_value) => {}
                Some(cur_value)
                    if shape(&cur_value).is_some() && shape(&cur_value) == shape(&tgt_value) =>
                {
                    plan.edit.push((cur_value, tgt_value));
                }
                _ => plan.set.push((key, tgt_value)),
            }
        }
        plan.remove = cur.into_keys().collect();
        plan.remove.sort();
        plan
    }
}

/// The keyed edits of a map or attribute set.
#[derive(Default)]
struct KeyedPlan {
    /// Keys to set to a copy of the target's value.
    set: Vec<(String, Out)>,
    /// Values of the same shape on both sides, to edit in place.
    edit: Vec<(Out, Out)>,
    /// Keys to remove.
    remove: Vec<String>,
}
