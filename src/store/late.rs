//! Checks a put learns only after its stream has ended (see [`Store::put_late`](super::Store)):
//! npm's publish document may give a tarball's `length`, or its `versions` with the digests, after
//! the attachment itself.

use super::put::compare;
use crate::integrity::{Algorithm, Digests, Integrity};
use crate::{Error, Result};

/// What a put learns it must check only after its stream has ended (see
/// [`Store::put_late`](super::Store::put_late)), and which algorithms those checks may need.
pub(crate) struct LateExpectations {
    /// The checks, awaited after the last byte and before the commit.
    pub(crate) expectations: futures::future::BoxFuture<'static, Result<Expectations>>,
    /// Algorithms to compute beyond the store's own and those of `PutOptions::expected`: a check
    /// can only be made of a digest computed while the bytes went by, and a caller that does not
    /// know yet which algorithms its checks will name (a publish whose `versions` come after its
    /// attachment) asks for every one it might.
    pub(crate) compute: Vec<Algorithm>,
    /// The field [`PutOptions::expected_size`](super::PutOptions::expected_size) came from, when
    /// a document gave it (a migration's attachment `length`): a mismatch of that size names it,
    /// as the checks name theirs, and not the put's label, even one found as the bytes arrive
    /// (more of them than the size), before the checks are known.
    pub(crate) size_field: Option<String>,
}

/// Every hash of every check, as one integrity: given as `PutOptions::expected`, it makes the put
/// compute each algorithm the checks name (md5, sha256 and sha384 are not among the store's own)
/// and lets a stored sha512 spare the write. Not what the bytes are judged by: that is each check
/// on its own.
pub(crate) fn all_hashes(checks: &[(String, Integrity)]) -> Option<Integrity> {
    let mut hashes = checks.iter().flat_map(|(_, i)| i.hashes().iter());
    let mut all = Integrity::from(hashes.next()?.clone());
    for h in hashes {
        all.push(h.clone());
    }
    Some(all)
}

/// Checks decided after the bytes went by, each named after where its value came from so that a
/// mismatch says which field of a document was wrong.
#[derive(Debug, Clone, Default)]
pub(crate) struct Expectations {
    /// `(field, integrity)`: every known algorithm of each must match.
    pub(crate) checks: Vec<(String, Integrity)>,
    /// `(field, size)`.
    pub(crate) size: Option<(String, u64)>,
    /// The package the tarball must say it is (like
    /// [`PutOptions::expect_package`](super::PutOptions::expect_package)).
    pub(crate) package: Option<(String, String)>,
}

impl Expectations {
    pub(super) fn verify(
        &self,
        hashes: &crate::integrity::DigestSet,
        digests: &Digests,
    ) -> Result<()> {
        if let Some((field, size)) = &self.size {
            if *size != digests.size {
                return Err(Error::IntegrityMismatch {
                    what: field.clone(),
                    expected: format!("{size} bytes"),
                    actual: format!("{} bytes", digests.size),
                });
            }
        }
        let actual = hashes
            .integrity()
            .ok_or_else(|| Error::InvalidInput("nothing was hashed".into()))?;
        let computed = actual.algorithms();
        for (field, expected) in &self.checks {
            // Every known algorithm must hold (unknown ones are ignored, as npm's ssri ignores
            // them: `Integrity::parse` refuses a string with none it knows). One that was not
            // computed cannot be checked after the fact, and is refused rather than skipped: a
            // wrong sha256 beside a right sha512 must not pass because nobody hashed sha256.
            let algorithms = expected.algorithms();
            if let Some(missing) = algorithms.iter().find(|a| !computed.contains(a)) {
                return Err(Error::invalid_integrity(
                    &expected.to_string(),
                    format!("{field}: its {missing} was not computed, so it cannot be checked"),
                ));
            }
            for one in algorithms.into_iter().filter_map(|a| expected.only(a)) {
                compare(&one, &actual, field)?;
            }
        }
        Ok(())
    }
}
