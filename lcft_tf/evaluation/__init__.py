"""User-weighted AUC, per-user breakdowns, reports and figures."""
