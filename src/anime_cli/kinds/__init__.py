"""Media kinds (photo, video, animation) behind one interface: open, footprint, load, convert. May import: everything below run/."""
