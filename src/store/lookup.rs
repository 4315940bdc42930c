//! The outcome of a read.

use super::record::Record;

#[derive(Debug, Clone)]
pub enum Lookup {
    Hit(Record),
    Miss,
    /// There was an entry but it had expired; it has been deleted.
    Expired,
}
