"""Data layer: readers/writers (io), hard-negative mining, batching."""
