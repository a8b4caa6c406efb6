//! [`Presence`]: what a backend says of a blob where it is kept for good.

use super::BlobStat;

/// What [`Backend::head_of_record`](super::Backend::head_of_record) (and
/// [`freshen`](super::Backend::freshen)) say of a blob where it is kept for good: a put that would
/// write nothing, because the blob is stored, asks it first, and writes the blob unless it is
/// [`Held`](Presence::Held) at the right size. A store kept in several places can find a copy in
/// one and none (or another size) in the next, which is neither a stat nor "not there": that
/// answer has its own variant, so that neither a caller nor a backend outside this crate has to
/// agree with it on a stat no blob could have.
///
/// Non-exhaustive: a caller takes any answer but [`Held`](Presence::Held) as "write it".
// As large as the `Option<BlobStat>` a `head` answers, and passed on as that is: boxing the stat
// would cost every put an allocation to save a copy of a few hundred bytes.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Presence {
    /// Held, as this stat says: one copy, or every replica's at one size. The stat is still only
    /// a `head`'s, which a put checks against the size it expects and the backend's record.
    Held(BlobStat),
    /// Some copy is there, but none can be taken for the blob: a replicated store whose replicas
    /// do not all hold it at one size (one lacks it, or holds a copy cut short or grown). A put
    /// writes the blob everywhere, holding its bytes until its commit (which replaces a copy of
    /// another size, where a create-only upload straight to the key would be refused), and a put
    /// that found the blob stored before it read its input counts it as deleted meanwhile. No
    /// stat comes with it: which copy is whole is not for a `head` to tell.
    Partly,
    /// Not there.
    Missing,
}

impl Presence {
    /// The stat of a blob [`Held`](Presence::Held); `None` for any other answer.
    pub fn held(self) -> Option<BlobStat> {
        match self {
            Presence::Held(stat) => Some(stat),
            _ => None,
        }
    }
}

/// A [`head`](super::Backend::head)'s answer, for a backend that keeps each blob in one place:
/// `Some` is [`Held`](Presence::Held), `None` is [`Missing`](Presence::Missing).
impl From<Option<BlobStat>> for Presence {
    fn from(stat: Option<BlobStat>) -> Self {
        stat.map_or(Presence::Missing, Presence::Held)
    }
}
