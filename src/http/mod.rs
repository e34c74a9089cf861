//! HTTP: operational endpoints (`/metrics`, `/healthz`, `/readyz`) now; the API and dashboard later.

pub mod ops;
