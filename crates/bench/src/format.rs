//! Number formatting shared by the reasons, the Markdown table and the HTML page.

/// Up to three significant digits, no exponent: 0.627 -> "0.63", 1.95 -> "1.95", 12.34 -> "12.3".
fn short(x: f64) -> String {
    let a = x.abs();
    if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// "0.63 s".
pub(crate) fn seconds(s: f64) -> String {
    format!("{} s", short(s))
}

/// A configured duration: "10 s", "0.50 s".
pub(crate) fn duration(d: std::time::Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{} s", d.as_secs())
    } else {
        seconds(d.as_secs_f64())
    }
}

/// "45 µs" below a millisecond, else "1.25 ms".
pub(crate) fn millis(ms: f64) -> String {
    if ms < 1.0 {
        format!("{:.0} µs", ms * 1000.0)
    } else {
        format!("{} ms", short(ms))
    }
}

/// Binary units: "788 KiB", "3.10 MiB".
pub(crate) fn bytes(b: f64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if b < 1024.0 {
        return format!("{b:.0} B");
    }
    let mut v = b / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{} {}", short(v), UNITS[unit])
}

/// "25,312" (whole numbers with thousands separators from 100 on), "42.5" below.
pub(crate) fn rate(r: f64) -> String {
    if r.abs() < 100.0 {
        return format!("{r:.1}");
    }
    let digits = format!("{:.0}", r.abs());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if r < 0.0 {
        out.insert(0, '-');
    }
    out
}

/// A ratio ≥ 1: "1.04×", "3.1×", "14×".
pub(crate) fn ratio(r: f64) -> String {
    if r < 2.0 {
        format!("{r:.2}×")
    } else if r < 10.0 {
        format!("{r:.1}×")
    } else {
        format!("{r:.0}×")
    }
}

/// A count with separators: "1,234,567".
pub(crate) fn count(n: u64) -> String {
    if n < 100 {
        n.to_string()
    } else {
        rate(n as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(seconds(0.627), "0.63 s");
        assert_eq!(seconds(12.34), "12.3 s");
        assert_eq!(duration(std::time::Duration::from_secs(10)), "10 s");
        assert_eq!(duration(std::time::Duration::from_millis(500)), "0.50 s");
        assert_eq!(millis(0.045), "45 µs");
        assert_eq!(millis(1.254), "1.25 ms");
        assert_eq!(bytes(512.0), "512 B");
        assert_eq!(bytes(807_000.0), "788 KiB");
        assert_eq!(bytes(3.1 * 1024.0 * 1024.0), "3.10 MiB");
        assert_eq!(bytes(646.0 * 1024.0 * 1024.0), "646 MiB");
        assert_eq!(rate(25312.4), "25,312");
        assert_eq!(rate(1_234_567.0), "1,234,567");
        assert_eq!(rate(42.46), "42.5");
        assert_eq!(ratio(1.0), "1.00×");
        assert_eq!(ratio(3.12), "3.1×");
        assert_eq!(ratio(14.2), "14×");
        assert_eq!(count(7), "7");
        assert_eq!(count(1_000), "1,000");
    }
}
