//! Human sizes and rates: "4096", "64K", "64KiB", "1.5MiB", "2G", "200MiB/s", and ranges "OFF:LEN".

use anyhow::{bail, Result};

pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    if num.is_empty() {
        bail!("{s:?} is not a size: write a number with an optional unit, e.g. 4096, 64KiB, 1MiB, 2G");
    }
    let n: f64 = num.parse().map_err(|_| anyhow::anyhow!("{s:?} is not a number"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        u => bail!("unknown unit {u:?} in {s:?}: use B, KiB, MiB, GiB or TiB"),
    };
    Ok((n * mult as f64) as u64)
}

pub fn parse_rate(s: &str) -> Result<u64> {
    let t = s.trim();
    let t = t.strip_suffix("/s").or_else(|| t.strip_suffix("ps")).unwrap_or(t);
    let v = parse_size(t)?;
    if v == 0 {
        bail!("rate {s:?} must be above zero");
    }
    Ok(v)
}

pub fn parse_range(s: &str) -> Result<(u64, Option<u64>)> {
    let Some((off, len)) = s.split_once(':') else {
        bail!("range {s:?} must be OFF:LEN (LEN may be empty for \"to the end\"), e.g. 0:4KiB or 1MiB:");
    };
    let off = parse_size(off)?;
    let len = if len.trim().is_empty() { None } else { Some(parse_size(len)?) };
    Ok((off, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_rates_ranges() {
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("64KiB").unwrap(), 65536);
        assert_eq!(parse_size("1.5M").unwrap(), 1572864);
        assert_eq!(parse_rate("200MiB/s").unwrap(), 200 << 20);
        assert_eq!(parse_range("1MiB:").unwrap(), (1 << 20, None));
        assert_eq!(parse_range("0:10").unwrap(), (0, Some(10)));
        assert!(parse_size("lots").unwrap_err().to_string().contains("not a size"));
        assert!(parse_size("3 parsecs").is_err());
        assert!(parse_rate("0/s").is_err());
        assert!(parse_range("12").is_err());
    }
}
