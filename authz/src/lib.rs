//! esm-authz: the Envoy `ext_authz` server and its Rego policy engine.
//!
//! Empty until the ext_authz issue lands; kept as a workspace member so the layout in
//! DESIGN.md holds from the first commit and `src/` can depend on it without churn.
