//! Browser tests: the profile page at `/demo/` driven in Debian's headless `chromium` through
//! `chromedriver` (WebDriver) against the real service on loopback.
//!
//! On a developer machine without `chromium` and `chromium-driver` these tests skip with a
//! message; in CI (`CI=true`) a missing browser is a failure. Screenshots land in
//! `target/browser/` for a person to look at.

#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;

mod driver;
mod profile_page;
