//! The hot path of each request: checking a bearer key against the snapshot, and the
//! rate limits of keys and client addresses.

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use super::{Auth, CLASS_NAMES, client_key};
use crate::auth::{AuthError, Credential, Principal, RateLimited, Scope, keys};
use crate::store::unix_now;

impl Auth {
    /// Checks a bearer key: the hot path (no store access, no lock).
    ///
    /// # Errors
    /// Malformed, unknown, wrong secret, expired, revoked, owner deleted or disabled.
    pub fn authenticate_key(&self, key: &str) -> Result<Principal, AuthError> {
        let parsed = keys::parse(key).ok_or(AuthError::MalformedHeader)?;
        let snapshot = self.snapshot.load();
        let entry = snapshot
            .keys
            .get(&parsed.id)
            .ok_or(AuthError::BadCredentials)?;
        if !keys::mac_matches(&entry.mac, &keys::mac(&self.secret, parsed.secret)) {
            return Err(AuthError::BadCredentials);
        }
        if entry.revoked_at.is_some() {
            return Err(AuthError::KeyRevoked);
        }
        if entry.expires_at.is_some_and(|at| at <= unix_now()) {
            return Err(AuthError::KeyExpired);
        }
        let owner = snapshot
            .users
            .get(&entry.user_id)
            .ok_or(AuthError::BadCredentials)?;
        if owner.disabled {
            return Err(AuthError::BadCredentials);
        }
        Ok(Principal {
            user_id: entry.user_id,
            username: owner.username.clone(),
            role: owner.role,
            scopes: entry.scopes.intersect(owner.role.scopes()),
            credential: Credential::Key { key_id: parsed.id },
        })
    }

    /// Takes a token from the key's bucket and counts the request in its usage.
    ///
    /// # Errors
    /// The key's bucket is empty.
    pub fn admit_key(
        &self,
        key_id: u64,
        class: Option<Scope>,
        addr: Option<IpAddr>,
    ) -> Result<(), RateLimited> {
        let snapshot = self.snapshot.load();
        let Some(entry) = snapshot.keys.get(&key_id) else {
            return Ok(());
        };
        if let Err(limited) = entry.bucket.check() {
            self.metrics
                .rate_limited
                .get_or_create(&crate::telemetry::metrics::LimiterLabels { limiter: "key" })
                .inc();
            return Err(limited);
        }
        let class_index = class.map_or(Scope::ALL.len(), Scope::class);
        entry.usage.by_class[class_index].fetch_add(1, Ordering::Relaxed);
        entry
            .usage
            .last_used_at
            .store(unix_now(), Ordering::Relaxed);
        if let Some(addr) = addr {
            *entry.usage.last_addr.lock().expect("poisoned") = Some(addr);
        }
        entry.usage.counters[class_index]
            .get_or_init(|| {
                self.metrics
                    .key_requests
                    .get_or_create(&crate::telemetry::metrics::KeyClassLabels {
                        key_id: keys::format_id(key_id),
                        class: CLASS_NAMES[class_index],
                    })
                    .clone()
            })
            .inc();
        Ok(())
    }

    /// Takes a token from the client address's bucket (requests without a key).
    ///
    /// # Errors
    /// The address's bucket is empty.
    pub fn admit_address(&self, addr: IpAddr) -> Result<(), RateLimited> {
        self.addresses
            .check(self.client_key(addr))
            .inspect_err(|_| {
                self.metrics
                    .rate_limited
                    .get_or_create(&crate::telemetry::metrics::LimiterLabels { limiter: "address" })
                    .inc();
            })
    }

    /// The key a client address is counted under: an IPv4 address (IPv4-mapped IPv6
    /// included) as itself, an IPv6 address reduced to its `ipv6_prefix` leading bits.
    #[must_use]
    pub fn client_key(&self, addr: IpAddr) -> IpAddr {
        client_key(addr, self.config.ipv6_prefix)
    }
}
