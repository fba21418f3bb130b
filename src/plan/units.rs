//! Durations ("10m", "1h30m") and sizes ("8MiB") as written in plans.

use std::time::Duration;

/// Parses a human duration such as `10s`, `10m`, `1h30m`, `500ms`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("empty duration".into());
    }
    humantime::parse_duration(text).map_err(|e| format!("{e}"))
}

/// Formats a duration the way a plan writes it (`10m`, `1h 30m`).
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Parses a byte size such as `8MiB`, `512KB`, `1048576`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let size: bytesize::ByteSize = text.trim().parse().map_err(|e: String| e)?;
    Ok(size.as_u64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("ten minutes").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("8MiB").unwrap(), 8 * 1024 * 1024);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert!(parse_size("eight megs").is_err());
    }
}
