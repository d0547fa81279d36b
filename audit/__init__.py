"""The audit log: append-only, hash-chained, written in the transaction of each change."""
