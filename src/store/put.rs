//! Putting bytes in: hash while streaming, verify, then let the backend publish.

use std::io;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};

use super::found::{expected_key, Found};
use super::inspect::InspectLane;
use super::late::{Expectations, LateExpectations};
use super::Store;
use crate::backend::{BlobWriter, Committed, Presence, PutHint};
use crate::integrity::{Comparison, Digests, Integrity, StreamHasher};
use crate::{Error, Result};

/// Options for [`Store::put`].
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// The integrity the bytes must have (any algorithm npm uses, or several). On a mismatch nothing
    /// is stored and the error names both digests.
    pub expected: Option<Integrity>,
    /// The size the bytes must have. With an expected sha512 already stored on a remote store
    /// (S3, Manta), it is also what the stored object's size is checked against before the put
    /// reads its input, so that it writes nothing; without it, the put holds its bytes until it
    /// knows their size, and replaces an object of another size (cut short, or grown).
    pub expected_size: Option<u64>,
    /// A name for the input in error messages (a file name, a package@version).
    pub label: Option<String>,
    /// Inspect the bytes as an npm package tarball while they stream in, under this policy, and
    /// refuse to commit one that breaks it ([`ErrorKind::Rejected`](crate::ErrorKind::Rejected)).
    pub inspect: Option<crate::tarball::Policy>,
    /// Check every known algorithm in `expected`, not only the strongest one shared with the bytes.
    ///
    /// By default a put compares like npm's `ssri`: on the strongest algorithm only, so a right
    /// sha512 beside a wrong sha1 passes. With `require_all` each algorithm must hold, but still
    /// any one hash of it: digests from independent sources (CouchDB's md5, npm's `shasum`,
    /// `integrity`) merged into one `expected` would pass when only one of two sha1s matched, so
    /// such sources are checked one by one instead (the migration does). Every algorithm in
    /// `expected` is computed in the same single pass either way.
    pub require_all: bool,
    /// The package (`name`, `version`) the tarball must say it is. Needs [`PutOptions::inspect`];
    /// a tarball whose `package.json` names anything else is refused before it is committed
    /// ([`Error::PackageMismatch`]). Versions compare as npm's `semver.clean` does (a leading `v`
    /// or `=` and `+build` metadata ignored), since old registries kept such keys and npm
    /// publishes `1.0.0+build.5` as `1.0.0`.
    pub expect_package: Option<(String, String)>,
}

impl PutOptions {
    /// Options expecting `integrity`.
    pub fn expect(integrity: Integrity) -> Self {
        PutOptions {
            expected: Some(integrity),
            ..Self::default()
        }
    }

    /// Inspects the input as an npm tarball under the default (strict) policy.
    pub fn tarball(mut self) -> Self {
        self.inspect = Some(crate::tarball::Policy::default());
        self
    }

    /// Sets the label used in errors.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// Requires every known algorithm in `expected` to match (see [`PutOptions::require_all`]).
    pub fn require_all(mut self) -> Self {
        self.require_all = true;
        self
    }

    /// Requires the bytes to be `size` long (see [`PutOptions::expected_size`]).
    pub fn expect_size(mut self, size: u64) -> Self {
        self.expected_size = Some(size);
        self
    }

    /// Inspects the input as an npm tarball under `policy` (see [`PutOptions::inspect`]).
    pub fn inspect_with(mut self, policy: crate::tarball::Policy) -> Self {
        self.inspect = Some(policy);
        self
    }

    /// Requires the tarball to say it is `name`@`version`, and inspects it under the default
    /// policy unless one is set (see [`PutOptions::expect_package`]).
    ///
    /// ```
    /// use tarvault::{Integrity, PutOptions};
    ///
    /// let integrity: Integrity = "sha1-qvTGHdzF6KLavt4PO0gs2a6pQ00=".parse()?;
    /// let options = PutOptions::expect(integrity)
    ///     .expect_size(5)
    ///     .package("left-pad", "1.3.0")
    ///     .label("left-pad@1.3.0");
    /// assert_eq!(options.expected_size, Some(5));
    /// assert!(options.inspect.is_some());
    /// # Ok::<(), tarvault::Error>(())
    /// ```
    pub fn package(mut self, name: impl Into<String>, version: impl Into<String>) -> Self {
        self.expect_package = Some((name.into(), version.into()));
        self.inspect.get_or_insert_with(Default::default);
        self
    }
}

