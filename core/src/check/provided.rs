//! Secrets a repository provides without a plain Secret manifest (filled in by a helper).
