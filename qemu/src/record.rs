//! `key=value` records: the shell's status output format.
//!
//! Every status line the kernel prints is one record of whitespace-separated `key=value` tokens,
//! e.g. `node=0 zone=Normal present_kib=524288 managed_kib=498000 free_kib=480000`. A [`Record`]
//! keeps the tokens in order; numbers parse as decimal or `0x` hex. A line that is not a record is
//! an error, so a test notices when a command's output changes shape.

use std::fmt;

use crate::error::{Error, Result};

/// One `key=value ...` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    fields: Vec<(String, String)>,
}

impl Record {
    /// Parses one line; every token must be `key=value` with a non-empty key.
    pub fn parse(line: &str) -> Result<Record> {
        let mut fields = Vec::new();
        for token in line.split_whitespace() {
            match token.split_once('=') {
                Some((k, v)) if !k.is_empty() => fields.push((k.to_string(), v.to_string())),
                _ => {
                    return Err(Error::Protocol(format!(
                        "token {token:?} in {line:?} is not key=value"
                    )))
                }
            }
        }
        if fields.is_empty() {
            return Err(Error::Protocol(format!("empty record {line:?}")));
        }
        Ok(Record { fields })
    }

    /// Parses the record that follows `prefix` on `line`: `errors=0` in `hog: stopped errors=0`
    /// after `hog: stopped`. Fails when the line does not start with `prefix` or the rest is not a
    /// record.
    pub fn parse_after(line: &str, prefix: &str) -> Result<Record> {
        let rest = line
            .strip_prefix(prefix)
            .ok_or_else(|| Error::Protocol(format!("`{line}` does not start with `{prefix}`")))?;
        Record::parse(rest)
    }

    /// The first value for `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value for `key`, which must be there.
    pub fn str(&self, key: &str) -> Result<&str> {
        self.get(key)
            .ok_or_else(|| Error::Protocol(format!("record `{self}` has no `{key}`")))
    }

    /// The value for `key` as a number (decimal or `0x` hex).
    pub fn u64(&self, key: &str) -> Result<u64> {
        let v = self.str(key)?;
        let parsed = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => v.parse(),
        };
        parsed.map_err(|_| Error::Protocol(format!("record `{self}`: `{key}={v}` is not a number")))
    }

    /// Whether `key` has exactly `value`.
    pub fn is(&self, key: &str, value: &str) -> bool {
        self.get(key) == Some(value)
    }

    /// All fields in order.
    pub fn fields(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fields.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.fields.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

/// Parses every non-empty line as a record.
pub fn parse_records<S: AsRef<str>>(lines: &[S]) -> Result<Vec<Record>> {
    lines
        .iter()
        .map(AsRef::as_ref)
        .filter(|l| !l.trim().is_empty())
        .map(Record::parse)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mem_and_cpus_lines() {
        let r = Record::parse("node=0 zone=Normal present_kib=524288 managed_kib=1 free_kib=0")
            .unwrap();
        assert_eq!(r.get("zone"), Some("Normal"));
        assert_eq!(r.u64("present_kib").unwrap(), 524288);
        assert!(r.is("node", "0"));
        let c = Record::parse("cpu=1 mpidr=0x80000001 online=1 ticks=42").unwrap();
        assert_eq!(c.u64("mpidr").unwrap(), 0x8000_0001);
        assert_eq!(c.to_string(), "cpu=1 mpidr=0x80000001 online=1 ticks=42");
    }

    #[test]
    fn rejects_non_records() {
        assert!(Record::parse("unknown command").is_err());
        assert!(Record::parse("=x").is_err());
        assert!(Record::parse("   ").is_err());
        let r = Record::parse("a=b").unwrap();
        assert!(r.u64("a").is_err());
        assert!(r.str("zz").is_err());
        assert_eq!(parse_records(&["a=1", "", "b=2"]).unwrap().len(), 2);
        let r = Record::parse_after("pin: pinned pages=2 highest=0x10", "pin: pinned").unwrap();
        assert_eq!(r.to_string(), "pages=2 highest=0x10");
        assert!(Record::parse_after("pin: no hog running", "pin: pinned").is_err());
        assert!(Record::parse_after("hog: started", "hog: started").is_err());
    }
}
