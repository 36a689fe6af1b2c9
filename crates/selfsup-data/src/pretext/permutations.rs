//! The jigsaw permutation set (Noroozi & Favaro 2016, "Unsupervised Learning of
//! Visual Representations by Solving Jigsaw Puzzles", section 3.2 and algorithm 1).

use crate::error::{DataError, Result};
use crate::rng::Rng;

/// Largest tile count whose permutations are all enumerated as candidates
/// (9! = 362 880); above it the candidates are a random pool of [`CANDIDATE_POOL`].
pub const MAX_ENUMERATED_TILES: usize = 9;
/// Number of random candidate permutations drawn when there are more than
/// [`MAX_ENUMERATED_TILES`] tiles.
pub const CANDIDATE_POOL: usize = 100_000;
/// Key that separates the set's random stream from the other uses of the run seed.
const STREAM_KEY: u64 = u64::from_le_bytes(*b"jigsawPS");

/// `count` permutations of `tiles` tiles that are far apart in Hamming distance, so
/// that the puzzle's classes are hard to confuse. Entry `k` of a permutation is a
/// tile index in `0..tiles`.
///
/// Built greedily as in Noroozi & Favaro's algorithm 1: start from a random
/// candidate, then repeatedly add the candidate whose *minimum* Hamming distance to
/// the permutations chosen so far is largest (the criterion); ties go to
/// the larger *total* distance (the paper's criterion), and remaining ties are broken
/// by the seeded [`Rng`]. For up to [`MAX_ENUMERATED_TILES`] tiles every permutation
/// is a candidate; for more (grid 4 and up) the candidates are [`CANDIDATE_POOL`]
/// random permutations, since `16!` cannot be enumerated.
///
/// Serialises to JSON as `{tiles, seed, min_hamming_distance, permutations}`;
/// deserialising checks every row and the claimed distance.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "RawPermutationSet")]
pub struct PermutationSet {
    tiles: usize,
    seed: u64,
    min_hamming_distance: usize,
    permutations: Vec<Vec<u8>>,
}

/// The unchecked form a [`PermutationSet`] is read from.
#[derive(serde::Deserialize)]
struct RawPermutationSet {
    tiles: usize,
    seed: u64,
    min_hamming_distance: usize,
    permutations: Vec<Vec<u8>>,
}

impl TryFrom<RawPermutationSet> for PermutationSet {
    type Error = DataError;
    fn try_from(raw: RawPermutationSet) -> Result<Self> {
        let set = Self::from_rows(raw.tiles, raw.seed, raw.permutations)?;
        if set.min_hamming_distance != raw.min_hamming_distance {
            return Err(DataError::config(
                "permutations",
                format!(
                    "the set claims minimum Hamming distance {} but has {}",
                    raw.min_hamming_distance, set.min_hamming_distance
                ),
            ));
        }
        Ok(set)
    }
}

impl PermutationSet {
    /// Builds `count` permutations of `tiles` tiles from `seed` (see the type docs).
    ///
    /// # Errors
    /// [`DataError::Config`] when `tiles` is not in `2..=255`, `count` is 0, or
    /// `count` exceeds the number of candidate permutations (`tiles!`, or
    /// [`CANDIDATE_POOL`] above [`MAX_ENUMERATED_TILES`] tiles).
    pub fn new(tiles: usize, count: usize, seed: u64) -> Result<Self> {
        check_tiles(tiles)?;
        let mut rng = Rng::derive(seed, &[STREAM_KEY]);
        let candidates = candidates(tiles, &mut rng);
        let available = candidates.len() / tiles;
        if count == 0 || count > available {
            let what = if tiles <= MAX_ENUMERATED_TILES {
                format!("the {available} orderings of {tiles} tiles")
            } else {
                format!("the pool of {available} candidate orderings")
            };
            return Err(DataError::config(
                "permutations",
                format!("must lie in 1..={available} ({what}), got {count}"),
            ));
        }
        let chosen = greedy_select(&candidates, tiles, count, &mut rng);
        let permutations = chosen
            .iter()
            .map(|&c| candidates[c * tiles..(c + 1) * tiles].to_vec())
            .collect();
        Self::from_rows(tiles, seed, permutations)
    }

