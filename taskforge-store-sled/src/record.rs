//! The stored form of a run with its step attempts (format 4).
//!
//! A run's attempts are kept in its own record, so a commit that finishes
//! one step and starts the next writes one key, not two or three. The
//! record is the run's JSON alone while it has no attempts (as in earlier
//! formats), and once it has some, a container:
//!
//! ```text
//! 0x01, run JSON length (u32, big-endian), run JSON,
//! then per attempt, by (step index, attempt):
//!     step index (u32), attempt (u32), JSON length (u32), attempt JSON
//! ```
//!
//! JSON never starts with byte 0x01, so the two forms cannot be confused.
//! The writer thread composes a record from bytes serialized by the
//! callers (it never serializes the run or an attempt itself), and readers
//! of the run parse only its part. Attempts written by formats 1 to 3 stay
//! under their own keys (`run ++ index ++ attempt`, in the `steps` tree
//! until format 5, tagged in `idx` since), and are read from there too; an
//! attempt in the record supersedes one there.

use sled::IVec;

/// The first byte of a container record.
const CONTAINER: u8 = 0x01;

/// An attempt in a record: step index, attempt, its JSON.
pub(crate) type Attempt<'a> = (u32, u32, &'a [u8]);

fn u32_at(bytes: &[u8], at: usize) -> Result<u32, &'static str> {
    bytes
        .get(at..at + 4)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map(u32::from_be_bytes)
        .ok_or("a run record ends inside a length")
}

/// The run's JSON in a record.
pub(crate) fn run_json(record: &[u8]) -> Result<&[u8], &'static str> {
    if record.first() != Some(&CONTAINER) {
        return Ok(record);
    }
    let len = u32_at(record, 1)? as usize;
    record
        .get(5..5 + len)
        .ok_or("a run record ends inside the run")
}

/// The attempts a record holds, in (index, attempt) order.
pub(crate) fn attempts(record: &[u8]) -> Result<Vec<Attempt<'_>>, &'static str> {
    if record.first() != Some(&CONTAINER) {
        return Ok(Vec::new());
    }
    let mut at = 5 + u32_at(record, 1)? as usize;
    let mut found = Vec::new();
    while at < record.len() {
        let index = u32_at(record, at)?;
        let attempt = u32_at(record, at + 4)?;
        let len = u32_at(record, at + 8)? as usize;
        let json = record
            .get(at + 12..at + 12 + len)
            .ok_or("a run record ends inside an attempt")?;
        found.push((index, attempt, json));
        at += 12 + len;
    }
    Ok(found)
}

/// A record of the run serialized as `run` with `attempts`, which are in
/// (index, attempt) order: `run` itself when there are none.
pub(crate) fn compose<'a>(
    run: &IVec,
    attempts: impl ExactSizeIterator<Item = (u32, u32, &'a IVec)> + Clone,
) -> IVec {
    if attempts.len() == 0 {
        return run.clone();
    }
    let len = 5
        + run.len()
        + attempts
            .clone()
            .map(|(_, _, a)| 12 + a.len())
            .sum::<usize>();
    let mut record = Vec::with_capacity(len);
    record.push(CONTAINER);
    record.extend_from_slice(&(run.len() as u32).to_be_bytes());
    record.extend_from_slice(run);
    for (index, attempt, json) in attempts {
        record.extend_from_slice(&index.to_be_bytes());
        record.extend_from_slice(&attempt.to_be_bytes());
        record.extend_from_slice(&(json.len() as u32).to_be_bytes());
        record.extend_from_slice(json);
    }
    IVec::from(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let run = IVec::from(&b"{\"id\":1}"[..]);
        assert_eq!(compose(&run, std::iter::empty()), run);
        assert_eq!(run_json(&run), Ok(&b"{\"id\":1}"[..]));
        assert_eq!(attempts(&run), Ok(Vec::new()));
        let (a, b) = (IVec::from(&b"{\"a\":0}"[..]), IVec::from(&b"{}"[..]));
        let steps = [(0, 1, &a), (1, 2, &b)];
        let record = compose(&run, steps.iter().copied());
        assert_eq!(run_json(&record), Ok(&b"{\"id\":1}"[..]));
        assert_eq!(
            attempts(&record),
            Ok(vec![(0, 1, &b"{\"a\":0}"[..]), (1, 2, &b"{}"[..])])
        );
        // Cut anywhere but between attempts, it is refused, never misread.
        let boundaries = [5 + run.len(), 5 + run.len() + 12 + a.len()];
        for cut in 1..record.len() {
            let part = &record[..cut];
            let refused = run_json(part).is_err() || attempts(part).is_err();
            assert_eq!(refused, !boundaries.contains(&cut), "{cut}");
        }
    }
}
