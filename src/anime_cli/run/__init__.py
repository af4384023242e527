"""A whole run: the converter, the memory budget, two files in flight, shards, the Ray runner. May import: everything below cli/ and serve/."""