    /// A set from explicit rows (a saved set), with its distance recomputed.
    ///
    /// # Errors
    /// [`DataError::Config`] when a row is not a permutation of `0..tiles`, two rows
    /// are equal, or the set is empty.
    pub fn from_rows(tiles: usize, seed: u64, permutations: Vec<Vec<u8>>) -> Result<Self> {
        check_tiles(tiles)?;
        if permutations.is_empty() {
            return Err(DataError::config("permutations", "the set is empty"));
        }
        for (i, p) in permutations.iter().enumerate() {
            if !is_permutation(p, tiles) {
                return Err(DataError::config(
                    "permutations",
                    format!("row {i} {p:?} is not a permutation of 0..{tiles}"),
                ));
            }
        }
        let min_hamming_distance = min_pairwise_distance(&permutations);
        if permutations.len() > 1 && min_hamming_distance == 0 {
            return Err(DataError::config(
                "permutations",
                "the set holds the same permutation twice",
            ));
        }
        Ok(Self {
            tiles,
            seed,
            min_hamming_distance,
            permutations,
        })
    }

    /// Number of permutations (the jigsaw task's classes).
    pub fn len(&self) -> usize {
        self.permutations.len()
    }

    /// Always false: a set holds at least one permutation.
    pub fn is_empty(&self) -> bool {
        self.permutations.is_empty()
    }

    /// Tiles each permutation orders.
    pub fn tiles(&self) -> usize {
        self.tiles
    }

    /// The seed the set was built from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Permutation `i`: entry `k` is a tile index.
    ///
    /// # Panics
    /// If `i >= len()`.
    pub fn get(&self, i: usize) -> &[u8] {
        &self.permutations[i]
    }

    /// All permutations, in class order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.permutations.iter().map(Vec::as_slice)
    }

    /// Smallest Hamming distance between two permutations of the set (0 for a
    /// set of one).
    pub fn min_hamming_distance(&self) -> usize {
        self.min_hamming_distance
    }

    /// All entries, row after row, as `u32` (for a `(len, tiles)` tensor).
    pub fn to_u32(&self) -> Vec<u32> {
        self.iter().flatten().map(|&t| u32::from(t)).collect()
    }
}

fn check_tiles(tiles: usize) -> Result<()> {
    if (2..=usize::from(u8::MAX)).contains(&tiles) {
        Ok(())
    } else {
        Err(DataError::config(
            "grid",
            format!("a jigsaw needs 2 to 255 tiles, got {tiles}"),
        ))
    }
}

fn is_permutation(p: &[u8], tiles: usize) -> bool {
    let mut seen = vec![false; tiles];
    p.len() == tiles
        && p.iter().all(|&t| {
            let t = usize::from(t);
            t < tiles && !std::mem::replace(&mut seen[t], true)
        })
}

/// Positions where `a` and `b` differ.
fn hamming(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x != y).count()
}

/// Smallest distance over all pairs (0 for fewer than two rows).
fn min_pairwise_distance(rows: &[Vec<u8>]) -> usize {
    let mut best = usize::MAX;
    for (i, a) in rows.iter().enumerate() {
        for b in &rows[i + 1..] {
            best = best.min(hamming(a, b));
        }
    }
    if best == usize::MAX {
        0
    } else {
        best
    }
}

/// The candidate permutations, flattened row after row: every permutation of
/// `tiles` in lexicographic order, or a random pool above [`MAX_ENUMERATED_TILES`].
fn candidates(tiles: usize, rng: &mut Rng) -> Vec<u8> {
    let identity: Vec<u8> = (0..tiles).map(|t| t as u8).collect();
    if tiles > MAX_ENUMERATED_TILES {
        let mut out = Vec::with_capacity(CANDIDATE_POOL * tiles);
        let mut p = identity;
        for _ in 0..CANDIDATE_POOL {
            rng.shuffle(&mut p);
            out.extend_from_slice(&p);
        }
        return out;
    }
    let total: usize = (1..=tiles).product();
    let mut out = Vec::with_capacity(total * tiles);
    let mut p = identity;
    loop {
        out.extend_from_slice(&p);
        if !next_permutation(&mut p) {
            return out;
        }
    }
}

/// Advances `p` to the next permutation in lexicographic order; false after the last.
fn next_permutation(p: &mut [u8]) -> bool {
    let Some(i) = (1..p.len()).rev().find(|&i| p[i - 1] < p[i]) else {
        return false;
    };
    let j = (i..p.len()).rev().find(|&j| p[j] > p[i - 1]).unwrap_or(i);
    p.swap(i - 1, j);
    p[i..].reverse();
    true
}

