//! The artifact-store key rules (`store-keys`, shared by the default
//! stores) as this plugin's `invalid` error.

use crate::crownest::host::types::Error;

pub fn validate(key: &str) -> Result<(), Error> {
    store_keys::validate(key).map_err(Error::Invalid)
}

pub fn validate_sha256(sha: &str) -> Result<(), Error> {
    store_keys::validate_sha256(sha).map_err(Error::Invalid)
}
