//! Cutting work into batches.

/// Splits `items` (each with its size in bytes) into consecutive groups whose sizes add up to
/// at most `limit`, keeping their order; an item larger than `limit` forms a group of its own.
/// Used to bound the payload bytes of one pipeline.
pub fn by_bytes<T>(items: Vec<(T, u64)>, limit: u64) -> Vec<Vec<(T, u64)>> {
    let mut groups = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for (item, size) in items {
        if !current.is_empty() && bytes + size > limit {
            groups.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += size;
        current.push((item, size));
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_respect_the_byte_limit() {
        let items = vec![
            (b"a".to_vec(), 3),
            (b"b".to_vec(), 3),
            (b"c".to_vec(), 10),
            (b"d".to_vec(), 1),
        ];
        let groups = by_bytes(items, 6);
        let keys: Vec<Vec<&[u8]>> = groups
            .iter()
            .map(|g| g.iter().map(|(k, _)| k.as_slice()).collect())
            .collect();
        assert_eq!(keys, vec![vec![&b"a"[..], b"b"], vec![b"c"], vec![b"d"]]);
        assert!(by_bytes(Vec::<(usize, u64)>::new(), 6).is_empty());
    }
}
