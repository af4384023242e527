"""The style session: a loaded generator run by the strip engine (rgb in, rgb out). May import: errors, options, engine, models, weights."""
