//! Editing a keyed type (`Y.Map`, XML attributes) into the target's: changed keys are set
//! (nested types of the same shape are edited in place), absent keys removed.

use std::collections::HashMap;

use yrs::{In, Map, MapRef, Out, ReadTxn, TransactionMut, Xml};

use super::{Restorer, shape};

/// A shared type's keyed entries: a map's, or an XML node's attributes ([`Attributes`]).
trait Keyed {
    /// Every entry, key and value.
    fn entries<R: ReadTxn>(&self, txn: &R) -> Vec<(String, Out)>;
    /// Removes the entry of `key`.
    fn remove_key(&self, txn: &mut TransactionMut, key: &str);
    /// Sets `key` to `value`, returning the integrated value.
    fn insert_key(&self, txn: &mut TransactionMut, key: &str, value: In) -> Out;
}

impl Keyed for MapRef {
    fn entries<R: ReadTxn>(&self, txn: &R) -> Vec<(String, Out)> {
        self.iter(txn).map(|(k, v)| (k.to_owned(), v)).collect()
    }

    fn remove_key(&self, txn: &mut TransactionMut, key: &str) {
        self.remove(txn, key);
    }

    fn insert_key(&self, txn: &mut TransactionMut, key: &str, value: In) -> Out {
        self.insert(txn, key, value)
    }
}

/// The attributes of an XML node, as keyed entries.
struct Attributes<'x, X>(&'x X);

impl<X: Xml> Keyed for Attributes<'_, X> {
    fn entries<R: ReadTxn>(&self, txn: &R) -> Vec<(String, Out)> {
        self.0
            .attributes(txn)
            .map(|(k, v)| (k.to_owned(), v))
            .collect()
    }

    fn remove_key(&self, txn: &mut TransactionMut, key: &str) {
        self.0.remove_attribute(txn, &key);
    }

    fn insert_key(&self, txn: &mut TransactionMut, key: &str, value: In) -> Out {
        self.0.insert_attribute(txn, key, value)
    }
}

impl<T: ReadTxn> Restorer<'_, T> {
    /// Edits map `cur` into `tgt`.
    pub(super) fn sync_map(&mut self, txn: &mut TransactionMut, cur: &MapRef, tgt: &MapRef) {
        self.sync_keyed(txn, cur, tgt);
    }

    /// Edits the attributes of XML node `cur` into those of `tgt`.
    pub(super) fn sync_attributes<C: Xml, G: Xml>(
        &mut self,
        txn: &mut TransactionMut,
        cur: &C,
        tgt: &G,
    ) {
        self.sync_keyed(txn, &Attributes(cur), &Attributes(tgt));
    }

    /// Edits the keyed entries of `cur` into those of `tgt`.
    fn sync_keyed<C: Keyed, G: Keyed>(&mut self, txn: &mut TransactionMut, cur: &C, tgt: &G) {
        let cur_entries = cur.entries(&*txn);
        let tgt_entries = tgt.entries(self.target);
        let plan = self.keyed_plan(txn, cur_entries, tgt_entries);
        for key in &plan.remove {
            cur.remove_key(txn, key);
        }
        for (cur_value, tgt_value) in &plan.edit {
            self.sync(txn, cur_value, tgt_value);
        }
        for (key, tgt_value) in &plan.set {
            let fresh = cur.insert_key(txn, key, self.fresh(tgt_value));
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
