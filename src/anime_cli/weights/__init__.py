"""Weight files: the catalog (manifest, search folders, sha256), install and download. May import: errors, options, folder, models."""
