//! `BTree<K, V>`: a persistent ordered map for large collections.
//!
//! A B+ tree whose nodes are separate persistent objects, so a change
//! rewrites one leaf (plus the nodes a split or merge touches) and a cold
//! lookup loads one node per level. Durus's `BTree` (spec 10.4) keeps
//! items in every node; here entries live in the leaves and inner nodes
//! hold only separator keys, so inner nodes branch wider (fewer levels,
//! fewer loads per lookup) and an ordered scan reads leaves only, fetching
//! the next leaves of a parent with one bulk load.
//!
//! The entry count lives in the tree's own small object, so `len()` is
//! O(1) and exact (Durus HEAD keeps per-node counts and gets them wrong,
//! spec 10.4). The price: every insert of a new key and every removal
//! rewrites that object too, so concurrent writers of one tree conflict
//! on it, as they would on any shared counter.

use std::collections::HashSet;
use std::ops::{Bound, RangeBounds};

use serde::{Deserialize, Serialize};

use crate::collections::Element;
use crate::error::{Error, Result};
use crate::format::Oid;
use crate::object::{PRef, Persistent};

/// The default most entries per leaf and children per inner node,
/// chosen by `scripts/bench-btree --node-sizes` (docs/BENCHMARKS.md).
pub const DEFAULT_NODE_SIZE: usize = 64;

/// The smallest node size: below it a split cannot leave both halves
/// at half fill.
pub const MIN_NODE_SIZE: usize = 4;

/// The largest node size (a node is one record, read and written whole).
pub const MAX_NODE_SIZE: usize = 1 << 16;

/// The most levels a sound tree can have: every inner node has two
/// children or more, so 64 levels would hold over 2^63 entries. A deeper
/// path goes round a cycle among damaged nodes, which would otherwise
/// recurse or loop forever.
const MAX_DEPTH: usize = 64;

/// Checks the level a descent has reached (1 at the root).
fn check_depth(oid: Option<Oid>, depth: usize) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(Error::InvalidState(format!(
            "BTree node {oid:?} is more than {MAX_DEPTH} levels deep: the tree's nodes form a cycle (a damaged tree)"
        )));
    }
    Ok(())
}

/// The stored nodes a whole-tree walk has entered. A node reached twice
/// is shared by two parents or sits on a cycle (damage), which would
/// make the walk count entries twice or run for ever.
#[derive(Default)]
struct Visited(HashSet<Oid>);

impl Visited {
    fn enter(&mut self, oid: Option<Oid>) -> Result<()> {
        match oid {
            Some(o) if !self.0.insert(o) => Err(Error::InvalidState(format!(
                "BTree node {o} is reached twice: the tree's nodes are shared or form a cycle (a damaged tree)"
            ))),
            _ => Ok(()),
        }
    }
}

/// A persistent ordered map whose nodes load and save independently
/// (Durus's `BTree`, as a B+ tree). Operate on it through
/// `PRef<BTree<K, V>>`:
///
/// ```
/// # use durus_core::{BTree, Connection, MemoryStorage, PObject, PRef};
/// let conn = Connection::new(MemoryStorage::new())?;
/// let tree: PRef<BTree<u64, String>> = PRef::new(BTree::new());
/// conn.root().insert("index".into(), PObject::from(tree.clone()))?;
/// for k in [5, 1, 9] {
///     tree.insert(k, format!("v{k}"))?;
/// }
/// conn.commit()?;
/// assert_eq!(tree.len()?, 3);
/// assert_eq!(tree.get(&9)?, Some("v9".to_string()));
/// let keys: Vec<u64> = tree.range(2..)?.map(|e| e.map(|(k, _)| k)).collect::<Result<_, _>>()?;
/// assert_eq!(keys, [5, 9]);
/// # Ok::<(), durus_core::Error>(())
/// ```
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound(
    serialize = "K: Element + Ord, V: Element",
    deserialize = "K: Element + Ord, V: Element"
))]
pub struct BTree<K: Element + Ord, V: Element> {
    root: PRef<Node<K, V>>,
    len: u64,
    node_size: u32,
}

