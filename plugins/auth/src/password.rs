//! Password hashing: argon2id with configured parameters, computed on the blocking pool
//! behind a semaphore so that a burst of logins cannot starve the async workers that
//! serve sockets. Also verifies the old backend's bcrypt hashes, so they can be migrated.

use std::sync::Arc;

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use confab_sdk::ApiError;
use tokio::sync::Semaphore;

use crate::config::PasswordConfig;

/// The result of checking a password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Mismatch,
    /// The password is right; `rehash` says the stored hash should be replaced with one
    /// made with the current parameters.
    Match {
        rehash: bool,
    },
}

pub struct Hasher {
    argon: Argon2<'static>,
    params: Params,
    permits: Arc<Semaphore>,
    /// The hashing threads' queue; `None` once shut down.
    pool: std::sync::Mutex<Option<std::sync::mpsc::Sender<Job>>>,
    threads: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// A hash of a random password with the current parameters: unknown usernames are
    /// verified against it so they cost as much as a wrong password.
    dummy: String,
}

/// How many hashes may run at once: the configured number, or one per CPU.
pub fn concurrency(configured: usize) -> usize {
    if configured > 0 {
        configured
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

impl Hasher {
    /// Builds the hasher and computes the dummy hash (one hash: tens of milliseconds).
    pub fn new(config: &PasswordConfig) -> Result<Self, String> {
        let a = &config.argon2;
        let params = Params::new(a.memory_kib, a.iterations, a.parallelism, None)
            .map_err(|e| format!("auth.password.argon2: invalid argon2 parameters: {e}"))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let dummy_password = confab_sdk::ids::random_token();
        let dummy = hash_with(&argon, &dummy_password).map_err(|e| format!("auth: cannot hash passwords: {e}"))?;
        let (pool, threads) = start_pool(concurrency(config.hash_concurrency));
        Ok(Hasher {
            argon,
            params,
            permits: Arc::new(Semaphore::new(concurrency(config.hash_concurrency))),
            pool: std::sync::Mutex::new(Some(pool)),
            threads: std::sync::Mutex::new(threads),
            dummy,
        })
    }

    /// Hashes a new password with argon2id and the current parameters.
    pub async fn hash(&self, password: String) -> Result<String, ApiError> {
        let argon = self.argon.clone();
        self.run(move || hash_with(&argon, &password).map_err(ApiError::internal))
            .await?
    }

    /// Checks `password` against `stored`, or against the dummy hash when there is no user
    /// (the verdict is then always a mismatch, after the same work).
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<Verdict, ApiError> {
        let known = stored.is_some();
        let hash = stored.unwrap_or_else(|| self.dummy.clone());
        let params = self.params.clone();
        let verdict = self.run(move || verify_with(&password, &hash, &params)).await?;
        Ok(if known { verdict } else { Verdict::Mismatch })
    }

    /// Whether `hash` was made by anything other than argon2id with the current parameters.
    pub fn needs_rehash(&self, hash: &str) -> bool {
        needs_rehash(hash, &self.params)
    }

    /// Runs CPU-heavy work on the hashing threads once a permit is free. The permit moves
    /// into the job, so it is held until the work ends even if the request is dropped.
    async fn run<T: Send + 'static>(&self, work: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
        let permit = self.permits.clone().acquire_owned().await.map_err(ApiError::internal)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let result = work();
            // Free the slot before waking the caller, so it sees the permit back.
            drop(permit);
            let _ = tx.send(result);
        });
        let sent = match &*self.pool.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(pool) => pool.send(job).map_err(ApiError::internal),
            None => Err(ApiError::unavailable("the server is shutting down")),
        };
        sent?;
        rx.await.map_err(ApiError::internal)
    }

    /// Ends the hashing threads once they have finished the jobs queued (at shutdown).
    pub async fn shutdown(&self) {
        self.pool.lock().unwrap_or_else(|e| e.into_inner()).take();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        let joined = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        });
        let _ = joined.await;
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of threads for hashing. Each argon2 hash allocates `memory_kib` (19 MiB by
/// default); on tokio's blocking pool every new thread keeps its own malloc arena with
/// that much in it, and a burst of logins left the process at hundreds of MiB. A few
/// long-lived threads bound that to `threads x memory_kib`.
fn start_pool(threads: usize) -> (std::sync::mpsc::Sender<Job>, Vec<std::thread::JoinHandle<()>>) {
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    let rx = Arc::new(std::sync::Mutex::new(rx));
    let mut handles = Vec::with_capacity(threads);
    for i in 0..threads {
        let rx = rx.clone();
        let spawned = std::thread::Builder::new().name(format!("argon2-{i}")).spawn(move || {
            loop {
                // The lock is held only to take the next job, not while running it.
                let job = match rx.lock() {
                    Ok(r) => r.recv(),
                    Err(_) => return,
                };
                match job {
                    Ok(job) => job(),
                    Err(_) => return,
                }
            }
        });
        match spawned {
            Ok(h) => handles.push(h),
            Err(e) => tracing::error!(error = %e, "cannot start a password hashing thread"),
        }
    }
    (tx, handles)
}

fn hash_with(argon: &Argon2<'_>, password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(argon.hash_password(password.as_bytes(), &salt)?.to_string())
}

fn is_bcrypt(hash: &str) -> bool {
    ["$2a$", "$2b$", "$2y$"].iter().any(|p| hash.starts_with(p))
}

fn verify_with(password: &str, hash: &str, current: &Params) -> Verdict {
    let ok = if is_bcrypt(hash) {
        // `verify` truncates at 72 bytes like bcryptjs did, so old passwords still match.
        bcrypt::verify(password, hash).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "unreadable bcrypt hash in the user store");
            false
        })
    } else {
        match PasswordHash::new(hash) {
            // The hash names its own algorithm and parameters; verification follows them.
            Ok(parsed) => Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok(),
            Err(e) => {
                tracing::warn!(error = %e, "unreadable password hash in the user store");
                false
            }
        }
    };
    if ok {
        Verdict::Match {
            rehash: needs_rehash(hash, current),
        }
    } else {
        Verdict::Mismatch
    }
}