/// What a put stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOutcome {
    /// The blob's digests.
    pub digests: Digests,
    /// `false` when the same bytes were already stored (the put was a no-op).
    pub stored: bool,
    /// What inspection found, when [`PutOptions::inspect`] was set.
    pub report: Option<crate::tarball::Report>,
}

/// Small input chunks are gathered to this size before hashing and writing: per-chunk costs
/// (channel hops, blocking-pool hops) stay negligible whatever chunking the caller's stream has.
const COALESCE: usize = 256 * 1024;

/// In a batch, blobs up to this size are hashed on their own task, one core each, instead of on
/// two hashing threads per blob: the batch already keeps every core busy with separate blobs, and
/// two thread spawns per tarball cost more than they save. Larger ones still get the threads.
const BATCH_HASH_INLINE: u64 = 4 * 1024 * 1024;

/// In a batch, the sha512 of blobs up to this size is computed together with other blobs'
/// (eight at a time where the CPU has AVX-512: `integrity/sha512_lanes/`). Small blobs come
/// fast enough to fill eight lanes; larger ones arrive too slowly to, and their bytes would be
/// held meanwhile (docs/ingest.md: the corpus batch saved no CPU with 1 MiB or 4 MiB).
const BATCH_SHA512_LANES: u64 = 256 * 1024;

/// How an ingest hashes its stream.
#[derive(Clone, Copy)]
pub(super) enum Hashing {
    /// One put on its own: inline while small, on two threads once large.
    Single,
    /// One blob of a batch, whose other blobs keep the cores busy: inline up to
    /// [`BATCH_HASH_INLINE`], and the sha512 of a blob up to [`BATCH_SHA512_LANES`] computed
    /// along with the others'.
    Batch,
}

/// An ingested stream and the upload still waiting for its commit (none when nothing was written).
type Ingested = (Ingest, Option<Box<dyn BlobWriter>>);

/// One stream, read to its end into a writer, hashed on the way.
pub(super) struct Ingest {
    pub(super) digests: Digests,
    pub(super) report: Option<crate::tarball::Report>,
}

impl Store {
    /// Stores the bytes of `stream`, verifying them against `options`, and returns their digests.
    /// Idempotent: putting the same bytes twice stores one blob and reports `stored: false`.
    /// The stream need not be `Unpin`: it is pinned in the put's own future.
    pub async fn put<S>(&self, stream: S, options: &PutOptions) -> Result<PutOutcome>
    where
        S: Stream<Item = io::Result<Bytes>> + Send,
    {
        let stream = std::pin::pin!(stream);
        self.put_late(stream, options, None).await
    }

