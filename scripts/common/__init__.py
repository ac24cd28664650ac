"""What the scripts share: the benchmark timer and sizes (benchlib), experiments' provenance
(record)."""