fn needs_rehash(hash: &str, current: &Params) -> bool {
    let Ok(parsed) = PasswordHash::new(hash) else {
        return true;
    };
    if parsed.algorithm != Algorithm::Argon2id.ident() || parsed.version != Some(Version::V0x13.into()) {
        return true;
    }
    match Params::try_from(&parsed) {
        Ok(p) => {
            p.m_cost() != current.m_cost()
                || p.t_cost() != current.t_cost()
                || p.p_cost() != current.p_cost()
                || p.output_len() != Some(Params::DEFAULT_OUTPUT_LEN)
        }
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Argon2Config;

    /// Cheap parameters keep the tests fast; the logic does not depend on the cost.
    fn config(memory_kib: u32, iterations: u32) -> PasswordConfig {
        PasswordConfig {
            argon2: Argon2Config {
                memory_kib,
                iterations,
                parallelism: 1,
            },
            hash_concurrency: 2,
            ..PasswordConfig::default()
        }
    }

    #[tokio::test]
    async fn hashes_with_argon2id_and_verifies() {
        let h = Hasher::new(&config(64, 1)).unwrap();
        let hash = h.hash("correct horse".into()).await.unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=64,t=1,p=1$"), "{hash}");
        assert_eq!(
            h.verify("correct horse".into(), Some(hash.clone())).await.unwrap(),
            Verdict::Match { rehash: false }
        );
        assert_eq!(
            h.verify("wrong horse".into(), Some(hash.clone())).await.unwrap(),
            Verdict::Mismatch
        );
        assert!(!h.needs_rehash(&hash));
        // Salts are random: the same password hashes differently.
        assert_ne!(hash, h.hash("correct horse".into()).await.unwrap());
    }

    #[tokio::test]
    async fn shutdown_ends_the_threads_after_their_jobs() {
        let h = Arc::new(Hasher::new(&config(64, 1)).unwrap());
        // As many jobs as there are permits: each is sent to the threads once it has one.
        let queued: Vec<_> = (0..2)
            .map(|i| {
                let h = h.clone();
                tokio::spawn(async move { h.hash(format!("pw-{i}")).await })
            })
            .collect();
        // Every job is on a thread or queued before the threads are told to stop (a
        // current-thread runtime: a job takes its permit and is sent in one poll).
        while h.permits.available_permits() > 0 && !queued.iter().all(|t| t.is_finished()) {
            tokio::task::yield_now().await;
        }
        h.shutdown().await;
        assert!(h.threads.lock().unwrap().is_empty(), "every thread was joined");
        for t in queued {
            assert!(t.await.unwrap().is_ok(), "a job taken before shutdown still finishes");
        }
        let refused = h.hash("late".into()).await.unwrap_err();
        assert_eq!(refused.code, confab_sdk::ErrorCode::Unavailable);
    }

    #[tokio::test]
    async fn unknown_users_never_match_even_with_the_dummy_password() {
        let h = Hasher::new(&config(64, 1)).unwrap();
        assert_eq!(h.verify("anything".into(), None).await.unwrap(), Verdict::Mismatch);
        assert!(
            h.dummy.starts_with("$argon2id$v=19$m=64,t=1,p=1$"),
            "the dummy uses the current parameters"
        );
    }

    #[tokio::test]
    async fn older_parameters_and_other_algorithms_ask_for_a_rehash() {
        let old = Hasher::new(&config(64, 1)).unwrap();
        let new = Hasher::new(&config(128, 2)).unwrap();
        let old_hash = old.hash("pw-123456".into()).await.unwrap();
        assert!(new.needs_rehash(&old_hash));
        assert_eq!(
            new.verify("pw-123456".into(), Some(old_hash)).await.unwrap(),
            Verdict::Match { rehash: true }
        );

        let argon2i = Argon2::new(
            Algorithm::Argon2i,
            Version::V0x13,
            Params::new(128, 2, 1, None).unwrap(),
        );
        let i_hash = hash_with(&argon2i, "pw-123456").unwrap();
        assert!(new.needs_rehash(&i_hash));
        assert_eq!(
            new.verify("pw-123456".into(), Some(i_hash)).await.unwrap(),
            Verdict::Match { rehash: true }
        );
        assert!(new.needs_rehash("not a hash"));
    }

    #[tokio::test]
    async fn bcrypt_hashes_of_the_old_backend_verify_and_ask_for_a_rehash() {
        let h = Hasher::new(&config(64, 1)).unwrap();
        let b = bcrypt::hash("legacy-pass", 4).unwrap();
        assert!(b.starts_with("$2b$04$"));
        assert_eq!(
            h.verify("legacy-pass".into(), Some(b.clone())).await.unwrap(),
            Verdict::Match { rehash: true }
        );
        assert_eq!(
            h.verify("legacy-pasz".into(), Some(b.clone())).await.unwrap(),
            Verdict::Mismatch
        );
        // bcryptjs writes `$2a$`; PHP wrote `$2y$`. Same algorithm.
        for prefix in ["$2a$", "$2y$"] {
            let other = format!("{prefix}{}", &b[4..]);
            assert_eq!(
                h.verify("legacy-pass".into(), Some(other)).await.unwrap(),
                Verdict::Match { rehash: true }
            );
        }
    }

    #[tokio::test]
    async fn garbage_hashes_are_mismatches_not_errors() {
        let h = Hasher::new(&config(64, 1)).unwrap();
        for stored in ["", "plain", "$2b$xx", "$argon2id$v=19$broken"] {
            assert_eq!(
                h.verify("pw".into(), Some(stored.into())).await.unwrap(),
                Verdict::Mismatch,
                "{stored}"
            );
        }
    }

    #[tokio::test]
    async fn hashing_is_bounded_by_the_semaphore() {
        let h = Arc::new(
            Hasher::new(&PasswordConfig {
                hash_concurrency: 1,
                ..config(64, 1)
            })
            .unwrap(),
        );
        assert_eq!(h.permits.available_permits(), 1);
        let tasks: Vec<_> = (0..4)
            .map(|i| {
                let h = h.clone();
                tokio::spawn(async move { h.hash(format!("pw-{i}")).await.unwrap() })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(h.permits.available_permits(), 1, "permits are returned");
        assert!(concurrency(0) >= 1);
        assert_eq!(concurrency(3), 3);
    }
}
