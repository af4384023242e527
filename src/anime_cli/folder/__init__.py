"""The output folder: names, atomic files and temporaries, the folder's database and content cache. May import: errors, options, logs."""
