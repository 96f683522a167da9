//! Signed stream URLs: browsers' `EventSource` cannot send an `Authorization` header, so
//! `POST /v1/jobs/{id}/stream-url` returns a URL whose token is signed by the API, valid for one
//! job, one user and a short time.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use ring::hmac;
use uuid::Uuid;

/// Signs and checks stream tokens: `base64url(job ‖ user ‖ expiry) . base64url(HMAC-SHA256)`.
pub struct StreamSigner {
    key: hmac::Key,
}

impl std::fmt::Debug for StreamSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamSigner([REDACTED])")
    }
}

impl StreamSigner {
    /// A signer with `secret`, or a random key when there is none.
    pub fn new(secret: Option<&[u8]>) -> StreamSigner {
        let key = match secret {
            Some(secret) => hmac::Key::new(hmac::HMAC_SHA256, secret),
            None => {
                let mut bytes = [0u8; 32];
                rand::fill(&mut bytes);
                hmac::Key::new(hmac::HMAC_SHA256, &bytes)
            }
        };
        StreamSigner { key }
    }

    /// A token for `user` to open a stream of `job` until `expires`; the stream ends at
    /// `session` (the expiry of the credentials that asked for the token), if any.
    pub fn sign(
        &self,
        job: Uuid,
        user: Uuid,
        expires: DateTime<Utc>,
        session: Option<DateTime<Utc>>,
    ) -> String {
        let mut payload = Vec::with_capacity(48);
        payload.extend_from_slice(job.as_bytes());
        payload.extend_from_slice(user.as_bytes());
        payload.extend_from_slice(&expires.timestamp().to_be_bytes());
        let session = session.map_or(i64::MAX, |s| s.timestamp());
        payload.extend_from_slice(&session.to_be_bytes());
        let tag = hmac::sign(&self.key, &payload);
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(tag.as_ref())
        )
    }

    /// The user a token lets follow `job` and when the stream must end, if the token is
    /// genuine, for `job` and not expired.
    pub fn verify(
        &self,
        token: &str,
        job: Uuid,
        now: DateTime<Utc>,
    ) -> Option<(Uuid, Option<DateTime<Utc>>)> {
        let (payload, tag) = token.split_once('.')?;
        let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        hmac::verify(&self.key, &payload, &tag).ok()?;
        if payload.len() != 48 {
            return None;
        }
        let token_job = Uuid::from_slice(&payload[..16]).ok()?;
        let user = Uuid::from_slice(&payload[16..32]).ok()?;
        let expires = i64::from_be_bytes(payload[32..40].try_into().ok()?);
        let session = i64::from_be_bytes(payload[40..48].try_into().ok()?);
        let session = (session != i64::MAX)
            .then(|| DateTime::from_timestamp(session, 0))
            .flatten();
        (token_job == job && now.timestamp() <= expires).then_some((user, session))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_tokens_are_bound_to_job_key_and_time() {
        let signer = StreamSigner::new(Some(b"k"));
        let (job, user) = (Uuid::new_v4(), Uuid::new_v4());
        let now = Utc::now();
        let session = DateTime::from_timestamp(now.timestamp() + 3600, 0);
        let token = signer.sign(job, user, now + chrono::Duration::seconds(60), session);
        assert_eq!(signer.verify(&token, job, now), Some((user, session)));
        let service = signer.sign(job, user, now + chrono::Duration::seconds(60), None);
        assert_eq!(signer.verify(&service, job, now), Some((user, None)));
        assert_eq!(signer.verify(&token, Uuid::new_v4(), now), None);
        assert_eq!(
            signer.verify(&token, job, now + chrono::Duration::seconds(61)),
            None
        );
        assert_eq!(
            StreamSigner::new(Some(b"other")).verify(&token, job, now),
            None
        );
        let mut forged = token.clone();
        forged.insert(3, 'A');
        assert_eq!(signer.verify(&forged, job, now), None);
    }
}
