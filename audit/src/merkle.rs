//! RFC 6962 / RFC 9162 Merkle trees over event hashes: tree heads for checkpoints, inclusion
//! proofs (an event is in the log) and consistency proofs (a later log extends an earlier one).

use ring::digest::{Context, SHA256};

pub type Hash = [u8; 32];

pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut c = Context::new(&SHA256);
    c.update(&[0]);
    c.update(data);
    finish(c)
}

pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut c = Context::new(&SHA256);
    c.update(&[1]);
    c.update(left);
    c.update(right);
    finish(c)
}

fn finish(c: Context) -> Hash {
    let mut out = [0; 32];
    out.copy_from_slice(c.finish().as_ref());
    out
}

/// The hash of the empty tree.
pub fn empty_root() -> Hash {
    finish(Context::new(&SHA256))
}

/// The right edge of a growing tree: the roots of its perfect subtrees, largest first.
/// Appending is amortised O(1) hashes, the root O(log n): the writer keeps one and
/// checkpoints without re-reading the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frontier {
    size: u64,
    /// (height, hash), strictly decreasing heights.
    nodes: Vec<(u32, Hash)>,
}

impl Frontier {
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf given its data (the event hash).
    pub fn push(&mut self, data: &[u8]) {
        let mut node = (0u32, leaf_hash(data));
        while let Some(&(h, left)) = self.nodes.last() {
            if h != node.0 {
                break;
            }
            self.nodes.pop();
            node = (h + 1, node_hash(&left, &node.1));
        }
        self.nodes.push(node);
        self.size += 1;
    }

    pub fn root(&self) -> Hash {
        let mut it = self.nodes.iter().rev();
        let Some(&(_, mut acc)) = it.next() else {
            return empty_root();
        };
        for (_, left) in it {
            acc = node_hash(left, &acc);
        }
        acc
    }

    /// Serialises as the concatenated subtree hashes (heights follow from the size).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.nodes
            .iter()
            .flat_map(|(_, h)| h.iter().copied())
            .collect()
    }

    /// The inverse of [`Frontier::to_bytes`] for a tree of `size` leaves.
    pub fn from_bytes(size: u64, bytes: &[u8]) -> Option<Self> {
        let heights: Vec<u32> = (0..64u32).rev().filter(|h| size & (1 << h) != 0).collect();
        if bytes.len() != heights.len() * 32 {
            return None;
        }
        let nodes = heights
            .into_iter()
            .zip(bytes.chunks_exact(32))
            .map(|(h, c)| {
                let mut hash = [0; 32];
                hash.copy_from_slice(c);
                (h, hash)
            })
            .collect();
        Some(Self { size, nodes })
    }
}

/// The largest power of two smaller than `n` (n ≥ 2).
fn split(n: usize) -> usize {
    let mut k = 1;
    while k << 1 < n {
        k <<= 1;
    }
    k
}

/// MTH over leaves given as their data (event hashes).
pub fn root_of(leaves: &[Hash]) -> Hash {
    let mut f = Frontier::default();
    leaves.iter().for_each(|l| f.push(l));
    f.root()
}

/// The audit path for leaf `m` in the tree of `leaves` (RFC 6962 §2.1.1).
pub fn inclusion_proof(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    let n = leaves.len();
    if n <= 1 || m >= n {
        return Vec::new();
    }
    let k = split(n);
    let mut p;
    if m < k {
        p = inclusion_proof(m, &leaves[..k]);
        p.push(root_of(&leaves[k..]));
    } else {
        p = inclusion_proof(m - k, &leaves[k..]);
        p.push(root_of(&leaves[..k]));
    }
    p
}

/// RFC 9162 §2.1.3.2.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf_data: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> bool {
    if index >= size {
        return false;
    }
    let (mut f, mut s) = (index, size - 1);
    let mut r = leaf_hash(leaf_data);
    for p in proof {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && &r == root
}

/// The consistency proof between the first `m` leaves and all of `leaves` (RFC 6962 §2.1.2).
pub fn consistency_proof(m: usize, leaves: &[Hash]) -> Vec<Hash> {
    if m == 0 || m >= leaves.len() {
        return Vec::new();
    }
    subproof(m, leaves, true)
}

fn subproof(m: usize, leaves: &[Hash], whole: bool) -> Vec<Hash> {
    let n = leaves.len();
    if m == n {
        return if whole {
            Vec::new()
        } else {
            vec![root_of(leaves)]
        };
    }
    let k = split(n);
    let mut p;
    if m <= k {
        p = subproof(m, &leaves[..k], whole);
        p.push(root_of(&leaves[k..]));
    } else {
        p = subproof(m - k, &leaves[k..], false);
        p.push(root_of(&leaves[..k]));
    }
    p
}

/// RFC 9162 §2.1.4.2: does the tree of `second` leaves extend the tree of `first` leaves?
pub fn verify_consistency(
    first: u64,
    second: u64,
    first_root: &Hash,
    second_root: &Hash,
    proof: &[Hash],
) -> bool {
    if first == 0 || first > second {
        return false;
    }
    if first == second {
        return proof.is_empty() && first_root == second_root;
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if first.is_power_of_two() {
        path.push(*first_root);
    }
    path.extend_from_slice(proof);
    let Some((first_hash, rest)) = path.split_first() else {
        return false;
    };
    let (mut f, mut s) = (first - 1, second - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (*first_hash, *first_hash);
    for c in rest {
        if s == 0 {
            return false;
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f & 1 == 0 {
                while f & 1 == 0 && f != 0 {
                    f >>= 1;
                    s >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    s == 0 && &fr == first_root && &sr == second_root
}

#[cfg(test)]
#[path = "merkle_tests.rs"]
mod tests;