    /// [`Store::put`] with expectations that are known only once the stream has ended (`late`,
    /// awaited after the last byte and before the commit): npm's publish document may give a
    /// tarball's `length`, or even its `versions` with the digests, after the attachment itself.
    /// An error from `late` aborts the put like a mismatch, so nothing is stored.
    pub(crate) async fn put_late<S>(
        &self,
        stream: S,
        options: &PutOptions,
        late: Option<LateExpectations>,
    ) -> Result<PutOutcome>
    where
        S: Stream<Item = io::Result<Bytes>> + Send + Unpin,
    {
        let found = self.hint(options).await?;
        let writer = match &found {
            // The caller told us the address and it is already here: hash only, write nothing.
            Found::Stored(_) => None,
            Found::Nothing | Found::Unchecked(_) | Found::Replace => {
                // Knowing the key up front lets a remote backend stream a large blob straight
                // to it (published only at commit, after verification) instead of spooling;
                // unless the blob is most likely stored already, and nothing need be sent, or an
                // object of another size is at the key, which only the commit replaces.
                let hint = PutHint {
                    expected_key: expected_key(options),
                    size: options.expected_size,
                    hold: matches!(found, Found::Unchecked(_) | Found::Replace),
                    ..PutHint::default()
                };
                Some(self.backend.begin_put(&hint).await?)
            }
        };
        let (ingest, writer) = self.ingest(stream, options, writer, late).await?;
        let stored = match (writer, found) {
            (Some(w), Found::Unchecked(key)) => {
                self.settle_unchecked(key, w, &ingest.digests).await?
            }
            (Some(w), _) => w.commit(&ingest.digests).await? == Committed::Stored,
            (None, found) => {
                // Verified bytes that were stored already: a put of them all the same, if the
                // blob is still there (nothing was written: a delete meanwhile leaves nothing).
                if let Found::Stored(key) = found {
                    match self.backend.freshen(&key).await {
                        // Its aliases too, as a put that stored it leaves them.
                        Ok(Presence::Held(st)) if st.size == ingest.digests.size => {
                            self.backend.index_stored(&ingest.digests).await?
                        }
                        // Gone, or (a replicated store) gone from a replica, a delete under way.
                        Ok(_) => {
                            return Err(Error::DeletedDuringPut {
                                address: key.to_string(),
                            })
                        }
                        Err(e) => {
                            tracing::warn!(blob = %key, error = %e.report(), "could not mark a blob put again as recent")
                        }
                    }
                }
                false
            }
        };
        Ok(PutOutcome {
            digests: ingest.digests,
            stored,
            report: ingest.report,
        })
    }

    /// Stores a buffer.
    pub async fn put_bytes(
        &self,
        bytes: impl Into<Bytes>,
        options: &PutOptions,
    ) -> Result<PutOutcome> {
        let bytes: Bytes = bytes.into();
        self.put(futures::stream::iter([Ok(bytes)]), options).await
    }

    /// Stores a file's contents, read as a stream.
    pub async fn put_file(
        &self,
        path: impl AsRef<std::path::Path>,
        options: &PutOptions,
    ) -> Result<PutOutcome> {
        let path = path.as_ref();
        // Opened in place, and a small file read whole, as `file_input` does (see input.rs).
        let file = std::fs::File::open(path).map_err(|e| Error::io("open", path, e))?;
        let mut options = options.clone();
        if options.label.is_none() {
            options.label = Some(path.display().to_string());
        }
        let stream = super::input::opened_file_input(file, path.to_path_buf());
        self.put(stream, &options).await
    }

    /// Streams everything into `writer` (if any) while hashing, then verifies. On any failure the
    /// writer is aborted, so nothing is left behind.
    pub(super) async fn ingest<S>(
        &self,
        stream: S,
        options: &PutOptions,
        writer: Option<Box<dyn BlobWriter>>,
        late: Option<LateExpectations>,
    ) -> Result<Ingested>
    where
        S: Stream<Item = io::Result<Bytes>> + Send + Unpin,
    {
        self.ingest_with(stream, options, writer, late, Hashing::Single)
            .await
    }

