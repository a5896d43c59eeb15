//! Meeting providers. (Skeleton.)

#[async_trait::async_trait]
pub trait MeetingProvider: Send + Sync + 'static {}
