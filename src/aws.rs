//! The one way this gateway configures an AWS SDK client (Chime for meetings, SNS for text messages), so both
//! follow the same rules: the standard AWS environment (keys, session tokens, profiles, `AWS_ENDPOINT_URL…`),
//! a region chain that never asks the EC2 instance metadata service (an offline clinic must not try to reach
//! it), and every call bounded by the SDK's standard retry and explicit timeouts.

use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use std::time::Duration;

/// How one service's client reaches AWS.
pub struct ClientSettings<'a> {
    /// The service's own region setting; unset: `AWS_REGION` / `AWS_DEFAULT_REGION` / the profile's, else
    /// us-east-1.
    pub region: Option<&'a str>,
    /// An endpoint to use instead of the SDK's resolution (tests); the standard `AWS_ENDPOINT_URL…` variables
    /// work without it.
    pub endpoint_url: Option<&'a str>,
    /// Static credentials instead of the SDK's default chain (tests): access key id, secret, session token.
    pub credentials: Option<&'a (String, String, Option<String>)>,
    /// Tries per call, the first included.
    pub max_attempts: u32,
    /// One try's limit (connecting included).
    pub attempt_timeout: Duration,
    /// The whole call's limit, retries included.
    pub call_timeout: Duration,
}

/// Loads the shared SDK configuration. Nothing is contacted; credentials are resolved on the first call.
pub async fn sdk_config(s: &ClientSettings<'_>) -> SdkConfig {
    let region = RegionProviderChain::first_try(s.region.map(|r| Region::new(r.to_owned())))
        .or_else(aws_config::environment::EnvironmentVariableRegionProvider::new())
        .or_else(aws_config::profile::ProfileFileRegionProvider::new())
        .or_else(Region::from_static("us-east-1"));
    let retry = RetryConfig::standard()
        .with_max_attempts(s.max_attempts)
        .with_initial_backoff(Duration::from_millis(100))
        .with_max_backoff(Duration::from_secs(1));
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(s.attempt_timeout)
        .operation_attempt_timeout(s.attempt_timeout)
        .operation_timeout(s.call_timeout)
        .build();
    let mut loader =
        aws_config::defaults(BehaviorVersion::latest()).region(region).retry_config(retry).timeout_config(timeouts);
    if let Some(url) = s.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    if let Some((id, secret, token)) = s.credentials {
        let creds = aws_credential_types::Credentials::new(id, secret, token.clone(), None, "telehealth-config");
        loader = loader.credentials_provider(creds);
    }
    loader.load().await
}
