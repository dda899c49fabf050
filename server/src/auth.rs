//! Bearer-token authentication and role-based authorisation (SPEC §7).
//!
//! Tokens are never stored: the config file and the `tokens` column family hold their SHA-256.
//! A token is `hf_` followed by 43 characters of URL-safe base64 of 32 random bytes.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, RwLock};

use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::ConfigToken;
use crate::error::Error;
use crate::store::Metadata;

pub use crate::records::{parse_token_hash, Role, TokenRecord};

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Ediscovery => "ediscovery",
            Role::EdiscoveryAdmin => "ediscovery_admin",
            Role::RetentionAdmin => "retention_admin",
            Role::Purge => "purge",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }

    /// Every role, in order.
    pub const ALL: [Role; 7] = [
        Role::Ingest,
        Role::Ediscovery,
        Role::EdiscoveryAdmin,
        Role::RetentionAdmin,
        Role::Purge,
        Role::Auditor,
        Role::Admin,
    ];

    /// The role named `name` (as `as_str` writes it).
    pub fn from_name(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == name)
    }
}

/// Where a token is defined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenSource {
    Config,
    Api,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub roles: BTreeSet<Role>,
    pub source: TokenSource,
    pub created_at: Option<DateTime<Utc>>,
    pub created_by: String,
    pub token_sha256: [u8; 32],
}

impl Principal {
    pub fn has_any(&self, roles: &[Role]) -> bool {
        roles.iter().any(|role| self.roles.contains(role))
    }
}

pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

pub fn generate_token() -> String {
    use base64::Engine;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "hf_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// Principal names: 1–128 characters of `[A-Za-z0-9._@-]`.
pub fn validate_principal_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 128 {
        return Err("must be 1-128 characters".into());
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '@' | '-'))
    {
        return Err("may contain only letters, digits and . _ @ -".into());
    }
    // "." and ".." would be path segments wherever the name is part of a URL.
    if !name.chars().any(|c| c.is_ascii_alphanumeric()) {
        return Err("must contain a letter or a digit".into());
    }
    Ok(())
}

/// The principal of a token created through the API.
fn api_principal(hash: [u8; 32], record: TokenRecord) -> Principal {
    Principal {
        name: record.name,
        roles: record.roles,
        source: TokenSource::Api,
        created_at: Some(record.created_at),
        created_by: record.created_by,
        token_sha256: hash,
    }
}

/// Every known token, by hash. Config tokens are fixed; API tokens live in the store.
pub struct TokenRegistry {
    store: Arc<dyn Metadata>,
    tokens: RwLock<HashMap<[u8; 32], Principal>>,
}

impl TokenRegistry {
    pub fn load(store: Arc<dyn Metadata>, config_tokens: &[ConfigToken]) -> Result<Self, Error> {
        let mut tokens = HashMap::new();
        for token in config_tokens {
            validate_principal_name(&token.name).map_err(|reason| Error::InvalidArgument {
                field: format!("tokens[{}].name", token.name),
                reason,
            })?;
            let hash = parse_token_hash(&token.sha256).ok_or_else(|| Error::InvalidArgument {
                field: format!("tokens[{}].sha256", token.name),
                reason: "must be 64 hex digits".into(),
            })?;
            tokens.insert(
                hash,
                Principal {
                    name: token.name.clone(),
                    roles: token.roles.iter().copied().collect(),
                    source: TokenSource::Config,
                    created_at: None,
                    created_by: "config".into(),
                    token_sha256: hash,
                },
            );
        }
        for (hash, record) in store.list_tokens()? {
            tokens.insert(hash, api_principal(hash, record));
        }
        Ok(TokenRegistry {
            store,
            tokens: RwLock::new(tokens),
        })
    }

    /// Reads the API tokens again (config tokens stay): in a cluster, tokens are created and
    /// revoked on any node, and each node refreshes its registry every `TOKEN_REFRESH`.
    pub fn refresh(&self) -> Result<(), Error> {
        let stored = self.store.list_tokens()?;
        let mut tokens = self.tokens.write().unwrap_or_else(|e| e.into_inner());
        tokens.retain(|_, principal| principal.source == TokenSource::Config);
        for (hash, record) in stored {
            tokens.entry(hash).or_insert(api_principal(hash, record));
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }

    /// Looks up the principal of a bearer token.
    pub fn authenticate(&self, token: &str) -> Option<Principal> {
        let hash = hash_token(token);
        self.tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&hash)
            .cloned()
    }

