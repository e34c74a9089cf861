//! A directed acyclic graph over node indices: build order, cycles, ancestors and descendants.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap};

/// Edges point from a parent (built first) to its children.
#[derive(Debug, Clone, Default)]
pub struct Dag {
    pub names: Vec<String>,
    pub parents: Vec<Vec<usize>>,
    pub children: Vec<Vec<usize>>,
}

impl Dag {
    pub fn new(names: Vec<String>) -> Self {
        let n = names.len();
        Self {
            names,
            parents: vec![Vec::new(); n],
            children: vec![Vec::new(); n],
        }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Adds `parent → child` once.
    pub fn add_edge(&mut self, parent: usize, child: usize) {
        if !self.parents[child].contains(&parent) {
            self.parents[child].push(parent);
            self.children[parent].push(child);
        }
    }

    /// Every node after all of its parents; among nodes ready at the same time, the lowest
    /// `rank` first (so the order is stable from run to run). Fails with a cycle, as names.
    pub fn topological_order(
        &self,
        rank: impl Fn(usize) -> u64,
    ) -> Result<Vec<usize>, Vec<String>> {
        let mut waiting: Vec<usize> = self.parents.iter().map(Vec::len).collect();
        let mut ready: BinaryHeap<Reverse<(u64, usize)>> = (0..self.len())
            .filter(|&i| waiting[i] == 0)
            .map(|i| Reverse((rank(i), i)))
            .collect();
        let mut order = Vec::with_capacity(self.len());
        while let Some(Reverse((_, node))) = ready.pop() {
            order.push(node);
            for &child in &self.children[node] {
                waiting[child] -= 1;
                if waiting[child] == 0 {
                    ready.push(Reverse((rank(child), child)));
                }
            }
        }
        if order.len() == self.len() {
            Ok(order)
        } else {
            let stuck: BTreeSet<usize> = (0..self.len()).filter(|&i| waiting[i] > 0).collect();
            Err(self.find_cycle(&stuck))
        }
    }

    /// A cycle among `stuck` (nodes Kahn's algorithm could not order), as `a, b, …, a`.
    fn find_cycle(&self, stuck: &BTreeSet<usize>) -> Vec<String> {
        // Every stuck node has a stuck parent; walking parents must revisit a node.
        let Some(&start) = stuck.iter().next() else {
            return Vec::new();
        };
        let mut path = vec![start];
        let mut node = start;
        loop {
            let mut parents: Vec<usize> = self.parents[node]
                .iter()
                .copied()
                .filter(|p| stuck.contains(p))
                .collect();
            parents.sort_by(|a, b| self.names[*a].cmp(&self.names[*b]));
            let Some(&parent) = parents.first() else {
                return Vec::new();
            };
            if let Some(at) = path.iter().position(|&p| p == parent) {
                // path holds children before parents; a cycle reads parent → child.
                let mut cycle: Vec<usize> = path[at..].to_vec();
                cycle.reverse();
                // Start at the alphabetically first member, for stable messages.
                let first = (0..cycle.len())
                    .min_by(|a, b| self.names[cycle[*a]].cmp(&self.names[cycle[*b]]))
                    .unwrap_or(0);
                cycle.rotate_left(first);
                let mut names: Vec<String> = cycle.iter().map(|&i| self.names[i].clone()).collect();
                names.push(names[0].clone());
                return names;
            }
            path.push(parent);
            node = parent;
        }
    }

    pub fn ancestors(&self, node: usize) -> BTreeSet<usize> {
        self.reach(node, &self.parents)
    }

    pub fn descendants(&self, node: usize) -> BTreeSet<usize> {
        self.reach(node, &self.children)
    }

    fn reach(&self, node: usize, edges: &[Vec<usize>]) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut stack = edges[node].clone();
        while let Some(next) = stack.pop() {
            if seen.insert(next) {
                stack.extend(&edges[next]);
            }
        }
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dag(names: &[&str], edges: &[(usize, usize)]) -> Dag {
        let mut dag = Dag::new(names.iter().map(|s| s.to_string()).collect());
        for &(p, c) in edges {
            dag.add_edge(p, c);
        }
        dag
    }

    #[test]
    fn orders_parents_first() {
        let d = dag(&["c", "b", "a"], &[(2, 1), (1, 0)]);
        assert_eq!(d.topological_order(|i| i as u64).unwrap(), vec![2, 1, 0]);
        assert_eq!(d.ancestors(0), BTreeSet::from([1, 2]));
        assert_eq!(d.descendants(2), BTreeSet::from([0, 1]));
    }

    #[test]
    fn reports_a_cycle_in_edge_direction() {
        // x is fine; a → b → c → a is the cycle; d hangs below it.
        let d = dag(
            &["x", "b", "a", "c", "d"],
            &[(2, 1), (1, 3), (3, 2), (3, 4), (0, 2)],
        );
        assert_eq!(
            d.topological_order(|i| i as u64).unwrap_err(),
            vec!["a", "b", "c", "a"]
        );
    }
}
