"""Data: readers of on-disk layouts, the patch protocol, synthetic boards and samplers."""