    /// [`ingest`](Self::ingest), hashing as `hashing` says.
    pub(super) async fn ingest_with<S>(
        &self,
        mut stream: S,
        options: &PutOptions,
        mut writer: Option<Box<dyn BlobWriter>>,
        late: Option<LateExpectations>,
        hashing: Hashing,
    ) -> Result<Ingested>
    where
        S: Stream<Item = io::Result<Bytes>> + Send + Unpin,
    {
        let mut algorithms = Digests::ALGORITHMS.to_vec();
        if let Some(expected) = &options.expected {
            algorithms.extend(expected.algorithms());
        }
        let (late, size_field) = match late {
            Some(l) => {
                algorithms.extend(l.compute);
                (Some(l.expectations), l.size_field)
            }
            None => (None, None),
        };
        let mut hasher = StreamHasher::new(&algorithms);
        if let Hashing::Batch = hashing {
            hasher = hasher
                .with_threshold(BATCH_HASH_INLINE)
                .sha512_in_lanes(BATCH_SHA512_LANES);
        }
        if options.inspect.is_some() {
            // Decompression is the slowest stage; it takes a core of its own (see inspect.rs).
            hasher = hasher.one_lane();
        }
        let what = options
            .label
            .clone()
            .unwrap_or_else(|| "input stream".to_string());
        let size_what = size_field.unwrap_or_else(|| what.clone());
        let mut inspect = match &options.inspect {
            Some(policy) => Some(InspectLane::spawn(policy.clone())?),
            None => None,
        };
        let mut buf = BytesMut::new();
        let mut read = 0u64;
        // `Ok(true)`: the inspector rejected the bytes and reading stopped early.
        let result: Result<bool> = async {
            loop {
                let next = stream.next().await;
                let ended = next.is_none();
                let chunk = match next {
                    Some(Ok(chunk)) => {
                        read += chunk.len() as u64;
                        // Past the expected size it is a mismatch already: not read on (an
                        // input need never end), written or hashed.
                        if let Some(size) = options.expected_size.filter(|&n| read > n) {
                            return Err(Error::IntegrityMismatch {
                                what: size_what.clone(),
                                expected: format!("{size} bytes"),
                                actual: format!("more than {size} bytes"),
                            });
                        }
                        if buf.is_empty() && chunk.len() >= COALESCE {
                            Some(chunk)
                        } else {
                            buf.extend_from_slice(&chunk);
                            (buf.len() >= COALESCE).then(|| buf.split().freeze())
                        }
                    }
                    Some(Err(e)) => return Err(Error::from_io_reading(e, &what)),
                    None => (!buf.is_empty()).then(|| buf.split().freeze()),
                };
                if let Some(chunk) = chunk {
                    if let Some(lane) = inspect.as_mut() {
                        if !lane.feed(chunk.clone()).await {
                            // Rejected: stop reading now; the verdict says why.
                            return Ok(true);
                        }
                    }
                    hasher.update(chunk.clone()).await?;
                    if let Some(w) = writer.as_mut() {
                        w.write(chunk).await?;
                    }
                }
                if ended {
                    return Ok(false);
                }
            }
        }
        .await;
        // After a rejection the rest of the input is not wanted: dropping the stream tells its
        // producer so at once. A publish only sends the late expectations once it has pushed the
        // whole attachment, so keeping the stream open (and awaiting `late`) would wait forever.
        let result = match result {
            Ok(true) => {
                drop(stream);
                return self.reject(inspect, writer, &what).await;
            }
            Ok(false) => Ok(()),
            Err(e) => Err(e),
        };
        // The stream has ended: whatever was to be learnt after it is known now (or never).
        let (result, late) = match (result, late) {
            (Ok(()), Some(late)) => match late.await {
                Ok(l) => (Ok(()), Some(l)),
                Err(e) => (Err(e), None),
            },
            (r, _) => (r, None),
        };
        let report = match (result, inspect) {
            (Err(e), _) => Err(e),
            (Ok(()), Some(lane)) => {
                // Decompression is still running on its own thread: write the data out meanwhile,
                // so that after the verdict only the publication is left.
                let flushed = match writer.as_mut() {
                    Some(w) => w.flush().await,
                    None => Ok(()),
                };
                match (lane.finish(&what).await, flushed) {
                    (Ok(report), Ok(())) => Ok(Some(report)),
                    (Err(e), _) | (Ok(_), Err(e)) => Err(e),
                }
            }
            (Ok(()), None) => Ok(None),
        };
        let report = report.and_then(|r| check_package(r, options, late.as_ref(), &what));
        let verified = match report {
            Ok(report) => self
                .verify_ingest(hasher, options, late.as_ref(), size_what)
                .await
                .map(|digests| Ingest { digests, report }),
            Err(e) => Err(e),
        };
        match verified {
            Ok(ingest) => Ok((ingest, writer)),
            Err(e) => {
                if let Some(w) = writer {
                    if let Err(abort_err) = w.abort().await {
                        tracing::warn!(error = %abort_err.report(), "abort after failed put also failed");
                    }
                }
                Err(e)
            }
        }
    }

