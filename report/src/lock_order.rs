//! Lock order: which lock files an owner already held when it took another ("A held while taking
//! B"), and the cycles of that graph, each a **potential deadlock** (A→B in one process, B→A in
//! another) even when no deadlock happened.
//!
//! Locks are named by their report key (path, or name when the path is unknown). Cycles are not
//! every elementary cycle (exponentially many): for each edge A→B that lies on a cycle, the
//! shortest way back from B to A closes one, and the same cycle found from several edges is kept
//! once, rotated to start at its smallest lock.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

use crate::mode::Mode;

/// The most edges a lock order keeps (and a report may hold): finding cycles costs a search per
/// edge, so this bounds the work a report, hostile or not, can ask of a reader. Edges past it are
/// counted in [`LockOrder::edges_dropped`].
pub const MAX_ORDER_EDGES: usize = 1024;

/// The first time an edge was seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderExample {
    pub pid: u32,
    pub comm: String,
    /// The mode the earlier lock was held in.
    pub held_mode: Mode,
    /// The mode the later lock was taken in.
    pub taken_mode: Mode,
    /// Leaf-first stack of the call that took the earlier lock (`record --stacks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_stack: Option<Vec<String>>,
    /// Leaf-first stack of the call that took the later lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_stack: Option<Vec<String>>,
}

/// `held` was held while `taken` was taken, `count` times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderEdge {
    pub held: String,
    pub taken: String,
    pub count: u64,
    pub example: OrderExample,
}

/// The lock-order graph of a run and its cycles.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockOrder {
    /// Sorted by (held, taken).
    #[serde(default)]
    pub edges: Vec<OrderEdge>,
    /// Each a list of locks `[A, B, ...]` meaning A→B→…→A, starting at its smallest lock.
    #[serde(default)]
    pub cycles: Vec<Vec<String>>,
    /// Times an edge was seen that did not fit in [`MAX_ORDER_EDGES`]: cycles through it are missed.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub edges_dropped: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl LockOrder {
    pub fn is_empty(&self) -> bool {
        self.edges.is_empty() && self.cycles.is_empty() && self.edges_dropped == 0
    }

    /// The edge `held` → `taken`, if recorded.
    pub fn edge(&self, held: &str, taken: &str) -> Option<&OrderEdge> {
        self.edges
            .iter()
            .find(|e| e.held == held && e.taken == taken)
    }
}

/// `a → b → a (pid 12 comm x; pid 13 comm y)`: a cycle of `order` closed back to its start, with
/// the first process that took each of its edges.
pub fn describe_cycle(order: &LockOrder, cycle: &[String]) -> String {
    let path: Vec<&str> = cycle
        .iter()
        .chain(cycle.first())
        .map(String::as_str)
        .collect();
    let examples: Vec<String> = path
        .windows(2)
        .filter_map(|w| order.edge(w[0], w[1]))
        .map(|e| format!("pid {} comm {}", e.example.pid, e.example.comm))
        .collect();
    format!("{} ({})", path.join(" → "), examples.join("; "))
}

/// Accumulates lock-order edges.
#[derive(Debug, Clone, Default)]
pub(crate) struct OrderAcc {
    edges: BTreeMap<(String, String), (u64, OrderExample)>,
    dropped: u64,
}

impl OrderAcc {
    pub(crate) fn record(
        &mut self,
        held: &str,
        taken: &str,
        example: impl FnOnce() -> OrderExample,
    ) {
        if held == taken {
            return;
        }
        let full = self.edges.len() >= MAX_ORDER_EDGES;
        match self.edges.get_mut(&(held.to_string(), taken.to_string())) {
            Some(e) => e.0 = e.0.saturating_add(1),
            None if full => self.dropped = self.dropped.saturating_add(1),
            None => {
                self.edges
                    .insert((held.into(), taken.into()), (1, example()));
            }
        }
    }

    /// Adds stored edges, keeping the first example; a count past `u64::MAX` is refused.
    pub(crate) fn absorb(&mut self, order: &LockOrder) -> Result<(), String> {
        const OVERFLOW: &str = "lock-order counts add up past 2^64";
        for e in &order.edges {
            let key = (e.held.clone(), e.taken.clone());
            if !self.edges.contains_key(&key) && self.edges.len() >= MAX_ORDER_EDGES {
                self.dropped = self.dropped.checked_add(e.count).ok_or(OVERFLOW)?;
                continue;
            }
            let entry = self
                .edges
                .entry(key)
                .or_insert_with(|| (0, e.example.clone()));
            entry.0 = entry.0.checked_add(e.count).ok_or(OVERFLOW)?;
        }
        self.dropped = self
            .dropped
            .checked_add(order.edges_dropped)
            .ok_or(OVERFLOW)?;
        Ok(())
    }

    pub(crate) fn report(&self) -> LockOrder {
        let edges: Vec<OrderEdge> = self
            .edges
            .iter()
            .map(|((held, taken), (count, example))| OrderEdge {
                held: held.clone(),
                taken: taken.clone(),
                count: *count,
                example: example.clone(),
            })
            .collect();
        let cycles = cycles(&edges);
        LockOrder {
            edges,
            cycles,
            edges_dropped: self.dropped,
        }
    }
}

/// The cycles of the graph `edges`, as the module documentation describes them, sorted.
pub fn cycles(edges: &[OrderEdge]) -> Vec<Vec<String>> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for e in edges {
        next.entry(&e.held).or_default().push(&e.taken);
    }
    let mut found = BTreeSet::new();
    for e in edges {
        if let Some(path) = shortest_path(&next, &e.taken, &e.held) {
            // path runs taken → … → held; the edge closes it.
            let mut cycle: Vec<String> = std::iter::once(e.held.clone())
                .chain(path.iter().take(path.len() - 1).map(|s| s.to_string()))
                .collect();
            let start = cycle
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| s.as_str())
                .map_or(0, |(i, _)| i);
            cycle.rotate_left(start);
            found.insert(cycle);
        }
    }
    found.into_iter().collect()
}