/// A node: a leaf holds `keys` and `values`; an inner node holds
/// `children` and the `keys` that separate them (`keys[i]` is the
/// smallest key under `children[i + 1]`).
#[derive(Debug, Serialize, Deserialize)]
#[serde(bound(
    serialize = "K: Element + Ord, V: Element",
    deserialize = "K: Element + Ord, V: Element"
))]
pub struct Node<K: Element + Ord, V: Element> {
    keys: Vec<K>,
    values: Vec<V>,
    children: Vec<PRef<Node<K, V>>>,
}

impl<K: Element + Ord, V: Element> Persistent for BTree<K, V> {
    const CLASS_NAME: &'static str = "durus.btree.BTree";
}

impl<K: Element + Ord, V: Element> Persistent for Node<K, V> {
    const CLASS_NAME: &'static str = "durus.btree.BNode";
}

impl<K: Element + Ord, V: Element> Default for BTree<K, V> {
    fn default() -> Self {
        Self::with_node_size(DEFAULT_NODE_SIZE)
    }
}

impl<K: Element + Ord, V: Element> BTree<K, V> {
    /// An empty tree with the default node size.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty tree whose nodes hold at most `node_size` entries (leaves)
    /// or children (inner nodes), clamped to
    /// [`MIN_NODE_SIZE`]..=[`MAX_NODE_SIZE`]. Fixed for the tree's life.
    pub fn with_node_size(node_size: usize) -> Self {
        BTree {
            root: PRef::new(Node::leaf()),
            len: 0,
            node_size: node_size.clamp(MIN_NODE_SIZE, MAX_NODE_SIZE) as u32,
        }
    }
}

/// Where a descent goes next.
enum Step<K: Element + Ord, V: Element> {
    Leaf,
    Child(usize, PRef<Node<K, V>>),
}

/// What an insert below a node hands back up.
struct Inserted<K: Element + Ord, V: Element> {
    old: Option<V>,
    /// A new right sibling and its separator, when the node split.
    split: Option<(K, PRef<Node<K, V>>)>,
}

impl<K: Element + Ord, V: Element> Node<K, V> {
    fn leaf() -> Self {
        Node {
            keys: Vec::new(),
            values: Vec::new(),
            children: Vec::new(),
        }
    }

    fn is_leaf(&self) -> bool {
        self.children.is_empty()
    }

    /// Entries of a leaf, children of an inner node.
    fn width(&self) -> usize {
        if self.is_leaf() {
            self.keys.len()
        } else {
            self.children.len()
        }
    }