    /// Ends a put whose inspection rejected the bytes: the verdict is known without the rest of
    /// the input or any late expectation, so the upload is aborted and the verdict returned.
    async fn reject(
        &self,
        inspect: Option<InspectLane>,
        writer: Option<Box<dyn BlobWriter>>,
        what: &str,
    ) -> Result<Ingested> {
        let verdict = match inspect {
            Some(lane) => lane.finish(what).await,
            None => Err(Error::InvalidInput("rejected without an inspector".into())),
        };
        if let Some(w) = writer {
            if let Err(abort_err) = w.abort().await {
                tracing::warn!(error = %abort_err.report(), "abort after rejected put also failed");
            }
        }
        // A lane that stopped taking chunks has rejected them; `Ok` would mean it died oddly.
        Err(match verdict {
            Err(e) => e,
            Ok(_) => Error::InvalidInput(format!("{what}: inspection stopped early")),
        })
    }

    /// Checks the hashed bytes against `options` and `late`, a wrong size named `size_what`.
    async fn verify_ingest(
        &self,
        hasher: StreamHasher,
        options: &PutOptions,
        late: Option<&Expectations>,
        size_what: String,
    ) -> Result<Digests> {
        let hashes = hasher.finish().await?;
        let digests = hashes.digests()?;
        let what = options
            .label
            .clone()
            .unwrap_or_else(|| "input stream".to_string());
        if let Some(size) = options.expected_size {
            if size != digests.size {
                return Err(Error::IntegrityMismatch {
                    what: size_what,
                    expected: format!("{size} bytes"),
                    actual: format!("{} bytes", digests.size),
                });
            }
        }
        // Named checks first: when both would fail, the error names the field that was wrong
        // rather than the put's label (a migration passes every field's hashes as `expected`
        // too, only so that they are all computed).
        if let Some(late) = late {
            late.verify(&hashes, &digests)?;
        }
        if let Some(expected) = &options.expected {
            let actual = hashes
                .integrity()
                .ok_or_else(|| Error::InvalidInput("nothing was hashed".into()))?;
            // Strongest first, so the error names the most trusted digest that disagrees.
            let checks: Vec<Integrity> = if options.require_all {
                expected
                    .algorithms()
                    .into_iter()
                    .filter_map(|a| expected.only(a))
                    .collect()
            } else {
                vec![expected.clone()]
            };
            for check in &checks {
                compare(check, &actual, &what)?;
            }
        }
        Ok(digests)
    }
}

/// Fails unless `expected` matches `actual` on their strongest shared algorithm.
pub(super) fn compare(expected: &Integrity, actual: &Integrity, what: &str) -> Result<()> {
    match expected.compare(actual) {
        Comparison::Match(_) => Ok(()),
        Comparison::Mismatch(alg) => Err(Error::IntegrityMismatch {
            what: what.to_string(),
            expected: expected
                .only(alg)
                .map(|i| i.to_string())
                .unwrap_or_default(),
            actual: actual.only(alg).map(|i| i.to_string()).unwrap_or_default(),
        }),
        Comparison::NoCommonAlgorithm => Err(Error::invalid_integrity(
            &expected.to_string(),
            "no algorithm tarvault can check",
        )),
    }
}

#[cfg(all(test, feature = "memory"))]
mod tests {
    use super::*;
    use crate::integrity::{Algorithm, Hash, MultiHasher};
    use crate::ErrorKind;

