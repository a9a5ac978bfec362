"""The record store: consults, reports, indexes and the audit trail, kept for years."""
