"""What comes in: discover files, sniff and probe headers (no pixel), decode reduced, metadata. May import: errors, options, logs, folder (the temporary pattern)."""