    /// A node whose shape is impossible (a damaged or foreign record) is
    /// an error, never an index out of bounds.
    fn check(&self, oid: Option<crate::Oid>) -> Result<()> {
        let ok = if self.is_leaf() {
            self.keys.len() == self.values.len()
        } else {
            self.values.is_empty() && self.children.len() == self.keys.len() + 1
        };
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidState(format!(
                "BTree node {oid:?} is malformed: {} keys, {} values, {} children",
                self.keys.len(),
                self.values.len(),
                self.children.len()
            )))
        }
    }

    /// The child whose range holds `key`.
    fn child_for(&self, key: &K) -> usize {
        self.keys.partition_point(|k| k <= key)
    }

    fn step(&self, oid: Option<crate::Oid>, key: &K) -> Result<Step<K, V>> {
        self.check(oid)?;
        if self.is_leaf() {
            return Ok(Step::Leaf);
        }
        let i = self.child_for(key);
        Ok(Step::Child(i, self.children[i].clone()))
    }

    /// Splits off the entries or children from `at` on into a new right
    /// sibling, returning it with its separator.
    fn split_off(&mut self, at: usize) -> (K, Node<K, V>) {
        if self.is_leaf() {
            let keys = self.keys.split_off(at);
            let values = self.values.split_off(at);
            (
                keys[0].clone(),
                Node {
                    keys,
                    values,
                    children: Vec::new(),
                },
            )
        } else {
            let children = self.children.split_off(at);
            let keys = self.keys.split_off(at);
            let sep = self
                .keys
                .pop()
                .expect("an inner node split at >= 1 keeps a key");
            (
                sep,
                Node {
                    keys,
                    values: Vec::new(),
                    children,
                },
            )
        }
    }

    /// Splits a node grown past `size`. A node that grew at its end while
    /// the last of its level splits off only that entry, so keys inserted
    /// in ascending order (the common bulk load) leave full nodes behind,
    /// not half-full ones.
    fn split_if_full(&mut self, size: usize, appended: bool) -> Option<(K, PRef<Node<K, V>>)> {
        let width = self.width();
        if width <= size {
            return None;
        }
        let at = if appended { width - 1 } else { width / 2 };
        let (sep, right) = self.split_off(at);
        Some((sep, PRef::new(right)))
    }

    /// Appends `right`'s content to this node, `sep` between them.
    fn absorb(&mut self, sep: K, right: Node<K, V>) {
        if !self.is_leaf() {
            self.keys.push(sep);
        }
        self.keys.extend(right.keys);
        self.values.extend(right.values);
        self.children.extend(right.children);
    }
}

impl<K: Element + Ord, V: Element> PRef<BTree<K, V>> {
    fn header(&self) -> Result<(PRef<Node<K, V>>, usize)> {
        self.read(|t| (t.root.clone(), t.node_size as usize))
    }

    /// Inserts, returning the value `key` had.
    pub fn insert(&self, key: K, value: V) -> Result<Option<V>> {
        let (root, size) = self.header()?;
        let done = insert_below(&root, key, value, size, true, 1)?;
        if done.old.is_some() && done.split.is_none() {
            return Ok(done.old);
        }
        self.write(|t| {
            if done.old.is_none() {
                t.len += 1;
            }
            if let Some((sep, right)) = done.split {
                let left = std::mem::replace(&mut t.root, PRef::new(Node::leaf()));
                t.root = PRef::new(Node {
                    keys: vec![sep],
                    values: Vec::new(),
                    children: vec![left, right],
                });
            }
        })?;
        Ok(done.old)
    }

    /// Inserts every entry, in order (later duplicates win).
    pub fn extend(&self, entries: impl IntoIterator<Item = (K, V)>) -> Result<()> {
        for (k, v) in entries {
            self.insert(k, v)?;
        }
        Ok(())
    }

