//! Checks a put learns only after its stream has ended (see [`Store::put_late`](super::Store)):
//! npm's publish document may give a tarball's `length`, or its `versions` with the digests, after
//! the attachment itself.

use super::put::compare;
use crate::integrity::{Algorithm, Digests, Integrity};
use crate::{Error, Result};

/// What a put learns it must check only after its stream has ended (see [`Store::put_late`]).
pub(crate) type LateExpectations = futures::future::BoxFuture<'static, Result<Expectations>>;

/// Checks decided after the bytes went by, each named after where its value came from so that a
/// mismatch says which field of a document was wrong.
#[derive(Debug, Clone, Default)]
pub(crate) struct Expectations {
    /// `(field, integrity)`: every known algorithm of each must match.
    pub(crate) checks: Vec<(String, Integrity)>,
    /// `(field, size)`.
    pub(crate) size: Option<(String, u64)>,
    /// The package the tarball must say it is (like [`PutOptions::expect_package`]).
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
            // Every algorithm that was hashed must hold; one that was not (a sha384 beside the
            // sha512 npm writes) cannot be checked after the fact, and alone it is refused.
            let known: Vec<Algorithm> = expected
                .algorithms()
                .into_iter()
                .filter(|a| computed.contains(a))
                .collect();
            if known.is_empty() {
                return Err(Error::invalid_integrity(
                    &expected.to_string(),
                    format!("{field}: no algorithm tarvault can check"),
                ));
            }
            for one in known.into_iter().filter_map(|a| expected.only(a)) {
                compare(&one, &actual, field)?;
            }
        }
        Ok(())
    }
}
