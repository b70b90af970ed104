//! A connection's timings and limits.

/// Timings and limits of one connection (PROTOCOL §1–§4), in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionConfig {
    /// Time allowed from the upgrade to a completed `auth` or `resume` \[5000\].
    pub auth_timeout_ms: u64,
    /// Interval of the server's WebSocket pings \[25000\].
    pub heartbeat_ms: u64,
    /// A connection that sends nothing for this long is closed \[60000\].
    pub idle_timeout_ms: u64,
    /// Longest lead of the `expiring` notice \[60000\].
    pub refresh_notice_ms: u64,
    /// Clock leeway; a session lives until `exp` plus this \[30000\].
    pub leeway_ms: u64,
    /// Largest message accepted, in bytes \[65536\].
    pub max_message_bytes: usize,
    /// Deepest nesting of arrays and objects accepted in a message's `data`
    /// \[64\]; deeper is `BAD_REQUEST`, as any malformed message.
    pub max_json_depth: usize,
    /// Sustained data frames per second \[100\].
    pub rate_per_sec: u32,
    /// Burst of data frames \[200\].
    pub rate_burst: u32,
    /// Sustained frames per second of any kind (control frames and
    /// continuation frames included) \[1000\].
    pub frame_rate_per_sec: u32,
    /// Burst of frames of any kind \[2000\].
    pub frame_burst: u32,
    /// Requests a client may pipeline while one is being answered \[64\]; more is
    /// `RATE_LIMITED`.
    pub max_queued_requests: usize,
    /// Channels one session may join at once \[256\]; a join over it is refused with
    /// a non-fatal `FORBIDDEN`.
    pub max_channels: usize,
    /// Application calls (`rpc`) one session may have in flight \[16\]; one more is
    /// refused with a non-fatal `BUSY`.
    pub max_rpc_in_flight: usize,
    /// Time an application call may take before it is answered `UNAVAILABLE` \[5000\].
    pub rpc_timeout_ms: u64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            auth_timeout_ms: 5_000,
            heartbeat_ms: 25_000,
            idle_timeout_ms: 60_000,
            refresh_notice_ms: 60_000,
            leeway_ms: 30_000,
            max_message_bytes: 64 * 1024,
            max_json_depth: crate::protocol::MAX_JSON_DEPTH,
            rate_per_sec: 100,
            rate_burst: 200,
            frame_rate_per_sec: 1_000,
            frame_burst: 2_000,
            max_queued_requests: 64,
            max_channels: 256,
            max_rpc_in_flight: 16,
            rpc_timeout_ms: 5_000,
        }
    }
}
