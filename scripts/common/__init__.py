"""What the scripts share: the benchmark timer and sizes (benchlib), experiment provenance (record)."""
