"""Records, the two logs, stage timings, peak RSS and the progress bar. May import: errors, options."""
