//! Deterministic synthetic workloads shared by the benchmarks: an IOC list with mixed kinds, a
//! third of it defanged and a fifth of it duplicates (the "standard" list).

/// A tiny deterministic generator (SplitMix64): the same list on every machine, no dependency.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

fn hex_of(rng: &mut Rng, chars: usize) -> String {
    let mut s = String::with_capacity(chars);
    while s.len() < chars {
        s.push_str(&format!("{:016x}", rng.next_u64()));
    }
    s.truncate(chars);
    s
}

const TLDS: [&str; 6] = ["com", "net", "org", "io", "ru", "info"];
const FIRST_OCTETS: [u8; 8] = [23, 45, 52, 77, 91, 104, 185, 193];

/// One fresh indicator, plain: `(kind index, text)`.
fn fresh(rng: &mut Rng, i: usize) -> String {
    match i % 6 {
        0 => hex_of(rng, 32),
        1 => hex_of(rng, 40),
        2 => hex_of(rng, 64),
        3 => format!(
            "http://{}.{}/path/{}",
            hex_of(rng, 10),
            TLDS[rng.below(6) as usize],
            hex_of(rng, 8)
        ),
        4 => format!("{}.{}", hex_of(rng, 12), TLDS[rng.below(6) as usize]),
        _ => format!(
            "{}.{}.{}.{}",
            FIRST_OCTETS[rng.below(8) as usize],
            rng.below(256),
            rng.below(256),
            1 + rng.below(254)
        ),
    }
}

/// Defangs an indicator the way threat reports do: `hxxp`, `[.]`.
fn defang(s: &str) -> String {
    s.replacen("http://", "hxxp://", 1).replace('.', "[.]")
}

/// `n` lines: every fifth line repeats an earlier indicator (in either form), a third of all
/// lines are defanged.
pub fn ioc_lines(n: usize) -> Vec<String> {
    let mut rng = Rng(0x7653_0007);
    let mut plain: Vec<String> = Vec::with_capacity(n);
    let mut lines = Vec::with_capacity(n);
    for i in 0..n {
        let value = if i % 5 == 4 && !plain.is_empty() {
            plain[rng.below(plain.len() as u64) as usize].clone()
        } else {
            let v = fresh(&mut rng, i);
            plain.push(v.clone());
            v
        };
        lines.push(if i % 3 == 0 { defang(&value) } else { value });
    }
    lines
}

/// How many distinct indicators `ioc_lines(n)` holds (random values never collide in practice).
#[allow(dead_code)]
pub fn unique_in(n: usize) -> usize {
    n - n / 5
}
