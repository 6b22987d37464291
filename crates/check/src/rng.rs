//! A small seeded random number generator (splitmix64) for the workload.
//!
//! Every random choice of a drill comes from one seed, so that a run can be
//! repeated from the seed it printed: which queue a worker picks, how many
//! messages it sends, which deliveries it holds past the lease or nacks.
//! Each worker has its own stream, forked from the seed and the worker's
//! index, so workers do not share state.
//!
//! It is not cryptographic and does not need to be: it only has to spread
//! choices evenly and be the same on every machine. What it cannot make
//! reproducible is the cluster's timing: the same seed makes the same choices,
//! not the same interleaving.

/// A splitmix64 generator.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Rng { state: seed }
    }

    /// An independent generator for stream `stream` of the same seed.
    pub fn fork(&self, stream: u64) -> Self {
        let mut mixer = Rng::new(self.state ^ stream.wrapping_mul(0xA076_1D64_78BD_642F));
        Rng::new(mixer.next_u64())
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` at least 1).
    pub fn below(&mut self, n: u64) -> u64 {
        assert!(n > 0, "below(0) has no values");
        self.next_u64() % n
    }

    /// True with probability `per_mille`/1000.
    pub fn chance(&mut self, per_mille: u32) -> bool {
        self.below(1000) < u64::from(per_mille)
    }

    /// An index chosen with the given weights (not all zero).
    pub fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u64 = weights.iter().map(|w| u64::from(*w)).sum();
        let mut pick = self.below(total);
        for (index, weight) in weights.iter().enumerate() {
            let weight = u64::from(*weight);
            if pick < weight {
                return index;
            }
            pick -= weight;
        }
        unreachable!("pick is below the total of the weights")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_choices_and_forks_differ() {
        let a: Vec<u64> = (0..5).map(|_| Rng::new(42).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        let mut one = Rng::new(42).fork(1);
        let mut two = Rng::new(42).fork(2);
        assert_ne!(one.next_u64(), two.next_u64());
        // The published first output of splitmix64 for seed 0.
        assert_eq!(Rng::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
        let mut rng = Rng::new(7);
        let picks: Vec<usize> = (0..1000).map(|_| rng.weighted(&[1, 0, 3])).collect();
        assert!(!picks.contains(&1));
        assert!(picks.iter().filter(|p| **p == 2).count() > 600);
    }
}