    /// The value for `key`: one node read per level.
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        let (mut node, _) = self.header()?;
        let mut depth = 0;
        loop {
            depth += 1;
            let oid = node.oid();
            check_depth(oid, depth)?;
            let next = node.read(|n| -> Result<_> {
                Ok(match n.step(oid, key)? {
                    Step::Leaf => Err(n.keys.binary_search(key).ok().map(|i| n.values[i].clone())),
                    Step::Child(_, child) => Ok(child),
                })
            })??;
            match next {
                Ok(child) => node = child,
                Err(found) => return Ok(found),
            }
        }
    }

    pub fn contains_key(&self, key: &K) -> Result<bool> {
        Ok(self.get(key)?.is_some())
    }

    /// Removes `key`, returning its value (`None`, and no change, if it
    /// was missing).
    pub fn remove(&self, key: &K) -> Result<Option<V>> {
        let (root, size) = self.header()?;
        let Some(old) = remove_below(&root, key, size, 1)? else {
            return Ok(None);
        };
        // An inner root left with one child hands the root to it.
        let mut new_root = None;
        let mut node = root;
        for depth in 1.. {
            check_depth(node.oid(), depth)?;
            let only = node.read(|n| (n.children.len() == 1).then(|| n.children[0].clone()))?;
            match only {
                Some(child) => {
                    new_root = Some(child.clone());
                    node = child;
                }
                None => break,
            }
        }
        self.write(|t| {
            t.len = t.len.saturating_sub(1);
            if let Some(r) = new_root {
                t.root = r;
            }
        })?;
        Ok(Some(old))
    }

    /// The number of entries, in O(1).
    pub fn len(&self) -> Result<usize> {
        self.read(|t| t.len as usize)
    }

    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Removes every entry (the old nodes become garbage for the next pack).
    pub fn clear(&self) -> Result<()> {
        self.write(|t| {
            t.root = PRef::new(Node::leaf());
            t.len = 0;
        })
    }

    /// The entry with the smallest key.
    pub fn first(&self) -> Result<Option<(K, V)>> {
        self.iter()?.next().transpose()
    }

    /// The entry with the largest key.
    pub fn last(&self) -> Result<Option<(K, V)>> {
        self.iter_rev()?.next().transpose()
    }

    /// The entries in ascending key order.
    pub fn iter(&self) -> Result<Iter<K, V>> {
        self.range(..)
    }

    /// The entries in descending key order.
    pub fn iter_rev(&self) -> Result<Iter<K, V>> {
        self.range_rev(..)
    }

    /// The entries with keys `>= key`, ascending (Durus's `items_from`).
    pub fn iter_from(&self, key: &K) -> Result<Iter<K, V>> {
        self.range((Bound::Included(key.clone()), Bound::Unbounded))
    }

    /// The entries whose keys lie in `range`, ascending.
    pub fn range(&self, range: impl RangeBounds<K>) -> Result<Iter<K, V>> {
        Iter::new(self, bounds(&range), true)
    }

    /// The entries whose keys lie in `range`, descending.
    pub fn range_rev(&self, range: impl RangeBounds<K>) -> Result<Iter<K, V>> {
        Iter::new(self, bounds(&range), false)
    }

    /// Calls `f` on every entry in key order, in place (no clones, unlike
    /// the iterators: `f` must not change this tree), stopping at the
    /// first error. The children of each inner node are fetched together,
    /// as the iterators do.
    pub fn for_each(&self, mut f: impl FnMut(&K, &V) -> Result<()>) -> Result<()> {
        let (root, _) = self.header()?;
        for_each_below(&root, &mut f, 1, &mut Visited::default())
    }

    /// The most entries per leaf and children per inner node.
    pub fn node_size(&self) -> Result<usize> {
        self.read(|t| t.node_size as usize)
    }

    /// Levels of nodes, 1 for a tree that is one leaf.
    pub fn depth(&self) -> Result<usize> {
        let (mut node, _) = self.header()?;
        let mut depth = 1;
        while let Some(child) = node.read(|n| n.children.first().cloned())? {
            node = child;
            depth += 1;
            check_depth(node.oid(), depth)?;
        }
        Ok(depth)
    }

    /// Checks the whole structure (loads every node): each node well
    /// formed, keys ascending, each separator bounding its subtrees, every
    /// leaf at one depth, and `len()` equal to the entries found.
    pub fn verify(&self) -> Result<()> {
        let (root, _) = self.header()?;
        let found = verify_below(&root, None, None, 1, &mut None, &mut Visited::default())?;
        let len = self.read(|t| t.len)?;
        if found != len {
            return Err(Error::InvalidState(format!(
                "BTree {:?} counts {len} entries but holds {found}",
                self.oid()
            )));
        }
        Ok(())
    }

    /// Nodes in the tree (loads all of them).
    pub fn node_count(&self) -> Result<usize> {
        let (root, _) = self.header()?;
        let mut pending = vec![root];
        let mut count = 0;
        let mut visited = Visited::default();
        while let Some(node) = pending.pop() {
            visited.enter(node.oid())?;
            count += 1;
            node.read(|n| pending.extend(n.children.iter().cloned()))?;
        }
        Ok(count)
    }
}

