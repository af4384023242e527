"""Face detection (MTCNN) and face2paint. May import: errors, options, logs, inputs, weights."""