/// Breadth-first: the nodes from `from` to `to`, both included.
fn shortest_path<'a>(
    next: &BTreeMap<&'a str, Vec<&'a str>>,
    from: &'a str,
    to: &str,
) -> Option<Vec<&'a str>> {
    let mut parent: BTreeMap<&str, &str> = BTreeMap::new();
    let mut queue = VecDeque::from([from]);
    parent.insert(from, from);
    while let Some(at) = queue.pop_front() {
        if at == to {
            let mut path = vec![at];
            let mut cur = at;
            while cur != from {
                cur = parent[cur];
                path.push(cur);
            }
            path.reverse();
            return Some(path);
        }
        for &n in next.get(at).into_iter().flatten() {
            if !parent.contains_key(n) {
                parent.insert(n, at);
                queue.push_back(n);
            }
        }
    }
    None
}

/// Checks a stored lock order: at most [`MAX_ORDER_EDGES`] edges, sorted and unique, none from a lock to itself, every count
/// at least one, and the cycles exactly those its edges make.
pub(crate) fn check(order: &LockOrder) -> Result<(), String> {
    if order.edges.len() > MAX_ORDER_EDGES {
        return Err(format!(
            "{} edges, more than the {MAX_ORDER_EDGES} a report keeps",
            order.edges.len()
        ));
    }
    for pair in order.edges.windows(2) {
        if (&pair[0].held, &pair[0].taken) >= (&pair[1].held, &pair[1].taken) {
            return Err(format!(
                "edge {} → {} is listed twice or out of order",
                pair[1].held, pair[1].taken
            ));
        }
    }
    for e in &order.edges {
        if e.held == e.taken {
            return Err(format!("edge from {} to itself", e.held));
        }
        if e.count == 0 {
            return Err(format!("edge {} → {} was never taken", e.held, e.taken));
        }
    }
    if order.cycles != cycles(&order.edges) {
        return Err("cycles are not the ones its edges make".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acc(edges: &[(&str, &str)]) -> LockOrder {
        let mut acc = OrderAcc::default();
        for (i, (held, taken)) in edges.iter().enumerate() {
            acc.record(held, taken, || OrderExample {
                pid: i as u32,
                comm: "p".into(),
                held_mode: Mode::Write,
                taken_mode: Mode::Read,
                held_stack: None,
                taken_stack: None,
            });
        }
        acc.report()
    }

    #[test]
    fn an_edge_counts_and_keeps_its_first_example() {
        let o = acc(&[("a", "b"), ("a", "b")]);
        assert_eq!(o.edges.len(), 1);
        assert_eq!(o.edges[0].count, 2);
        assert_eq!(o.edges[0].example.pid, 0);
        assert!(o.cycles.is_empty());
    }

    #[test]
    fn relocking_the_same_file_is_no_edge() {
        assert!(acc(&[("a", "a")]).is_empty());
    }

    #[test]
    fn opposite_orders_make_a_cycle_of_two() {
        let o = acc(&[("b", "a"), ("a", "b")]);
        assert_eq!(o.cycles, vec![vec!["a".to_string(), "b".to_string()]]);
    }

    #[test]
    fn a_cycle_of_three_is_found_once() {
        let o = acc(&[("a", "b"), ("b", "c"), ("c", "a"), ("a", "d")]);
        assert_eq!(o.cycles, vec![vec!["a", "b", "c"]]);
    }

    #[test]
    fn a_consistent_order_has_no_cycle() {
        let o = acc(&[("a", "b"), ("b", "c"), ("a", "c")]);
        assert_eq!(o.edges.len(), 3);
        assert!(o.cycles.is_empty());
        assert_eq!(check(&o), Ok(()));
    }

    #[test]
    fn stored_cycles_must_match_the_edges() {
        let mut o = acc(&[("a", "b"), ("b", "a")]);
        assert_eq!(check(&o), Ok(()));
        o.cycles.clear();
        assert!(check(&o).is_err());
        let mut o = acc(&[("a", "b")]);
        o.edges[0].count = 0;
        assert!(check(&o).is_err());
    }

    #[test]
    fn edges_past_the_cap_are_counted_as_dropped() {
        let names: Vec<String> = (0..=MAX_ORDER_EDGES).map(|i| format!("l{i:05}")).collect();
        let pairs: Vec<(&str, &str)> = names.iter().map(|n| ("a", n.as_str())).collect();
        let o = acc(&pairs);
        assert_eq!((o.edges.len(), o.edges_dropped), (MAX_ORDER_EDGES, 1));
        assert_eq!(check(&o), Ok(()));
        let mut m = OrderAcc::default();
        m.absorb(&o).unwrap();
        m.absorb(&acc(&[("z", "y")])).unwrap();
        assert_eq!(m.report().edges_dropped, 2);
        let mut too_many = o.clone();
        too_many.edges.push(OrderEdge {
            held: "zz".into(),
            ..o.edges[0].clone()
        });
        assert!(check(&too_many).is_err());
    }

    #[test]
    fn merging_adds_counts_and_keeps_the_first_example() {
        let mut m = OrderAcc::default();
        m.absorb(&acc(&[("a", "b")])).unwrap();
        let mut second = acc(&[("a", "b"), ("b", "a")]);
        second.edges[0].example.pid = 99;
        m.absorb(&second).unwrap();
        let o = m.report();
        assert_eq!(
            o.edge("a", "b").map(|e| (e.count, e.example.pid)),
            Some((2, 0))
        );
        assert_eq!(o.cycles.len(), 1);
    }
}