/// Checks the subtree under `node` with keys in `lo..hi` (separator
/// semantics: `lo <= key < hi`), returning its entry count.
fn verify_below<K: Element + Ord, V: Element>(
    node: &PRef<Node<K, V>>,
    lo: Option<&K>,
    hi: Option<&K>,
    depth: usize,
    leaf_depth: &mut Option<usize>,
    visited: &mut Visited,
) -> Result<u64> {
    let oid = node.oid();
    check_depth(oid, depth)?;
    visited.enter(oid)?;
    let bad = |what: String| Err(Error::InvalidState(format!("BTree node {oid:?}: {what}")));
    let (keys, children) = node.read(|n| -> Result<_> {
        n.check(oid)?;
        Ok((n.keys.clone(), n.children.clone()))
    })??;
    if keys.windows(2).any(|w| w[0] >= w[1]) {
        return bad("keys out of order".into());
    }
    let inside = |k: &K| lo.is_none_or(|lo| k >= lo) && hi.is_none_or(|hi| k < hi);
    if !keys.iter().all(inside) {
        return bad("a key outside the range its parent gives".into());
    }
    if children.is_empty() {
        match *leaf_depth {
            Some(d) if d != depth => {
                return bad(format!("a leaf at depth {depth}, another at {d}"))
            }
            _ => *leaf_depth = Some(depth),
        }
        return Ok(keys.len() as u64);
    }
    let mut count = 0;
    for (i, child) in children.iter().enumerate() {
        let lo = if i == 0 { lo } else { keys.get(i - 1) };
        let hi = keys.get(i).or(hi);
        count += verify_below(child, lo, hi, depth + 1, leaf_depth, visited)?;
    }
    Ok(count)
}

fn for_each_below<K: Element + Ord, V: Element>(
    node: &PRef<Node<K, V>>,
    f: &mut dyn FnMut(&K, &V) -> Result<()>,
    depth: usize,
    visited: &mut Visited,
) -> Result<()> {
    let oid = node.oid();
    check_depth(oid, depth)?;
    visited.enter(oid)?;
    let children = node.read(|n| -> Result<Vec<PRef<Node<K, V>>>> {
        n.check(oid)?;
        for (k, v) in n.keys.iter().zip(&n.values) {
            f(k, v)?;
        }
        Ok(n.children.clone())
    })??;
    PRef::prefetch(children.iter())?;
    children
        .iter()
        .try_for_each(|child| for_each_below(child, f, depth + 1, visited))
}