    fn hashes(data: &[u8]) -> crate::integrity::DigestSet {
        let mut h = MultiHasher::new(&[Algorithm::Md5, Algorithm::Sha1, Algorithm::Sha512]);
        h.update(data);
        h.finalize()
    }

    fn get(set: &crate::integrity::DigestSet, a: Algorithm) -> Hash {
        set.get(a).cloned().unwrap_or_else(|| panic!("{a}"))
    }

    #[test]
    fn versions_are_cleaned_as_npm_publishes_them() {
        assert_eq!(clean_version(" v1.0.0+build.5 "), "1.0.0");
        assert_eq!(clean_version("=1.0.0-rc.1+b"), "1.0.0-rc.1");
        assert_ne!(clean_version("1.0.0-rc.1"), clean_version("1.0.0"));
    }

    #[tokio::test]
    async fn require_all_checks_every_offered_digest() {
        let data = b"tarball bytes";
        let right = hashes(data);
        let wrong = hashes(b"other bytes");
        // A right sha512 beside a wrong sha1 passes ssri-style, but not with require_all.
        let mut offered = Integrity::from(get(&right, Algorithm::Sha512));
        offered.push(get(&wrong, Algorithm::Sha1));
        let store = Store::memory();
        let lax = store
            .put_bytes(&data[..], &PutOptions::expect(offered.clone()))
            .await;
        assert!(lax.is_ok(), "strongest-only matching passes");
        let store = Store::memory();
        let err = store
            .put_bytes(&data[..], &PutOptions::expect(offered).require_all())
            .await
            .expect_err("sha1 disagrees");
        assert_eq!(err.kind(), ErrorKind::IntegrityMismatch);
        assert!(err.to_string().contains("sha1-"), "{err}");
        assert!(!store
            .contains(&Integrity::from(get(&right, Algorithm::Sha512)))
            .await
            .unwrap_or(true));

        // Only the md5 (CouchDB's attachment digest) is wrong.
        let mut offered = Integrity::from(get(&right, Algorithm::Sha512));
        offered.push(get(&right, Algorithm::Sha1));
        offered.push(get(&wrong, Algorithm::Md5));
        let err = store
            .put_bytes(&data[..], &PutOptions::expect(offered).require_all())
            .await
            .expect_err("md5 disagrees");
        assert!(err.to_string().contains("md5-"), "{err}");

        // All right: stored, and md5 was computed in the same pass.
        let mut offered = Integrity::from(get(&right, Algorithm::Md5));
        offered.push(get(&right, Algorithm::Sha1));
        offered.push(get(&right, Algorithm::Sha512));
        let put = store
            .put_bytes(&data[..], &PutOptions::expect(offered).require_all())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(put.stored);
    }
}

/// Refuses a report naming another package than [`PutOptions::expect_package`].
fn check_package(
    report: Option<crate::tarball::Report>,
    options: &PutOptions,
    late: Option<&Expectations>,
    what: &str,
) -> Result<Option<crate::tarball::Report>> {
    let expected = late
        .and_then(|l| l.package.as_ref())
        .or(options.expect_package.as_ref());
    let (Some(r), Some((name, version))) = (&report, expected) else {
        return Ok(report);
    };
    if r.name == *name && clean_version(&r.version) == clean_version(version) {
        return Ok(report);
    }
    Err(Error::PackageMismatch {
        what: what.to_string(),
        expected: format!("{name}@{version}"),
        actual: format!("{}@{}", r.name, r.version),
    })
}

/// A version as npm's `semver.clean` writes it: trimmed, without a leading `v` or `=` (old
/// registries kept such keys) and without `+build` metadata, the prerelease kept. npm publishes a
/// `package.json` version `1.0.0+build.5` as `1.0.0` in the document (libnpmpublish cleans it)
/// while the tarball keeps what was written, so both sides must be cleaned before comparing.
fn clean_version(version: &str) -> &str {
    let v = version.trim().trim_start_matches(['v', '=']);
    v.split_once('+').map_or(v, |(core, _build)| core)
}
