//! The shell's `locks`: one `lock=NAME holds=N max_us=M p99_us=P` record per lock class of the
//! kernel's IRQ-masking locks, counted since boot or the last `locks reset`.

use crate::error::Result;
use crate::record::Record;

/// One lock class's line of `locks`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockHolds {
    /// The class (`lock=`).
    pub class: String,
    /// Holds counted.
    pub holds: u64,
    /// The longest hold, in µs.
    pub max_us: u64,
    /// The 99th percentile of the holds (the end of its log2 bucket), in µs.
    pub p99_us: u64,
}

/// The records of `locks`, one per class.
pub fn parse_locks(records: &[Record]) -> Result<Vec<LockHolds>> {
    records
        .iter()
        .map(|r| {
            Ok(LockHolds {
                class: r.str("lock")?.to_string(),
                holds: r.u64("holds")?,
                max_us: r.u64("max_us")?,
                p99_us: r.u64("p99_us")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_lines_parse() {
        let recs = crate::record::parse_records(&[
            "lock=mm holds=120 max_us=950 p99_us=64",
            "lock=rmap holds=3 max_us=12 p99_us=12",
        ])
        .unwrap();
        let h = parse_locks(&recs).unwrap();
        assert_eq!(
            h[0],
            LockHolds {
                class: "mm".into(),
                holds: 120,
                max_us: 950,
                p99_us: 64
            }
        );
        assert_eq!(h[1].class, "rmap");
        let bad = crate::record::parse_records(&["lock=mm holds=1"]).unwrap();
        assert!(parse_locks(&bad).is_err());
    }
}