fn bounds<K: Clone>(range: &impl RangeBounds<K>) -> (Bound<K>, Bound<K>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

/// Inserts below `node`; `rightmost` says whether `node` is the last node
/// of its level.
fn insert_below<K: Element + Ord, V: Element>(
    node: &PRef<Node<K, V>>,
    key: K,
    value: V,
    size: usize,
    rightmost: bool,
    depth: usize,
) -> Result<Inserted<K, V>> {
    let oid = node.oid();
    check_depth(oid, depth)?;
    let (i, child, last) =
        match node.read(|n| n.step(oid, &key).map(|s| (s, n.children.len())))?? {
            (Step::Leaf, _) => {
                return node.write(|n| match n.keys.binary_search(&key) {
                    Ok(i) => Inserted {
                        old: Some(std::mem::replace(&mut n.values[i], value)),
                        split: None,
                    },
                    Err(i) => {
                        let appended = rightmost && i == n.keys.len();
                        n.keys.insert(i, key);
                        n.values.insert(i, value);
                        Inserted {
                            old: None,
                            split: n.split_if_full(size, appended),
                        }
                    }
                });
            }
            (Step::Child(i, child), count) => (i, child, i + 1 == count),
        };
    let below = insert_below(&child, key, value, size, rightmost && last, depth + 1)?;
    let Some((sep, right)) = below.split else {
        return Ok(below);
    };
    let split = node.write(|n| {
        n.keys.insert(i, sep);
        n.children.insert(i + 1, right);
        n.split_if_full(size, rightmost && last)
    })?;
    Ok(Inserted {
        old: below.old,
        split,
    })
}

/// Removes `key` below `node`, then mends the child it came from if that
/// fell under half full.
fn remove_below<K: Element + Ord, V: Element>(
    node: &PRef<Node<K, V>>,
    key: &K,
    size: usize,
    depth: usize,
) -> Result<Option<V>> {
    let oid = node.oid();
    check_depth(oid, depth)?;
    let (i, child) = match node.read(|n| n.step(oid, key))?? {
        Step::Leaf => {
            if !node.read(|n| n.keys.binary_search(key).is_ok())? {
                return Ok(None); // nothing to change
            }
            return node.write(|n| {
                let i = n.keys.binary_search(key).ok()?;
                n.keys.remove(i);
                Some(n.values.remove(i))
            });
        }
        Step::Child(i, child) => (i, child),
    };
    let old = remove_below(&child, key, size, depth + 1)?;
    if old.is_some() && child.read(|c| c.width())? < size / 2 {
        mend(node, i, size)?;
    }
    Ok(old)
}

/// Merges the under-full child `i` of `parent` with a sibling, or, if the
/// two would not fit in one node, shares their entries evenly.
fn mend<K: Element + Ord, V: Element>(
    parent: &PRef<Node<K, V>>,
    i: usize,
    size: usize,
) -> Result<()> {
    let pair = parent.read(|p| {
        let count = p.children.len();
        if count < 2 {
            return None; // no sibling: the level above mends this node
        }
        let l = if i > 0 { i - 1 } else { 0 };
        Some((l, p.children[l].clone(), p.children[l + 1].clone()))
    })?;
    let Some((l, left, right)) = pair else {
        return Ok(());
    };
    for node in [&left, &right] {
        let oid = node.oid();
        node.read(|n| n.check(oid))??;
    }
    let right_node = right.write(|r| std::mem::replace(r, Node::leaf()))?;
    let sep = parent.read(|p| p.keys[l].clone())?;
    let split = left.write(|n| {
        n.absorb(sep, right_node);
        (n.width() > size).then(|| n.split_off(n.width() / 2))
    })?;
    match split {
        Some((sep, content)) => {
            right.write(|r| *r = content)?;
            parent.write(|p| p.keys[l] = sep)
        }
        None => parent.write(|p| {
            p.keys.remove(l);
            p.children.remove(l + 1);
        }),
    }
}

/// An iterator over a range of a [`BTree`], reading leaf by leaf: each
/// leaf's entries in the range are cloned when it is reached, and the
/// children of a node still ahead of the walk are fetched together, with
/// one bulk load (one round trip to a server) when the walk enters it.
///
/// Changing the tree while iterating it is allowed (nothing is borrowed)
/// but what the iterator then yields is unspecified.
pub struct Iter<K: Element + Ord, V: Element> {
    /// The inner nodes above the current leaf, each with the index of the
    /// child being visited.
    path: Vec<(PRef<Node<K, V>>, usize)>,
    /// The current leaf's remaining entries, next last.
    entries: Vec<(K, V)>,
    /// Where to stop: the far end of the range.
    end: Bound<K>,
    ascending: bool,
    done: bool,
}

impl<K: Element + Ord, V: Element> Iter<K, V> {
    fn new(
        tree: &PRef<BTree<K, V>>,
        (start, end): (Bound<K>, Bound<K>),
        ascending: bool,
    ) -> Result<Self> {
        let (from, end) = if ascending {
            (start, end)
        } else {
            (end, start)
        };
        let (root, _) = tree.header()?;
        let mut iter = Iter {
            path: Vec::new(),
            entries: Vec::new(),
            end,
            ascending,
            done: false,
        };
        iter.seek(root, &from)?;
        Ok(iter)
    }

    /// Descends from `node` to the leaf where `from` starts the walk,
    /// taking the entries of that leaf that lie past `from`.
    fn seek(&mut self, mut node: PRef<Node<K, V>>, from: &Bound<K>) -> Result<()> {
        loop {
            let oid = node.oid();
            check_depth(oid, self.path.len() + 1)?;
            let child = node.read(|n| -> Result<_> {
                n.check(oid)?;
                if n.is_leaf() {
                    return Ok(None);
                }
                let i = match from {
                    Bound::Included(k) | Bound::Excluded(k) => n.child_for(k),
                    Bound::Unbounded if self.ascending => 0,
                    Bound::Unbounded => n.children.len() - 1,
                };
                let child = n.children[i].clone();
                // The walk goes on to the siblings this way: fetch them
                // with the child, one round trip for the lot.
                let ahead = match child.is_ghost() {
                    true if self.ascending => n.children[i..].to_vec(),
                    true => n.children[..=i].to_vec(),
                    false => Vec::new(),
                };
                Ok(Some((i, child, ahead)))
            })??;
            let Some((i, child, ahead)) = child else {
                break;
            };
            PRef::prefetch(ahead.iter())?;
            self.path.push((node, i));
            node = child;
        }
        let ascending = self.ascending;
        self.entries = node.read(|n| {
            let keys = &n.keys;
            let range = if ascending {
                let lo = match from {
                    Bound::Included(k) => keys.partition_point(|x| x < k),
                    Bound::Excluded(k) => keys.partition_point(|x| x <= k),
                    Bound::Unbounded => 0,
                };
                lo..keys.len()
            } else {
                let hi = match from {
                    Bound::Included(k) => keys.partition_point(|x| x <= k),
                    Bound::Excluded(k) => keys.partition_point(|x| x < k),
                    Bound::Unbounded => keys.len(),
                };
                0..hi
            };
            take(n, range, ascending)
        })?;
        Ok(())
    }

    /// Moves to the next leaf in the walk's direction.
    fn next_leaf(&mut self) -> Result<bool> {
        while let Some((node, i)) = self.path.pop() {
            let ascending = self.ascending;
            let next = node.read(|n| {
                let j = if ascending {
                    i.checked_add(1)
                } else {
                    i.checked_sub(1)
                }?;
                // Fetched with its siblings when the walk entered `node`.
                Some((j, n.children.get(j)?.clone()))
            })?;
            let Some((j, child)) = next else {
                continue;
            };
            self.path.push((node, j));
            let from = Bound::Unbounded;
            self.seek(child, &from)?;
            return Ok(true);
        }
        Ok(false)
    }

    fn past_end(&self, key: &K) -> bool {
        match (&self.end, self.ascending) {
            (Bound::Unbounded, _) => false,
            (Bound::Included(e), true) => key > e,
            (Bound::Excluded(e), true) => key >= e,
            (Bound::Included(e), false) => key < e,
            (Bound::Excluded(e), false) => key <= e,
        }
    }
}

/// Clones a leaf's entries in `range`, ordered so that `pop` yields them
/// in the walk's direction.
fn take<K: Element + Ord, V: Element>(
    n: &Node<K, V>,
    range: std::ops::Range<usize>,
    ascending: bool,
) -> Vec<(K, V)> {
    let entries = n.keys[range.clone()]
        .iter()
        .cloned()
        .zip(n.values[range].iter().cloned());
    if ascending {
        entries.rev().collect()
    } else {
        entries.collect()
    }
}

impl<K: Element + Ord, V: Element> Iterator for Iter<K, V> {
    type Item = Result<(K, V)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        loop {
            if let Some((k, v)) = self.entries.pop() {
                if self.past_end(&k) {
                    self.done = true;
                    self.path.clear();
                    self.entries.clear();
                    return None;
                }
                return Some(Ok((k, v)));
            }
            match self.next_leaf() {
                Ok(true) => {}
                Ok(false) => {
                    self.done = true;
                    return None;
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}