    /// The principal of the token with this hash, if it still exists (a console session keeps
    /// only the hash).
    pub fn by_hash(&self, token_sha256: &[u8; 32]) -> Option<Principal> {
        self.tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token_sha256)
            .cloned()
    }

    /// Whether the token with this hash still exists and holds one of `roles` (a stream
    /// checks this for each message, so that a revoked token stops writing at once).
    pub fn is_current(&self, token_sha256: &[u8; 32], roles: &[Role]) -> bool {
        self.tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(token_sha256)
            .is_some_and(|principal| principal.has_any(roles))
    }

    pub fn list(&self) -> Vec<Principal> {
        let mut principals: Vec<Principal> = self
            .tokens
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect();
        principals.sort_by(|a, b| a.name.cmp(&b.name));
        principals
    }

    /// Creates a token for a new principal; returns the plaintext token (shown once).
    pub fn create_blocking(
        &self,
        name: &str,
        roles: BTreeSet<Role>,
        created_by: &str,
        now: DateTime<Utc>,
    ) -> Result<(String, Principal), Error> {
        validate_principal_name(name).map_err(|reason| Error::InvalidArgument {
            field: "name".into(),
            reason,
        })?;
        if roles.is_empty() {
            return Err(Error::InvalidArgument {
                field: "roles".into(),
                reason: "at least one role is required".into(),
            });
        }
        let mut tokens = self.tokens.write().unwrap_or_else(|e| e.into_inner());
        if tokens.values().any(|principal| principal.name == name) {
            return Err(Error::AlreadyExists(format!(
                "a token named {name:?} already exists"
            )));
        }
        let token = generate_token();
        let hash = hash_token(&token);
        let record = TokenRecord {
            name: name.to_string(),
            roles,
            created_at: now,
            created_by: created_by.to_string(),
        };
        self.store.put_token(hash, &record)?;
        let principal = Principal {
            name: record.name,
            roles: record.roles,
            source: TokenSource::Api,
            created_at: Some(now),
            created_by: record.created_by,
            token_sha256: hash,
        };
        tokens.insert(hash, principal.clone());
        Ok((token, principal))
    }

    pub fn revoke_blocking(&self, name: &str) -> Result<Principal, Error> {
        let mut tokens = self.tokens.write().unwrap_or_else(|e| e.into_inner());
        let Some(principal) = tokens.values().find(|p| p.name == name).cloned() else {
            return Err(Error::NotFound(format!("no token named {name:?}")));
        };
        if principal.source == TokenSource::Config {
            return Err(Error::FailedPrecondition(format!(
                "token {name:?} is defined in the config file; remove it there"
            )));
        }
        self.store.delete_token(principal.token_sha256)?;
        tokens.remove(&principal.token_sha256);
        Ok(principal)
    }
}

/// On the first start of a new data directory with no token anywhere, creates an `admin`
/// token and writes it to `<data_dir>/admin.token` with mode 0600. Returns the file's path
/// when it did. A data directory that already holds a store never gets a token this way:
/// if every token was revoked, an operator adds one to the config file (minting an admin
/// token on restart would let whoever can restart the server, or read its data directory,
/// take over a store whose tokens were deliberately revoked).
pub fn bootstrap_admin_token(
    registry: &TokenRegistry,
    data_dir: &Path,
    data_dir_is_new: bool,
    now: DateTime<Utc>,
) -> Result<Option<std::path::PathBuf>, Error> {
    if !registry.is_empty() || !data_dir_is_new {
        return Ok(None);
    }
    let path = data_dir.join("admin.token");
    let (token, _) =
        registry.create_blocking("admin", BTreeSet::from([Role::Admin]), "bootstrap", now)?;
    write_private_file(&path, format!("{token}\n").as_bytes())
        .map_err(|error| Error::Internal(format!("cannot write {}: {error}", path.display())))?;
    Ok(Some(path))
}

fn write_private_file(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(contents)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_tokens_are_distinct_and_well_formed() {
        let a = generate_token();
        let b = generate_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 3 + 43);
        assert!(a.starts_with("hf_"));
        assert!(a[3..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }

    #[test]
    fn principal_names_are_checked() {
        assert!(validate_principal_name("backend-1@contoso.com").is_ok());
        assert!(validate_principal_name("").is_err());
        assert!(validate_principal_name("a b").is_err());
        assert!(validate_principal_name(&"a".repeat(129)).is_err());
    }

    #[test]
    fn an_admin_token_is_minted_only_for_a_new_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn crate::store::Store> =
            Arc::new(crate::store::RocksStore::open(&dir.path().join("store")).unwrap());
        let registry = TokenRegistry::load(store.clone(), &[]).unwrap();
        // Every token revoked, then a restart: nothing is minted.
        assert_eq!(
            bootstrap_admin_token(&registry, dir.path(), false, Utc::now()).unwrap(),
            None
        );
        assert!(registry.is_empty());
        assert!(!dir.path().join("admin.token").exists());
        // A new data directory gets one.
        let path = bootstrap_admin_token(&registry, dir.path(), true, Utc::now())
            .unwrap()
            .unwrap();
        let token = std::fs::read_to_string(path).unwrap();
        let principal = registry.authenticate(token.trim()).unwrap();
        assert!(registry.is_current(&principal.token_sha256, &[Role::Admin]));
        assert!(!registry.is_current(&principal.token_sha256, &[Role::Ingest]));
        registry.revoke_blocking("admin").unwrap();
        assert!(!registry.is_current(&principal.token_sha256, &[Role::Admin]));
    }

    #[test]
    fn token_hashes_parse_from_hex() {
        let hash = hash_token("hf_x");
        assert_eq!(parse_token_hash(&hex::encode(hash)), Some(hash));
        assert_eq!(parse_token_hash("xyz"), None);
    }
}
