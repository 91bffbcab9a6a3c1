//! The words shown to people when something fails (`user_message` in every error body and in
//! failed job records), shared by the HTTP edge and the services so they never drift apart.

/// Shown to people when the fault is ours or transient.
pub const TRY_LATER: &str = "Try again later";
/// Shown to people when their input was wrong.
pub const TRY_AGAIN: &str = "Try again";
/// Shown to people whose credentials were refused.
pub const SIGN_IN_AGAIN: &str = "Sign in again";