/// Greedy max-min selection of `count` candidate indices. Keeps, per candidate, its
/// minimum and total distance to the chosen set and updates both after each
/// addition: `count * candidates * tiles` byte comparisons in all.
fn greedy_select(candidates: &[u8], tiles: usize, count: usize, rng: &mut Rng) -> Vec<usize> {
    let n = candidates.len() / tiles;
    let row = |c: usize| &candidates[c * tiles..(c + 1) * tiles];
    let mut min_dist = vec![u8::MAX; n];
    let mut total = vec![0u32; n];
    let mut chosen = vec![rng.below(n as u64) as usize];
    while chosen.len() < count {
        let Some(&last) = chosen.last() else { break };
        let newest = row(last);
        let mut best = 0u64;
        for c in 0..n {
            let d = hamming(row(c), newest) as u8;
            min_dist[c] = min_dist[c].min(d);
            total[c] += u32::from(d);
            best = best.max(key(min_dist[c], total[c]));
        }
        // Chosen candidates have distance 0 to themselves, so while any other
        // candidate remains the best key belongs to an unchosen one.
        let ties = (0..n)
            .filter(|&c| key(min_dist[c], total[c]) == best)
            .count();
        let pick = rng.below(ties as u64) as usize;
        let next = (0..n)
            .filter(|&c| key(min_dist[c], total[c]) == best)
            .nth(pick)
            .unwrap_or(0);
        chosen.push(next);
    }
    chosen
}

/// Orders candidates by minimum distance, then by total distance.
fn key(min_dist: u8, total: u32) -> u64 {
    (u64::from(min_dist) << 32) | u64::from(total)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn check_set(set: &PermutationSet, tiles: usize, count: usize) {
        assert_eq!((set.len(), set.tiles()), (count, tiles));
        let rows: Vec<&[u8]> = set.iter().collect();
        let mut independent = usize::MAX;
        for (i, a) in rows.iter().enumerate() {
            let mut sorted = a.to_vec();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..tiles as u8).collect::<Vec<_>>(), "row {i}");
            for b in &rows[i + 1..] {
                let d = (0..tiles).filter(|&k| a[k] != b[k]).count();
                assert!(d > 0, "duplicate row {a:?}");
                independent = independent.min(d);
            }
        }
        assert_eq!(set.min_hamming_distance(), independent);
    }

    #[test]
    fn set_of_100_has_the_distance_it_claims_and_is_reproducible() {
        let set = PermutationSet::new(9, 100, 7).unwrap();
        check_set(&set, 9, 100);
        // Greedy max-min over all 9! candidates keeps the set far apart; 9 distinct
        // permutations at distance 9 exist (a Latin square), 100 cannot all be.
        assert!(
            set.min_hamming_distance() >= 6,
            "{}",
            set.min_hamming_distance()
        );
        assert_eq!(set, PermutationSet::new(9, 100, 7).unwrap());
        assert_ne!(set, PermutationSet::new(9, 100, 8).unwrap());
        let small = PermutationSet::new(9, 9, 7).unwrap();
        check_set(&small, 9, 9);
        assert_eq!(small.min_hamming_distance(), 9);
    }

    #[test]
    fn other_grids_and_bad_counts() {
        let all = PermutationSet::new(4, 24, 1).unwrap();
        check_set(&all, 4, 24);
        assert_eq!(all.min_hamming_distance(), 2);
        check_set(&PermutationSet::new(16, 20, 1).unwrap(), 16, 20);
        let e = PermutationSet::new(4, 100, 1).unwrap_err().to_string();
        assert!(
            e.contains("permutations") && e.contains("24 orderings"),
            "{e}"
        );
        assert!(PermutationSet::new(9, 0, 1).is_err());
        assert!(PermutationSet::new(1, 1, 1).is_err());
    }

    #[test]
    fn rows_are_checked_when_loaded() {
        assert!(PermutationSet::from_rows(3, 0, vec![vec![0, 1, 2], vec![0, 2, 1]]).is_ok());
        let dup = PermutationSet::from_rows(3, 0, vec![vec![0, 1, 2], vec![0, 1, 2]]);
        assert!(dup.unwrap_err().to_string().contains("twice"));
        assert!(PermutationSet::from_rows(3, 0, vec![vec![0, 1, 1]]).is_err());
        assert!(PermutationSet::from_rows(3, 0, vec![vec![0, 1]]).is_err());
        assert!(PermutationSet::from_rows(3, 0, vec![]).is_err());
        let one = PermutationSet::from_rows(3, 0, vec![vec![2, 0, 1]]).unwrap();
        assert_eq!(
            (one.min_hamming_distance(), one.to_u32()),
            (0, vec![2, 0, 1])
        );
    }

    #[test]
    fn enumeration_is_complete_and_ordered() {
        let c = candidates(4, &mut Rng::new(0));
        assert_eq!(c.len(), 24 * 4);
        assert_eq!(&c[..8], &[0, 1, 2, 3, 0, 1, 3, 2]);
        assert_eq!(&c[c.len() - 4..], &[3, 2, 1, 0]);
    }
}
