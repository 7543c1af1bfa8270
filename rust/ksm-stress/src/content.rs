//! What every page holds: a function of (worker, page, generation), so that
//! any page can be checked at any time against what its owner last wrote.
//!
//! Most contents are shared: a tenth of the pages are zero pages (for
//! use_zero_pages), six tenths hold one of [`SHARED_CONTENTS`] contents that
//! every worker writes too (with a small max_page_sharing these form chains
//! of many dups), and the rest are unique to their worker, page and
//! generation. A new generation of a page usually changes its content.

/// How many distinct shared (non-zero) contents all workers draw from.
pub const SHARED_CONTENTS: u64 = 24;

const WORDS: usize = 4096 / 8;

/// splitmix64's finaliser: a bijection on u64 that mixes every bit.
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// What a page holds, as the seed of its words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    Zero,
    /// One of the contents every worker writes: 1..=SHARED_CONTENTS.
    Shared(u64),
    /// Unique to (worker, page, generation).
    Unique {
        worker: u32,
        page: u32,
        generation: u32,
    },
}

impl Content {
    pub fn of(worker: u32, page: u32, generation: u32) -> Content {
        let h = mix((u64::from(page) << 32) | u64::from(generation));
        match h % 100 {
            0..10 => Content::Zero,
            10..70 => Content::Shared(1 + (h >> 8) % SHARED_CONTENTS),
            _ => Content::Unique {
                worker,
                page,
                generation,
            },
        }
    }

    /// The seed the page's words derive from; 0 only for the zero page.
    fn seed(self) -> u64 {
        match self {
            Content::Zero => 0,
            Content::Shared(k) => k,
            Content::Unique {
                worker,
                page,
                generation,
            } => {
                // Above every shared seed, and distinct for each triple.
                (1 << 63)
                    | (u64::from(worker) << 42)
                    | ((u64::from(page) & 0x1f_ffff) << 21)
                    | (u64::from(generation) & 0x1f_ffff)
            }
        }
    }

    pub fn word(self, n: usize) -> u64 {
        match self.seed() {
            0 => 0,
            seed => mix(seed ^ (n as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15)),
        }
    }

    /// Write the content into `page` (a page's worth of words).
    pub fn fill(self, page: &mut [u64]) {
        for (n, w) in page.iter_mut().enumerate() {
            *w = self.word(n);
        }
    }

    /// None if `page` holds this content, else what differs.
    pub fn check(self, page: &[u64]) -> Option<Mismatch> {
        let mut first = None;
        let mut words = 0;
        for (n, &got) in page.iter().enumerate() {
            if got != self.word(n) {
                words += 1;
                first.get_or_insert((n, got));
            }
        }
        let (word, got) = first?;
        Some(Mismatch {
            word,
            expected: self.word(word),
            got,
            words,
            holds: Content::identify(page),
        })
    }

    /// Which known content `page` holds, if it is a shared one or zero:
    /// a corrupted page that holds another page's content says which.
    pub fn identify(page: &[u64]) -> Option<Content> {
        let candidates =
            std::iter::once(Content::Zero).chain((1..=SHARED_CONTENTS).map(Content::Shared));
        candidates.into_iter().find(|c| c.check_words(page))
    }

    fn check_words(self, page: &[u64]) -> bool {
        page.iter().enumerate().all(|(n, &w)| w == self.word(n))
    }

    pub fn describe(self) -> String {
        match self {
            Content::Zero => "zero".into(),
            Content::Shared(k) => format!("shared #{k}"),
            Content::Unique {
                worker,
                page,
                generation,
            } => {
                format!("unique to worker {worker} page {page} generation {generation}")
            }
        }
    }
}

/// How a page differs from what it should hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub word: usize,
    pub expected: u64,
    pub got: u64,
    /// How many of the page's words differ.
    pub words: usize,
    /// The known content the page holds instead, if any.
    pub holds: Option<Content>,
}

pub const PAGE_WORDS: usize = WORDS;

/// A small deterministic generator (splitmix64): the campaign's choices
/// follow from its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in lo..=hi.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }

    /// True with probability percent/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    /// An index drawn with the given weights (not all zero).
    pub fn weighted(&mut self, weights: &[u64]) -> usize {
        let total: u64 = weights.iter().sum();
        let mut x = self.below(total);
        for (i, &w) in weights.iter().enumerate() {
            if x < w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(c: Content) -> Vec<u64> {
        let mut p = vec![0; WORDS];
        c.fill(&mut p);
        p
    }

    #[test]
    fn contents_are_spread_as_documented() {
        let mut counts = [0u32; 3];
        for page in 0..10_000 {
            match Content::of(3, page, 0) {
                Content::Zero => counts[0] += 1,
                Content::Shared(k) => {
                    assert!((1..=SHARED_CONTENTS).contains(&k));
                    counts[1] += 1
                }
                Content::Unique { .. } => counts[2] += 1,
            }
        }
        // 10%, 60%, 30%, give or take.
        assert!((800..1200).contains(&counts[0]), "{counts:?}");
        assert!((5700..6300).contains(&counts[1]), "{counts:?}");
        assert!((2700..3300).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn shared_contents_do_not_depend_on_the_worker() {
        for page in 0..200 {
            let (a, b) = (Content::of(0, page, 5), Content::of(7, page, 5));
            match a {
                Content::Unique { .. } => assert_ne!(page_of(a), page_of(b)),
                _ => assert_eq!(a, b),
            }
        }
    }

    fn page_of(c: Content) -> Vec<u64> {
        page(c)
    }

    #[test]
    fn distinct_contents_have_distinct_pages() {
        let mut seen = std::collections::HashSet::new();
        let mut contents = vec![Content::Zero];
        contents.extend((1..=SHARED_CONTENTS).map(Content::Shared));
        for worker in 0..3 {
            for p in 0..3 {
                for generation in 0..3 {
                    contents.push(Content::Unique {
                        worker,
                        page: p,
                        generation,
                    });
                }
            }
        }
        for c in contents {
            assert!(seen.insert(page(c)), "{c:?} repeats a page");
        }
    }

    #[test]
    fn zero_content_is_a_zero_page() {
        assert!(page(Content::Zero).iter().all(|&w| w == 0));
        assert!(page(Content::Shared(1)).iter().any(|&w| w != 0));
    }

    #[test]
    fn check_reports_the_first_difference_and_what_the_page_holds() {
        let want = Content::Unique {
            worker: 1,
            page: 2,
            generation: 3,
        };
        let mut p = page(want);
        assert_eq!(want.check(&p), None);
        p[7] ^= 1;
        p[9] ^= 1;
        let m = want.check(&p).unwrap();
        assert_eq!((m.word, m.words, m.holds), (7, 2, None));
        assert_eq!(m.got, want.word(7) ^ 1);
        let other = page(Content::Shared(4));
        assert_eq!(want.check(&other).unwrap().holds, Some(Content::Shared(4)));
    }

    #[test]
    fn rng_is_deterministic_and_weighted_picks_follow_weights() {
        let (mut a, mut b) = (Rng::new(9), Rng::new(9));
        assert_eq!(a.next_u64(), b.next_u64());
        let mut hits = [0u32; 3];
        for _ in 0..10_000 {
            hits[a.weighted(&[1, 0, 3])] += 1;
        }
        assert_eq!(hits[1], 0);
        assert!((2200..2800).contains(&hits[0]), "{hits:?}");
        for _ in 0..1000 {
            assert!((5..=9).contains(&a.between(5, 9)));
        }
    }
}
